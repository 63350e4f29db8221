"""Rows back to values, for both dialects: SQLite hands back text and 0/1, PostgreSQL types."""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

import lz4.frame

from ghapp.core.model import Delivery, LedgerEntry, Project, Task, TaskSource, TaskState

Row = Mapping[str, Any]

LZ4_FRAME = b"\x04\x22\x4d\x18"  # an LZ4 frame's first four bytes (its magic number)
TASK_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Task))


def _columns_of(kind: type) -> frozenset[str]:
    """The Task fields declared as `kind` (or `kind | None`): one column list, from the model."""
    hints = typing.get_type_hints(Task)
    found = set()
    for name in TASK_COLUMNS:
        hint = hints[name]
        members = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        if kind in members:
            found.add(name)
    return frozenset(found)


TIME_COLUMNS = _columns_of(datetime)
BOOL_COLUMNS = _columns_of(bool)


def dt_from_db(value: datetime | str | None) -> datetime | None:
    """An aware UTC datetime from a stored one (PostgreSQL) or its ISO text (SQLite)."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def task_from_row(row: Row) -> Task:
    """A Task from a tasks row, restoring enums, bools and aware datetimes."""
    values: dict[str, Any] = {}
    for name in TASK_COLUMNS:
        value = row[name]
        if name in TIME_COLUMNS:
            value = dt_from_db(value)
        elif name in BOOL_COLUMNS:
            value = bool(value)
        values[name] = value
    values["state"] = TaskState(values["state"])
    values["source"] = TaskSource(values["source"])
    return Task(**values)


def delivery_from_row(row: Row) -> Delivery:
    """A Delivery from a deliveries row."""
    received = dt_from_db(row["received_at"])
    assert received is not None
    return Delivery(
        id=row["id"],
        event=row["event"],
        body=unpack_body(row["body"]),
        received_at=received,
        processed_at=dt_from_db(row["processed_at"]),
        error=row["error"],
    )


def ledger_from_row(row: Row) -> LedgerEntry:
    """A LedgerEntry from a ledger row."""
    day = row["day"]
    return LedgerEntry(
        day=date.fromisoformat(day) if isinstance(day, str) else day,
        task_id=row["task_id"],
        attempt=row["attempt"],
        cost_usd=float(row["cost_usd"]),
    )


def project_from_row(row: Row) -> Project:
    """A Project from a projects row."""
    return Project(row["slug"], row["repo"], row["installation_id"], bool(row["is_default"]))


def pack_body(body: bytes) -> bytes:
    """A body as SQLite keeps it: an LZ4 frame, a fifth of GitHub's JSON, so each delivery
    writes about 4 KB instead of 19 KB to the WAL, and again to the database."""
    packed: bytes = lz4.frame.compress(body)
    return packed


def unpack_body(stored: bytes | None) -> bytes:
    """The body as GitHub sent it: from an LZ4 frame, else as stored (PostgreSQL, older rows;
    a JSON object never starts with the frame's magic number)."""
    if not stored:
        return b""
    if bytes(stored[:4]) == LZ4_FRAME:
        body: bytes = lz4.frame.decompress(stored)
        return body
    return bytes(stored)


def body_sha256(body: bytes) -> bytes:
    """What a delivery is deduplicated on besides its id: GitHub signs only the body."""
    return hashlib.sha256(body).digest()
