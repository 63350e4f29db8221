"""ghapp's side of the delivery writer (writer.py): group commit through one child, batches
answered in the order sent, a new child after one dies, so a lost child costs no delivery that
was answered."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import ghapp
from ghapp.github.signature import Verdict
from ghapp.store.sqlite.writer import (
    COUNT,
    OK,
    WriteRow,
    encode_batch,
    encode_row,
    encode_secret,
)

PIPE_BYTES = 1 << 20  # a batch of 14-28 KB bodies goes into the pipe in one write
STOP_S = 10.0  # the child finishes its batch and exits on end of input; then it is killed
DEPTH = 2  # batches in the child at once: it holds the next while answers to one go out
ROOT = str(Path(ghapp.__file__).resolve().parent.parent)  # where the child finds ghapp
# Not `-m ghapp.store.sqlite.writer`: its package imports it first, and runpy warns.
CHILD_MAIN = "import sys; from ghapp.store.sqlite.writer import main; sys.exit(main(sys.argv[1:]))"


@dataclass
class _Batch:
    """Deliveries sent together (as the child reads them), and their callers."""

    data: bytes
    callers: list[asyncio.Future[Verdict]]
    tries: int = 0  # sent to this many children: a batch goes to a second one, not a third

    def answer(self, status: bytes, body: bytes) -> None:
        """Each delivery's Verdict, or the child's error for all of them."""
        if status != OK:
            self.fail(sqlite3.OperationalError(body.decode(errors="replace")))
        elif len(body) != len(self.callers):
            self.fail(sqlite3.OperationalError(f"{len(body)} answers for {len(self.callers)}"))
        else:
            for caller, verdict in zip(self.callers, body, strict=True):
                if not caller.done():
                    caller.set_result(Verdict(verdict))

    def fail(self, error: BaseException) -> None:
        _fail(self.callers, error)


def _fail(callers: Iterable[asyncio.Future[Verdict]], error: BaseException) -> None:
    for caller in callers:
        if not caller.done():  # a caller may have been cancelled
            caller.set_exception(error)


class _Child(asyncio.SubprocessProtocol):
    """One writer process: batches go to its stdin, answers come back in the same order.

    Answers are parsed in the pipe's callback and set the callers' results there, so they
    wake one loop turn after the answer lands (each task in between cost a turn, a
    millisecond or more under load).
    """

    def __init__(self, answered: Callable[[], None]) -> None:
        self.waiting: collections.deque[_Batch] = collections.deque()
        self._answered = answered
        self._buffer = bytearray()
        self.gone: BaseException | None = None
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
        return self.gone is None and self.process.get_returncode() is None

    def send(self, batch: _Batch) -> None:
        """Queue a batch behind the ones it holds (the answers come in this order)."""
        batch.tries += 1
        self.waiting.append(batch)
        self.stdin.write(batch.data)

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        assert isinstance(data, bytes)
        self._buffer += data
        head = 1 + COUNT.size
        while len(self._buffer) >= head:
            end = head + COUNT.unpack_from(self._buffer, 1)[0]
            if len(self._buffer) < end:
                return
            status, body = bytes(self._buffer[:1]), bytes(self._buffer[head:end])
            del self._buffer[:end]
            if not self.waiting:
                self.end(OSError("the delivery writer answered a batch it was not sent"))
                return
            self.waiting.popleft().answer(status, body)
            self._answered()

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self.end(exc or EOFError("the delivery writer closed its output"))

    def process_exited(self) -> None:
        self.end(EOFError(f"the delivery writer exited ({self.process.get_returncode()})"))
        if not self._exited.done():
            self._exited.set_result(None)

    def end(self, why: BaseException) -> None:
        """No more batches (the unanswered ones stay in `waiting`); the process is killed."""
        if self.gone is None:
            self.gone = why
            self._answered()  # the writer sends them again on a new child
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
    """Group commit through the child: deliveries read in the same loop turn share a batch,
    and up to DEPTH batches are in the child at once."""

    def __init__(self, path: str, secret: str) -> None:
        self._path = path
        self._secret = secret  # WEBHOOK_SECRET: the child checks signatures
        self._child: _Child | None = None
        self._queued: list[tuple[bytes, asyncio.Future[Verdict]]] = []  # rows encoded
        self._flush_soon = False
        self._reviving: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Start the child (after ghapp created the schema: it writes into it)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (ROOT, env.get("PYTHONPATH"))))
        _, child = await asyncio.get_running_loop().subprocess_exec(
            lambda: _Child(self._flush),
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
        child.stdin.write(encode_secret(self._secret))
        self._child = child

    async def add(self, row: WriteRow) -> Verdict:
        """What became of the delivery; raises sqlite3.Error when it was not stored.

        A child that dies is replaced and its unanswered batches sent again, once: what it
        committed before dying reads as duplicate (stored), the rest is stored now.
        """
        if self._closed or self._child is None:
            raise sqlite3.OperationalError("the delivery writer is not running")
        data = encode_row(row)  # here: a row that cannot be encoded fails its caller alone
        caller: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._queued.append((data, caller))
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)
        return await caller

    def _flush(self) -> None:
        """Send what is queued, or a dead child's batches to a new one (a plain callback)."""
        self._flush_soon = False
        child = self._child
        if child is None or self._closed:
            return
        if not child.alive:
            if self._reviving is None:
                self._reviving = asyncio.create_task(self._revive(child))
            return
        if self._queued and len(child.waiting) < DEPTH:
            rows, callers = zip(*self._queued, strict=True)
            self._queued = []
            child.send(_Batch(encode_batch(rows), list(callers)))

    async def _revive(self, dead: _Child) -> None:
        """A new child; the dead one's unanswered batches go to it first, once."""
        try:
            dead.process.close()  # its pipes
            lost = [batch for batch in dead.waiting if batch.tries == 1]
            stopped = sqlite3.OperationalError(f"the delivery writer stopped: {dead.gone}")
            for batch in dead.waiting:
                if batch.tries > 1:
                    batch.fail(stopped)
            dead.waiting.clear()
            try:
                await self.start()
            except Exception as exc:  # whatever stops a start, the callers must hear of it
                error = sqlite3.OperationalError(f"the delivery writer did not start: {exc}")
                _fail((caller for batch in lost for caller in batch.callers), error)
                self._fail_queued(error)
                return
            assert self._child is not None
            for batch in lost:
                self._child.send(batch)
        finally:
            self._reviving = None
        self._flush()

    def _fail_queued(self, error: BaseException) -> None:
        _fail((caller for _, caller in self._queued), error)
        self._queued = []

    async def close(self) -> None:
        """Stop the child after it answered what it holds; safe to call twice."""
        self._closed = True
        if self._reviving is not None:
            await self._reviving
        self._fail_queued(sqlite3.OperationalError("the delivery writer is closed"))
        child, self._child = self._child, None
        if child is not None:
            await child.close()
            for batch in child.waiting:
                batch.fail(sqlite3.OperationalError("the delivery writer stopped"))
