"""TaskStore on SQLite (aiosqlite): WAL, one connection, every change one BEGIN IMMEDIATE.

Only connection handling and value conversion live here; the store's logic is
ghapp/store/lifecycle.py and ghapp/store/records.py.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import aiosqlite

from ghapp.github.signature import Verdict
from ghapp.store.batch import Batcher
from ghapp.store.dialect import DeliveryItem, MarkItem
from ghapp.store.lifecycle import LifecycleStore
from ghapp.store.rows import Row, body_sha256
from ghapp.store.sqlite import schema
from ghapp.store.sqlite.offload import WriterProcess
from ghapp.store.sqlite.writer import begin_immediate, in_transaction, insert

SqlValue = str | int | float | bytes | None
T = TypeVar("T")


def dt_to_db(moment: datetime) -> str:
    """Fixed-width ISO-8601 UTC text, so text order is time order; naive times are bugs."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: the store only accepts aware times")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def to_db(value: object) -> SqlValue:
    """One Python value as SQLite stores it: bools 0/1, enums by value, times as text."""
    if isinstance(value, Enum):
        value = value.value
    if value is None or isinstance(value, str | bytes):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, datetime):
        return dt_to_db(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, os.PathLike):
        return str(os.fspath(value))
    raise TypeError(f"cannot store {type(value).__name__} value {value!r}")


@functools.lru_cache(maxsize=512)
def _placeholders(sql: str) -> str:
    """$1 (PostgreSQL's numbered placeholder) as ?1 (SQLite's)."""
    return re.sub(r"\$(\d+)", r"?\1", sql)


def _params(args: Iterable[object]) -> tuple[SqlValue, ...]:
    return tuple(to_db(arg) for arg in args)


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


def _mark(batch: Sequence[MarkItem], conn: sqlite3.Connection) -> list[None]:
    """Each handled delivery's outcome (a small row: its body is elsewhere)."""
    conn.executemany(_MARK, [_params(item) for item in batch])
    return [None] * len(batch)


_MARK = "UPDATE deliveries SET processed_at = ?2, error = ?3 WHERE id = ?1"


class _Conn:
    """The dialect's Conn over the one aiosqlite connection."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def rows(self, sql: str, *args: object) -> list[Row]:
        found = await self._db.execute_fetchall(_placeholders(sql), _params(args))
        return cast(list[Row], list(found))  # dicts: the row factory is _dict_row

    async def row(self, sql: str, *args: object) -> Row | None:
        found = await self.rows(sql, *args)
        return found[0] if found else None

    async def value(self, sql: str, *args: object) -> Any:
        found = await self.rows(sql, *args)
        return next(iter(found[0].values())) if found else None

    async def run(self, sql: str, *args: object) -> int:
        cursor = await self._db.execute(_placeholders(sql), _params(args))
        return cursor.rowcount

    async def run_many(self, sql: str, args: Iterable[Sequence[object]]) -> None:
        await self._db.executemany(_placeholders(sql), [_params(one) for one in args])


class SqliteTaskStore(LifecycleStore):
    """The TaskStore of one SQLite file; safe across connections and processes."""

    CONFLICT = (sqlite3.IntegrityError,)

    def __init__(self, path: str | Path, intake_secret: str | None = None) -> None:
        """`intake_secret`: WEBHOOK_SECRET, for the web role: a child process then checks and
        writes deliveries, beside the event loop, not under its GIL (see `receive`)."""
        self._path = str(path)
        self._writer = None if intake_secret is None else WriterProcess(self._path, intake_secret)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._adds = Batcher(self._insert_deliveries)  # without the child
        self._marks = Batcher(self._mark_deliveries)

    @property
    def has_writer(self) -> bool:
        """Whether a child process checks and writes deliveries (`receive`)."""
        return self._writer is not None

    async def migrate(self) -> None:
        """Open the connection (once) and bring the schema up to date."""
        if self._db is None:
            if self._path != ":memory:":
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(
                self._path, isolation_level=None, timeout=schema.BUSY_TIMEOUT_MS / 1000
            )
            db.row_factory = _dict_row  # type: ignore[assignment]  # sqlite3 takes any callable
            try:
                for pragma in schema.PRAGMAS:
                    await db.execute(pragma)
                # Schema step 6 hashes the bodies stored before it, in SQL.
                await db.create_function("sha256", 1, body_sha256, deterministic=True)
            except BaseException:
                await db.close()
                raise
            self._db = db
        async with self._locked(write=True) as db:
            await schema.apply_migrations(db)
        if self._writer is not None:
            await self._writer.start()  # after the schema: it writes into it

    async def close(self) -> None:
        """Close the connection; safe to call twice."""
        if self._writer is not None:
            await self._writer.close()
        db, self._db = self._db, None
        if db is not None:
            async with self._lock:
                await db.close()

    async def ping(self) -> bool:
        """True when the database answers a query (health checks)."""
        try:
            async with self._read() as conn:
                return bool(await conn.value("SELECT 1") == 1)
        except (RuntimeError, sqlite3.Error):
            return False

    @asynccontextmanager
    async def _locked(
        self, write: bool = False, snapshot: bool = False
    ) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, for this process's callers one at a time; BEGIN IMMEDIATE orders
        writers of other processes, a plain BEGIN gives reads one snapshot."""
        if self._db is None:
            raise RuntimeError("SqliteTaskStore is not open: await migrate() first")
        db = self._db
        async with self._lock:
            if db.in_transaction:  # a cancelled caller may have left one open
                await db.execute("ROLLBACK")
            if not (write or snapshot):
                yield db
                return
            if write:  # the lock asked for as intake's writer asks (not SQLite's backoff)
                await db._execute(begin_immediate, db._conn)  # type: ignore[no-untyped-call]
            else:
                await db.execute("BEGIN")
            try:
                yield db
                await db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    await db.execute("ROLLBACK")
                raise

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[_Conn]:
        async with self._locked(write=True) as db:
            yield _Conn(db)

    @asynccontextmanager
    async def _read(self, snapshot: bool = False) -> AsyncIterator[_Conn]:
        async with self._locked(snapshot=snapshot) as db:
            yield _Conn(db)

    async def _group(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Writes of several callers in one transaction and one hop to the thread."""
        async with self._lock:
            if self._db is None:
                raise RuntimeError("SqliteTaskStore is not open: await migrate() first")
            db = self._db
            run = db._execute  # one hop into aiosqlite's thread for the batch
            done: T = await run(in_transaction, db._conn, work)  # type: ignore[no-untyped-call]
        return done

    async def add_delivery(
        self, delivery_id: str, event: str, body: bytes, received_at: datetime
    ) -> bool:
        """As Records' (stored once, grouped with others), through the child where there is one."""
        if self._writer is not None:
            row = (delivery_id, event, dt_to_db(received_at), None, body)
            return await self._writer.add(row) is Verdict.NEW
        return await super().add_delivery(delivery_id, event, body, received_at)

    async def receive(
        self, delivery_id: str, event: str, body: bytes, received_at: datetime, header: str | None
    ) -> Verdict:
        """A webhook checked (signature, shape) and stored in one trip to the writer process, so
        the event loop hashes no body; a web role's Receive."""
        if self._writer is None:
            raise RuntimeError("SqliteTaskStore has no intake_secret: it receives no webhooks")
        if not header or not header.isascii():  # nothing the child could match
            return Verdict.UNSIGNED
        return await self._writer.add((delivery_id, event, dt_to_db(received_at), header, body))

    async def _insert_deliveries(self, batch: Sequence[DeliveryItem]) -> list[bool]:
        rows = [(id_, event, dt_to_db(at), None, body) for id_, event, body, at in batch]
        verdicts = await self._group(functools.partial(insert, rows))
        return [verdict is Verdict.NEW for verdict in verdicts]

    async def _mark_deliveries(self, batch: Sequence[MarkItem]) -> list[None]:
        return await self._group(functools.partial(_mark, batch))


if TYPE_CHECKING:  # mypy proves the adapter satisfies the port
    from ghapp.core.ports import TaskStore

    _PORT: type[TaskStore] = SqliteTaskStore
