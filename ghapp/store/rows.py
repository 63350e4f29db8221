"""Row <-> value mapping for the SQLite store, and the transition values both stores write."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sqlite3
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from typing import Any

import aiosqlite

from ghapp.core.model import (
    Delivery,
    LedgerEntry,
    NewTask,
    Task,
    TaskSource,
    TaskState,
)

SqlValue = str | int | float | bytes | None

TASK_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Task))
_DATETIMES = frozenset(
    {"created_at", "started_at", "finished_at", "updated_at", "lease_expires_at", "triggered_at"}
)
NO_LEASE: dict[str, object] = {"lease_owner": None, "lease_expires_at": None}
_BOOLS = frozenset({"is_pull_request", "cancel_requested"})

Params = Iterable[SqlValue]


async def one_row(db: aiosqlite.Connection, sql: str, params: Params = ()) -> sqlite3.Row | None:
    """First row of a query, if any (one trip to the database thread)."""
    found = await all_rows(db, sql, params)
    return found[0] if found else None


async def all_rows(db: aiosqlite.Connection, sql: str, params: Params = ()) -> list[sqlite3.Row]:
    """Every row of a query (one trip to the database thread)."""
    return list(await db.execute_fetchall(sql, tuple(params)))


async def sum_of(db: aiosqlite.Connection, sql: str, params: Params = ()) -> float:
    """A SUM query as a float (0 for no rows)."""
    row = await one_row(db, sql, params)
    return float(row[0]) if row is not None and row[0] is not None else 0.0


def dt_to_db(moment: datetime) -> str:
    """Fixed-width ISO-8601 UTC text, so text order is time order; naive times are bugs."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: the store only accepts aware times")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def dt_from_db(text: str | None) -> datetime | None:
    """Aware UTC datetime back from stored text."""
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


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
        return os.fspath(value)  # type: ignore[no-any-return]
    raise TypeError(f"cannot store {type(value).__name__} value {value!r}")


def new_task_values(new: NewTask, now: datetime) -> dict[str, SqlValue]:
    """Column values of a freshly queued first attempt."""
    values: dict[str, object] = {f.name: getattr(new, f.name) for f in dataclasses.fields(new)}
    values.update(state=TaskState.QUEUED, attempt=1, created_at=now, updated_at=now)
    return {name: to_db(value) for name, value in values.items()}


def lease_until(now: datetime, lease_s: float) -> datetime:
    """When a lease taken or renewed now runs out."""
    return now + timedelta(seconds=lease_s)


def started(task: Task, now: datetime, node: str, lease_s: float) -> dict[str, object]:
    """What claiming writes: running, the task's whole cap reserved, leased to `node`."""
    return {
        "state": TaskState.RUNNING,
        "started_at": now,
        "reserved_usd": task.budget_usd,
        "wait_reason": None,
        "cancel_requested": False,
        "updated_at": now,
        "lease_owner": node,
        "lease_expires_at": lease_until(now, lease_s),
    }


def finished(state: TaskState, now: datetime, total_cost_usd: float) -> dict[str, object]:
    """What ending an attempt writes: the terminal state, the cost, no reservation."""
    return {
        "state": state,
        "finished_at": now,
        "reserved_usd": 0.0,
        "cost_usd": total_cost_usd,
        "updated_at": now,
        **NO_LEASE,
    }


def cancelled(now: datetime, reason: str) -> dict[str, object]:
    """What cancelling a queued task writes."""
    return {
        "state": TaskState.CANCELLED,
        "finished_at": now,
        "failure_reason": reason,
        "wait_reason": None,
        "reserved_usd": 0.0,
        "updated_at": now,
        **NO_LEASE,
    }


def requeued(attempt: int, now: datetime) -> dict[str, object]:
    """What putting a task back in the queue as a new attempt writes (a fresh crash count)."""
    return {
        "state": TaskState.QUEUED,
        "attempt": attempt,
        "crashes": 0,
        "failure_reason": None,
        "wait_reason": None,
        "started_at": None,
        "finished_at": None,
        "cancel_requested": False,
        "reserved_usd": 0.0,
        "updated_at": now,
        **NO_LEASE,
    }


def task_from_row(row: sqlite3.Row) -> Task:
    """A Task from a tasks row, restoring enums, bools and aware datetimes."""
    values: dict[str, Any] = {}
    for name in TASK_COLUMNS:
        value = row[name]
        if name in _DATETIMES:
            value = dt_from_db(value)
        elif name in _BOOLS:
            value = bool(value)
        elif name == "state":
            value = TaskState(value)
        elif name == "source":
            value = TaskSource(value)
        values[name] = value
    return Task(**values)


def body_sha256(body: bytes) -> bytes:
    """What a delivery is deduplicated on besides its id: GitHub signs only the body."""
    return hashlib.sha256(body).digest()


def delivery_from_row(row: sqlite3.Row) -> Delivery:
    """A Delivery from a deliveries row."""
    received = dt_from_db(row["received_at"])
    assert received is not None
    return Delivery(
        id=row["id"],
        event=row["event"],
        body=bytes(row["body"]),
        received_at=received,
        processed_at=dt_from_db(row["processed_at"]),
        error=row["error"],
    )


def ledger_from_row(row: sqlite3.Row) -> LedgerEntry:
    """A LedgerEntry from a ledger row."""
    return LedgerEntry(
        day=date.fromisoformat(row["day"]),
        task_id=row["task_id"],
        attempt=row["attempt"],
        cost_usd=row["cost_usd"],
    )
