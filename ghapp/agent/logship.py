"""Ships an attempt's readable log lines to the shared store in batches, for /logs on any node."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)
Ship = Callable[[int, int, str], Awaitable[object]]  # task id, attempt, lines ("\n"-ended)
INTERVAL_S = 1.0
BATCH_CHARS = 64 << 10


class LogShipper:
    """Buffers lines and ships them INTERVAL_S after the first (sooner when a batch fills).

    One batch is on its way at a time, so lines arrive in order. No task outlives the work:
    a timer fires once per batch. While the store is slow or down the buffer keeps only the
    newest `keep` characters, as the store would; a failed batch is logged once and dropped
    (the local file has every line), and the agent goes on.
    """

    def __init__(self, ship: Ship, task_id: int, attempt: int, keep: int) -> None:
        self._ship, self._task_id, self._attempt, self._keep = ship, task_id, attempt, keep
        self._lines: deque[str] = deque()
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._sending: asyncio.Task[None] | None = None
        self.failed = False

    def add(self, lines: list[str]) -> None:
        """Queue readable lines; the oldest queued ones go past the cap."""
        for line in lines:
            self._lines.append(line + "\n")
            self._size += len(line) + 1
        while self._size > self._keep and len(self._lines) > 1:
            self._size -= len(self._lines.popleft())
        if self._size >= BATCH_CHARS:
            self._send()
        else:
            self._arm()

    async def close(self) -> None:
        """Ship what is left, so the end of the attempt is readable too."""
        if self._sending is not None:
            await self._sending
        self._disarm()
        if self._lines:
            await self._ship_batch(self._take())
            self._disarm()

    def _arm(self) -> None:
        if self._lines and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(INTERVAL_S, self._send)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _send(self) -> None:
        """Start shipping the buffer, unless a batch is on its way (it re-arms when done)."""
        self._disarm()
        if self._lines and (self._sending is None or self._sending.done()):
            self._sending = asyncio.create_task(self._ship_batch(self._take()))

    def _take(self) -> str:
        text = "".join(self._lines)
        self._lines.clear()
        self._size = 0
        return text

    async def _ship_batch(self, text: str) -> None:
        try:
            await self._ship(self._task_id, self._attempt, text)
        except Exception as exc:  # the store is down: the local file still has every line
            if not self.failed:
                log.warning("task %s: cannot store log lines: %s", self._task_id, exc)
            self.failed = True
        self._arm()
