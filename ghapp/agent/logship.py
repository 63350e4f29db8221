"""Ships an attempt's readable log lines to the shared store in batches, for /logs on any node."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)
Ship = Callable[[int, int, str], Awaitable[object]]  # task id, attempt, lines ("\n"-ended)
INTERVAL_S = 1.0
BATCH_CHARS = 64 << 10


class LogShipper:
    """Buffers lines and ships them every INTERVAL_S (sooner when a batch fills); never blocks.

    While the store is slow or down the buffer keeps only the newest `keep` characters, as
    the store would; a failed batch is logged once and dropped, and the agent goes on.
    """

    def __init__(self, ship: Ship, task_id: int, attempt: int, keep: int) -> None:
        self._ship, self._task_id, self._attempt, self._keep = ship, task_id, attempt, keep
        self._lines: deque[str] = deque()
        self._size = 0
        self._full = asyncio.Event()
        self._closing = False
        self._loop: asyncio.Task[None] | None = None
        self.failed = False

    def add(self, lines: list[str]) -> None:
        """Queue readable lines; the oldest queued ones go past the cap."""
        for line in lines:
            self._lines.append(line + "\n")
            self._size += len(line) + 1
        while self._size > self._keep and len(self._lines) > 1:
            self._size -= len(self._lines.popleft())
        if self._size >= BATCH_CHARS:
            self._full.set()

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Ship what is left and stop, so the end of the attempt is readable too."""
        self._closing = True
        self._full.set()
        if self._loop is not None:
            await self._loop
        else:
            await self._flush()

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), INTERVAL_S)
            await self._flush()
        await self._flush()

    async def _flush(self) -> None:
        self._full.clear()
        if not self._lines:
            return
        text = "".join(self._lines)
        self._lines.clear()
        self._size = 0
        try:
            await self._ship(self._task_id, self._attempt, text)
        except Exception as exc:  # the store is down: the local file still has every line
            if not self.failed:
                log.warning("task %s: cannot store log lines: %s", self._task_id, exc)
            self.failed = True
