"""Cluster signals over PostgreSQL: LISTEN for work and cancels, and a leader election.

Each runs on its own connection (not the pool's), reconnects after the database goes
away, and never fails ghapp's start: the polled paths (runner poll, cancel poll) keep
working without them, only slower.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from ghapp.store.dialect import CANCEL_CHANNEL, QUEUE_CHANNEL

log = logging.getLogger(__name__)
Errors = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class _Session:
    """A dedicated connection kept open by a background loop; subclasses say what it does."""

    name = "session"

    def __init__(self, dsn: str, *, retry_s: float = 5.0, check_s: float = 5.0) -> None:
        self.dsn, self.retry_s, self.check_s = dsn, retry_s, check_s
        self._loop: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect in the background."""
        self._loop = asyncio.create_task(self._run(), name=f"ghapp-{self.name}")

    async def stop(self) -> None:
        """Stop the loop; its clean-up closes the connection."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop

    async def _run(self) -> None:
        while True:
            try:
                conn = await asyncpg.connect(self.dsn, timeout=self.check_s)
            except Errors as exc:
                log.warning("%s: database unreachable (%s); retrying", self.name, exc)
                await asyncio.sleep(self.retry_s)
                continue
            try:
                await self._use(conn)
            except Errors as exc:
                log.warning("%s: connection lost (%s); reconnecting", self.name, exc)
            except Exception:
                log.exception("%s: failed; starting over", self.name)
            finally:
                await self._after(conn)
                with contextlib.suppress(*Errors):
                    await asyncio.wait_for(conn.close(), 2)
                if not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(self.retry_s)

    async def _use(self, conn: asyncpg.Connection[asyncpg.Record]) -> None:
        raise NotImplementedError

    async def _after(self, conn: asyncpg.Connection[asyncpg.Record]) -> None:
        """Undo what _use set up; runs on every way out, cancellation included."""

    async def _alive(self, conn: asyncpg.Connection[asyncpg.Record]) -> None:
        """Return only when the connection fails a check (a half-open socket is found too)."""
        while True:
            await asyncio.sleep(self.check_s)
            await conn.fetchval("SELECT 1", timeout=self.check_s)


class PgListener(_Session):
    """Wakes the runner when work is queued and stops a task when its cancel is asked."""

    name = "pg-listener"

    def __init__(
        self, dsn: str, on_queue: Callable[[], None], on_cancel: Callable[[int], object]
    ) -> None:
        super().__init__(dsn)
        self.on_queue, self.on_cancel = on_queue, on_cancel

    def _heard(self, _conn: Any, _pid: int, channel: str, payload: object) -> None:
        if channel == CANCEL_CHANNEL and isinstance(payload, str) and payload.isdigit():
            self.on_cancel(int(payload))
        else:
            self.on_queue()

    async def _use(self, conn: asyncpg.Connection[asyncpg.Record]) -> None:
        await conn.add_listener(QUEUE_CHANNEL, self._heard)
        await conn.add_listener(CANCEL_CHANNEL, self._heard)
        self.on_queue()  # whatever was announced while we were not listening
        await self._alive(conn)


class PgLeader(_Session):
    """Holds a session advisory lock while it lives: exactly one process of the cluster leads.

    The others try again every retry_s; when the leader dies, PostgreSQL ends its session
    and frees the lock, and the next try wins.
    """

    name = "pg-leader"

    def __init__(
        self,
        dsn: str,
        key: int,
        on_elected: Callable[[], Awaitable[None]],
        on_deposed: Callable[[], Awaitable[None]],
        *,
        retry_s: float = 5.0,
        check_s: float = 5.0,
    ) -> None:
        super().__init__(dsn, retry_s=retry_s, check_s=check_s)
        self.key, self.on_elected, self.on_deposed = key, on_elected, on_deposed
        self.leader = False

    async def _use(self, conn: asyncpg.Connection[asyncpg.Record]) -> None:
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key):
            await asyncio.sleep(self.retry_s)
            await conn.fetchval("SELECT 1", timeout=self.check_s)
        self.leader = True
        log.info("%s: this process leads", self.name)
        await self.on_elected()
        await self._alive(conn)

    async def _after(self, conn: asyncpg.Connection[asyncpg.Record]) -> None:
        """Step down before the lock is released, so two leaders never overlap here."""
        if self.leader:
            self.leader = False
            log.info("%s: stepping down", self.name)
            try:
                await self.on_deposed()
            except Exception:
                log.exception("%s: stepping down failed", self.name)
