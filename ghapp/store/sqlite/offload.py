"""ghapp's side of the delivery writer (writer.py): one child, batches answered in the order
sent, a new child after one dies, so a lost child costs no delivery that was answered."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import os
import sqlite3
import subprocess
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


class _Child(asyncio.SubprocessProtocol):
    """One writer process: batches go to its stdin, answers come back in the same order.

    Answers are parsed in the pipe's callback, so a batch's callers wake one loop turn after
    its answer lands (a reader task would add a turn, about a millisecond under load).
    """

    def __init__(self) -> None:
        self._waiting: collections.deque[asyncio.Future[Reply]] = collections.deque()
        self._buffer = bytearray()
        self._gone: BaseException | None = None
        self._exited = asyncio.get_running_loop().create_future()
        self._process: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self._process = transport

    @property
    def process(self) -> asyncio.SubprocessTransport:
        assert self._process is not None
        return self._process

    @property
    def stdin(self) -> asyncio.WriteTransport:
        pipe = self.process.get_pipe_transport(0)
        assert isinstance(pipe, asyncio.WriteTransport)
        return pipe

    @property
    def alive(self) -> bool:
        return self._gone is None and self.process.get_returncode() is None

    def send(self, batch: bytes) -> asyncio.Future[Reply]:
        """Queue a batch (no await between the write and the queue: the order is theirs)."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        if self._gone is not None:
            future.set_exception(WriterGone(repr(self._gone)))
            return future
        self._waiting.append(future)
        self.stdin.write(batch)
        return future

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        assert isinstance(data, bytes)
        self._buffer += data
        head = 1 + COUNT.size
        while len(self._buffer) >= head:
            end = head + COUNT.unpack_from(self._buffer, 1)[0]
            if len(self._buffer) < end:
                return
            reply = (bytes(self._buffer[:1]), bytes(self._buffer[head:end]))
            del self._buffer[:end]
            if not self._waiting:
                self.end(OSError("the delivery writer answered a batch it was not sent"))
                return
            future = self._waiting.popleft()
            if not future.done():
                future.set_result(reply)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self.end(exc or EOFError("the delivery writer closed its output"))

    def process_exited(self) -> None:
        self.end(EOFError(f"the delivery writer exited ({self.process.get_returncode()})"))
        if not self._exited.done():
            self._exited.set_result(None)

    def end(self, why: BaseException) -> None:
        """No more batches: every one not answered fails, the process is killed."""
        if self._gone is None:
            self._gone = why
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(WriterGone(repr(why)))
        if self.process.get_returncode() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    async def close(self) -> None:
        """End its input; it answers what it holds and exits (else it is killed)."""
        self.stdin.close()
        try:
            async with asyncio.timeout(STOP_S):
                await asyncio.shield(self._exited)
        except TimeoutError:
            self.end(TimeoutError("the delivery writer did not stop"))
            await self._exited
        self.process.close()


class WriterProcess:
    """Sends batches to the child; several may wait for their answers at once."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._child: _Child | None = None
        self._starting = asyncio.Lock()

    async def start(self) -> _Child:
        """The running child, started if none is (after ghapp created the schema)."""
        async with self._starting:
            if self._child is not None:
                if self._child.alive:
                    return self._child
                self._child.process.close()  # its pipes; it is dead or being killed
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, (ROOT, env.get("PYTHONPATH"))))
            _, child = await asyncio.get_running_loop().subprocess_exec(
                _Child,
                sys.executable,
                "-c",
                CHILD_MAIN,
                self._path,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,
                env=env,
            )
            with contextlib.suppress(OSError):  # a smaller pipe only costs more wake-ups
                pipe = child.stdin.get_extra_info("pipe")
                fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            self._child = child
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
