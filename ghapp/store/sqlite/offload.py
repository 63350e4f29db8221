"""ghapp's side of the delivery writer (writer.py): one child, batches answered in the order
sent, a new child after one dies, so a lost child costs no delivery that was answered."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

import ghapp
from ghapp.store.sqlite.writer import COUNT, OK, WriteRow, encode_batch

PIPE_BYTES = 1 << 20  # a batch of 14-28 KB bodies goes into the pipe in one write
STOP_S = 10.0  # the child finishes its batch and exits on end of input; then it is killed
ROOT = str(Path(ghapp.__file__).resolve().parent.parent)  # where the child finds ghapp
# Not `-m ghapp.store.sqlite.writer`: its package imports it first, and runpy warns.
CHILD_MAIN = "import sys; from ghapp.store.sqlite.writer import main; sys.exit(main(sys.argv[1:]))"
Reply = tuple[bytes, bytes]  # the status byte, then the flags or the error


class WriterGone(Exception):
    """The child ended before it answered a batch."""


class _Child:
    """One writer process: batches go to its stdin, answers come back in the same order."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self._stdin = proc.stdin
        self._stdout = proc.stdout
        self._waiting: collections.deque[asyncio.Future[Reply]] = collections.deque()
        self._gone: BaseException | None = None
        self._reader = asyncio.create_task(self._read_answers())

    @property
    def alive(self) -> bool:
        return self._gone is None and self.proc.returncode is None

    def send(self, batch: bytes) -> asyncio.Future[Reply]:
        """Queue a batch (no await between the write and the queue: the order is theirs)."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        if self._gone is not None:
            future.set_exception(WriterGone(repr(self._gone)))
            return future
        self._waiting.append(future)
        self._stdin.write(batch)
        return future

    async def _read_answers(self) -> None:
        try:
            while True:
                head = await self._stdout.readexactly(1 + COUNT.size)
                body = await self._stdout.readexactly(COUNT.unpack(head[1:])[0])
                future = self._waiting.popleft()
                if not future.done():
                    future.set_result((head[:1], body))
        except (OSError, asyncio.IncompleteReadError, IndexError) as exc:
            self.end(exc)

    def end(self, why: BaseException) -> None:
        """No more batches: every one not answered fails, the process is killed."""
        if self._gone is None:
            self._gone = why
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(WriterGone(repr(why)))
        if self.proc.returncode is None:
            self.proc.kill()

    async def close(self) -> None:
        """End its input; it answers what it holds and exits (else it is killed)."""
        self._stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), STOP_S)
        except TimeoutError:
            self.end(TimeoutError("the delivery writer did not stop"))
            await self.proc.wait()
        await self._reader


class WriterProcess:
    """Sends batches to the child; several may wait for their answers at once."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._child: _Child | None = None
        self._starting = asyncio.Lock()

    async def start(self) -> _Child:
        """The running child, started if none is (after ghapp created the schema)."""
        async with self._starting:
            if self._child is not None and self._child.alive:
                return self._child
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, (ROOT, env.get("PYTHONPATH"))))
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                CHILD_MAIN,
                self._path,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
            assert proc.stdin is not None
            with contextlib.suppress(OSError):  # a smaller pipe only costs more wake-ups
                pipe = proc.stdin.transport.get_extra_info("pipe")
                fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            self._child = _Child(proc)
            return self._child

    async def write(self, rows: Sequence[WriteRow]) -> list[bool]:
        """Whether each delivery was new; raises sqlite3.Error when the batch was not stored.

        A child that dies is replaced and the batch sent again: what it committed before
        dying reads as duplicate (stored), the rest is stored now.
        """
        batch = encode_batch(rows)
        for attempt in (1, 2):
            child = await self.start()
            try:
                status, body = await child.send(batch)
                break
            except WriterGone as exc:
                if attempt == 2:
                    raise sqlite3.OperationalError(f"the delivery writer stopped: {exc}") from exc
        if status != OK:
            raise sqlite3.OperationalError(body.decode(errors="replace"))
        return [bool(flag) for flag in body]

    async def close(self) -> None:
        """Stop the child; safe to call twice."""
        child, self._child = self._child, None
        if child is not None:
            await child.close()
