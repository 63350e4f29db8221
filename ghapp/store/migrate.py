"""Moving over: copy a SQLite store into PostgreSQL in one transaction, then check the counts.

Run with ghapp stopped. The target gets the current schema first; it must be empty unless
`replace` is given, which empties it. Ids are kept, so task numbers, ledger rows and PR
links stay the same; the id sequences continue after the highest copied id.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from ghapp.store import rows
from ghapp.store.postgres import PostgresTaskStore
from ghapp.store.sqlite import SqliteTaskStore

CHUNK = 500
_TIMES = rows.TIME_COLUMNS | {
    "received_at",
    "processed_at",
    "claimed_until",
    "booked_at",
    "claimed_at",
}
_BOOLS = rows.BOOL_COLUMNS | {"is_default"}


@dataclass(frozen=True)
class Table:
    """One table to copy: its columns in order, and how the source is read."""

    name: str
    columns: tuple[str, ...]
    order: str
    sequence: str | None = None  # identity column whose sequence must continue

    def convert(self, row: sqlite3.Row) -> tuple[Any, ...]:
        """One SQLite row as PostgreSQL values: aware times, real booleans, dates."""
        out: list[Any] = []
        for name in self.columns:
            value = row[name]
            if name in _TIMES:
                value = rows.dt_from_db(value)
            elif name in _BOOLS:
                value = bool(value)
            elif name == "day":
                value = date.fromisoformat(value)
            out.append(value)
        return tuple(out)


TABLES = (
    Table("installations", ("id", "account"), "id"),
    Table("installation_repos", ("installation_id", "repo"), "installation_id, repo"),
    Table("projects", ("slug", "repo", "installation_id", "is_default"), "slug"),
    Table("tasks", rows.TASK_COLUMNS, "id", sequence="id"),
    Table("chat_threads", ("chat", "task_id", "ref", "claimed_at"), "chat, task_id"),
    Table("task_logs", ("task_id", "attempt", "text"), "task_id"),
    Table(
        "deliveries",
        (
            "seq",
            "id",
            "event",
            "received_at",
            "processed_at",
            "error",
            "claimed_by",
            "claimed_until",
            "body_sha256",
        ),
        "seq",
        sequence="seq",  # the bodies' key: copied as it is
    ),
    Table("delivery_bodies", ("seq", "body"), "seq"),
    Table(
        "ledger", ("id", "day", "task_id", "attempt", "cost_usd", "booked_at"), "id", sequence="id"
    ),
)


class MigrationError(RuntimeError):
    """The copy was refused or did not check out; the target is left as it was."""


def _chunks(path: Path, table: Table) -> Generator[list[tuple[Any, ...]]]:
    """Rows of one source table, converted, a chunk at a time (bodies can be large)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    try:
        cursor = conn.execute(f"SELECT * FROM {table.name} ORDER BY {table.order}")
        while batch := cursor.fetchmany(CHUNK):
            yield [table.convert(row) for row in batch]
    finally:
        conn.close()


def _source_counts(path: Path) -> dict[str, tuple[int, float]]:
    """Rows per table, and the ledger's total, to check the copy against."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        counts = {}
        for table in TABLES:
            counts[table.name] = (
                conn.execute(f"SELECT COUNT(*) FROM {table.name}").fetchone()[0],
                0.0,
            )
        total = conn.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM ledger").fetchone()[0]
        counts["ledger"] = (counts["ledger"][0], float(total))
        return counts
    finally:
        conn.close()


async def copy_store(
    source: Path,
    target_dsn: str,
    *,
    replace: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, int]:
    """Copy every table of the SQLite store at `source` into `target_dsn`; rows per table."""
    if not await asyncio.to_thread(source.is_file):
        raise MigrationError(f"no SQLite store at {source}")
    upgraded = SqliteTaskStore(source)  # the current schema, as starting ghapp would do
    try:
        await upgraded.migrate()
    finally:
        await upgraded.close()
    expected = await asyncio.to_thread(_source_counts, source)
    target = PostgresTaskStore(target_dsn, max_connections=2)
    try:
        await target.migrate()
        async with target._tx() as tx:
            conn = tx.raw
            present = await conn.fetchval(
                "SELECT (SELECT COUNT(*) FROM tasks) + (SELECT COUNT(*) FROM deliveries) "
                "+ (SELECT COUNT(*) FROM ledger) + (SELECT COUNT(*) FROM installations) "
                "+ (SELECT COUNT(*) FROM projects)"
            )
            if present and not replace:
                raise MigrationError(
                    f"the target already holds {present} rows; pass --replace to empty it first"
                )
            names = ", ".join(t.name for t in TABLES)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
            copied: dict[str, int] = {}
            for table in TABLES:
                copied[table.name] = 0
                chunks = _chunks(source, table)
                try:
                    while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                        await conn.copy_records_to_table(
                            table.name, records=chunk, columns=list(table.columns)
                        )
                        copied[table.name] += len(chunk)
                finally:
                    chunks.close()
                if table.sequence is not None:
                    await conn.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', "
                        f"'{table.sequence}'), COALESCE(MAX({table.sequence}), 0) + 1, false) "
                        f"FROM {table.name}"
                    )
            for table in TABLES:
                count = int(await conn.fetchval(f"SELECT COUNT(*) FROM {table.name}"))
                want = expected[table.name][0]
                say(f"{table.name:>18}: {want:>8} in SQLite, {count:>8} in PostgreSQL")
                if count != want or copied[table.name] != want:
                    raise MigrationError(f"{table.name}: copied {count} rows of {want}")
            total = float(await conn.fetchval("SELECT COALESCE(SUM(cost_usd), 0) FROM ledger"))
            if abs(total - expected["ledger"][1]) > 1e-6:
                raise MigrationError(f"ledger total ${total:.6f} != ${expected['ledger'][1]:.6f}")
            say(f"{'ledger total':>18}: ${total:.2f} in both")
    finally:
        await target.close()
    return copied
