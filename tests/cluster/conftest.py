"""Stores for the cluster tests: the same behaviour is checked on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from ghapp.core.ports import TaskStore
from ghapp.store.postgres import PostgresTaskStore
from ghapp.store.sqlite import SqliteTaskStore
from tests.fakes.postgres import require_postgres

StoreFactory = Callable[[], Awaitable[TaskStore]]


@pytest.fixture
async def pg_dsn() -> AsyncIterator[str]:
    """A fresh database on the shared test server, dropped afterwards."""
    server = require_postgres()
    name = server.create_database("cluster")
    yield server.dsn(name)
    server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Opens store objects on one database (one per simulated process); closes them after."""
    opened: list[TaskStore] = []
    schema = None
    if request.param == "postgres":
        server = require_postgres()
        schema = f"s_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(server.dsn())
        await admin.execute(f"CREATE SCHEMA {schema}")
        await admin.close()
        dsn = server.dsn(search_path=schema)

    async def factory() -> TaskStore:
        store: TaskStore
        if schema is None:
            store = SqliteTaskStore(tmp_path / "ghapp.sqlite3")
        else:
            store = PostgresTaskStore(dsn)
        await store.migrate()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()
    if schema is not None:
        admin = await asyncpg.connect(server.dsn())
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()
