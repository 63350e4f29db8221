"""TaskStore on PostgreSQL (asyncpg), for several ghapp processes on several machines.

Claims are serialised by a transaction-scoped advisory lock (budget and branch checks see
every earlier claim) and take rows with FOR UPDATE SKIP LOCKED; deliveries are deduped by
their primary key; changes that matter to other nodes are announced with NOTIFY. Only
connection handling and these pieces live here; the store's logic is
ghapp/store/lifecycle.py and ghapp/store/records.py.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

import asyncpg

from ghapp.store.batch import Batcher
from ghapp.store.dialect import Conn, DeliveryItem, MarkItem
from ghapp.store.lifecycle import LifecycleStore
from ghapp.store.postgres import schema
from ghapp.store.rows import Row


def pg_value(value: object) -> object:
    """One Python value as asyncpg sends it: enums by value, paths as text, aware times only."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime) and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"naive datetime {value!r}: the store only accepts aware times")
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _changed(status: str) -> int:
    """Rows an INSERT, UPDATE or DELETE touched, from its command tag."""
    return int(status.rsplit(" ", 1)[-1])


class _Conn:
    """The dialect's Conn over one pooled asyncpg connection."""

    def __init__(self, conn: schema.Conn) -> None:
        self.raw = conn

    async def rows(self, sql: str, *args: object) -> list[Row]:
        return [dict(r) for r in await self.raw.fetch(sql, *map(pg_value, args))]

    async def row(self, sql: str, *args: object) -> Row | None:
        found = await self.raw.fetchrow(sql, *map(pg_value, args))
        return None if found is None else dict(found)

    async def value(self, sql: str, *args: object) -> Any:
        return await self.raw.fetchval(sql, *map(pg_value, args))

    async def run(self, sql: str, *args: object) -> int:
        return _changed(await self.raw.execute(sql, *map(pg_value, args)))

    async def run_many(self, sql: str, args: Iterable[Sequence[object]]) -> None:
        await self.raw.executemany(sql, [tuple(map(pg_value, one)) for one in args])


class PostgresTaskStore(LifecycleStore):
    """The TaskStore of one PostgreSQL database, shared by any number of ghapp processes."""

    FOLD = "lower"  # repo names are compared in any case (GitHub's are case-blind)
    CONFLICT = (asyncpg.UniqueViolationError,)

    def __init__(self, dsn: str, *, max_connections: int = 10, notify: bool = True) -> None:
        self.dsn = dsn
        self._max = max_connections
        self._notify = notify
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._adds = Batcher(self._insert_deliveries)
        self._marks = Batcher(self._mark_deliveries)

    async def migrate(self) -> None:
        """Open the pool (once) and bring the schema up to date."""
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=self._max, command_timeout=60
            )
        async with self._tx() as conn:
            await schema.apply_migrations(conn.raw)

    async def close(self) -> None:
        """Close the pool; safe to call twice."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def ping(self) -> bool:
        """True when the database answers a query (health checks)."""
        try:
            async with self._conn() as conn:
                return bool(await conn.fetchval("SELECT 1", timeout=5) == 1)
        except (RuntimeError, OSError, TimeoutError, asyncpg.PostgresError):
            return False

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[schema.Conn]:
        """A pooled connection; a clear error when migrate() was never awaited."""
        if self._pool is None:
            raise RuntimeError("PostgresTaskStore is not open: await migrate() first")
        async with self._pool.acquire() as conn:
            yield conn

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[_Conn]:
        async with self._conn() as conn, conn.transaction():
            yield _Conn(conn)

    @asynccontextmanager
    async def _read(self, snapshot: bool = False) -> AsyncIterator[_Conn]:
        async with self._conn() as conn:
            if not snapshot:
                yield _Conn(conn)
                return
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                yield _Conn(conn)

    def _locking(self, of: str = "", skip: bool = False) -> str:
        return " FOR UPDATE" + (f" OF {of}" if of else "") + (" SKIP LOCKED" if skip else "")

    async def _serialize_claims(self, conn: Conn) -> None:
        await conn.value("SELECT pg_advisory_xact_lock($1)", schema.CLAIM_LOCK)

    async def _announce(self, conn: Conn, channel: str, payload: str = "") -> None:
        if self._notify:
            await conn.value("SELECT pg_notify($1, $2)", channel, payload)

    async def _insert_deliveries(self, batch: Sequence[DeliveryItem]) -> list[bool]:
        """One INSERT for a batch; True for the first occurrence of each id it stored.

        A row whose id or body hash is taken (by the table or earlier in the batch) is skipped.
        """
        columns = list(zip(*((i, e, b, pg_value(r)) for i, e, b, r in batch), strict=True))
        async with self._conn() as conn:
            found = await conn.fetch(
                "WITH d AS (SELECT id, event, body, received_at, sha256(body) AS hash "
                "  FROM unnest($1::text[], $2::text[], $3::bytea[], $4::timestamptz[]) "
                "  AS u(id, event, body, received_at)), "
                "new AS (INSERT INTO deliveries (id, event, received_at, body_sha256) "
                "  SELECT id, event, received_at, hash FROM d "
                "  ON CONFLICT DO NOTHING RETURNING id, seq, body_sha256), "
                "bodies AS (INSERT INTO delivery_bodies (seq, body) "
                "  SELECT DISTINCT ON (d.id) new.seq, d.body FROM d JOIN new "
                "  ON new.id = d.id AND new.body_sha256 = d.hash) "
                "SELECT id FROM new",
                *columns,
            )
        fresh = {row["id"] for row in found}
        results = []
        for delivery_id, *_ in batch:
            results.append(delivery_id in fresh)
            fresh.discard(delivery_id)
        return results

    async def _mark_deliveries(self, batch: Sequence[MarkItem]) -> list[None]:
        """One UPDATE for a batch of marks."""
        columns = list(zip(*((i, pg_value(at), e) for i, at, e in batch), strict=True))
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE deliveries AS d SET processed_at = u.at, error = u.error "
                "FROM unnest($1::text[], $2::timestamptz[], $3::text[]) AS u(id, at, error) "
                "WHERE d.id = u.id",
                *columns,
            )
        return [None] * len(batch)


if TYPE_CHECKING:  # mypy proves the adapter satisfies the port
    from ghapp.core.ports import TaskStore

    _PORT: type[TaskStore] = PostgresTaskStore
