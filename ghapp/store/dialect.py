"""What a SQL backend gives the shared store: a connection in a transaction, and the few
places where SQLite and PostgreSQL write a statement differently.

Statements are written once, with PostgreSQL's `$1` placeholders; a dialect's `Conn`
translates them (SQLite: `?1`) and converts values both ways at its edge.

A new store method goes into records.py (or lifecycle.py, for tasks) once: `async with
self._tx() as conn` for writes, `self._read()` for reads, SQL both dialects accept (upserts
with ON CONFLICT, RETURNING, COALESCE). Where they cannot share a statement, compute in
Python inside the transaction (lock rows with `self._locking()`), or add one piece here that
each dialect fills in. A table is a schema step in sqlite/schema.py and postgres/schema.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from ghapp.core.model import GhappError
from ghapp.store.batch import Batcher
from ghapp.store.rows import Row

# What the store announces to other nodes when it commits (PostgreSQL NOTIFY channels):
# new work for the runners, and a cancel for whichever node runs the task.
QUEUE_CHANNEL = "ghapp_queue"
CANCEL_CHANNEL = "ghapp_cancel"

DeliveryItem = tuple[str, str, bytes, datetime]  # id, event, body, received_at
MarkItem = tuple[str, datetime, str | None]  # id, processed_at, error


def steps_after(version: int, migrations: Sequence[Sequence[str]]) -> list[str]:
    """The statements that bring a schema at `version` up to date; a newer one is refused."""
    if version > len(migrations):
        raise GhappError(
            f"DATABASE_URL: the database is at schema version {version}, newer than this "
            f"ghapp's ({len(migrations)}): a newer ghapp upgraded it. Run that version, or "
            "restore the backup taken before the upgrade (docs/operations.md)"
        )
    return [statement for step in migrations[version:] for statement in step]


class Conn(Protocol):
    """One connection, inside the transaction the caller opened."""

    async def rows(self, sql: str, *args: object) -> list[Row]:
        """Every row of a query."""
        ...

    async def row(self, sql: str, *args: object) -> Row | None:
        """The first row of a query, if any."""
        ...

    async def value(self, sql: str, *args: object) -> Any:
        """The first column of the first row, or None."""
        ...

    async def run(self, sql: str, *args: object) -> int:
        """Run a statement; how many rows it changed."""
        ...

    async def run_many(self, sql: str, args: Iterable[Sequence[object]]) -> None:
        """Run one statement once per parameter row."""
        ...


class Dialect(ABC):
    """Connection handling and the statement pieces a backend writes its own way."""

    FOLD = ""  # wraps repo names in comparisons: "lower" where the column is not case-blind
    CONFLICT: tuple[type[Exception], ...] = ()  # what a unique index violation raises

    _adds: Batcher[DeliveryItem, bool]  # group commit of add_delivery
    _marks: Batcher[MarkItem, None]  # group commit of mark_delivery

    @abstractmethod
    def _tx(self) -> AbstractAsyncContextManager[Conn]:
        """One all-or-nothing write transaction."""

    @abstractmethod
    def _read(self, snapshot: bool = False) -> AbstractAsyncContextManager[Conn]:
        """A connection for reads; with `snapshot`, its queries see one moment."""

    def _locking(self, of: str = "", skip: bool = False) -> str:
        """The row-locking tail of a SELECT (none where a transaction locks the whole file)."""
        return ""

    async def _serialize_claims(self, conn: Conn) -> None:
        """Make claims take turns, so budget and branch checks see every earlier claim."""
        return None

    async def _announce(self, conn: Conn, channel: str, payload: str = "") -> None:
        """Tell other nodes, once the caller's transaction commits (a single node: no-op)."""
        return None
