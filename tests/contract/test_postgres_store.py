"""The TaskStore contract against PostgreSQL, plus what only the PostgreSQL adapter promises."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import asyncpg
import pytest

from ghapp.core.model import GhappError, TaskState
from ghapp.store.postgres import PostgresTaskStore
from ghapp.store.postgres.schema import MIGRATIONS, SCHEMA_VERSION
from tests.contract.support import (
    PLENTY,
    T0,
    StoreFactory,
    at,
    bodies_moved_to_their_table,
    new,
    queued,
    replays_of_stored_bodies_are_duplicates,
)
from tests.contract.task_store_contract import TaskStoreContract
from tests.fakes.postgres import PgServer, require_postgres

DATABASE = "contract"


@pytest.fixture
def pg() -> PgServer:
    server = require_postgres()
    if server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'") != "1":
        server.psql(f"CREATE DATABASE {DATABASE}")
    return server


@pytest.fixture
async def dsn(pg: PgServer) -> AsyncIterator[str]:
    """A fresh schema per test in one shared database: quicker than a database each."""
    schema = f"s_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg.dsn(DATABASE))
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        yield pg.dsn(DATABASE, search_path=schema)
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await admin.close()


# the step that hashes delivery bodies
HASHES = next(i for i, step in enumerate(MIGRATIONS) if "body_sha256" in step[0])
# the step that moves delivery bodies into a table of their own
BODIES = next(i for i, step in enumerate(MIGRATIONS) if "delivery_bodies" in step[0])


class TestPostgresTaskStore(TaskStoreContract):
    """Runs every contract test on a fresh PostgreSQL schema per test."""

    @pytest.fixture
    async def open_store(self, dsn: str) -> AsyncIterator[StoreFactory]:
        opened: list[PostgresTaskStore] = []

        async def factory() -> PostgresTaskStore:
            store = PostgresTaskStore(dsn)
            await store.migrate()
            opened.append(store)
            return store

        yield factory
        for store in opened:
            await store.close()

    @pytest.fixture
    async def store(self, open_store: StoreFactory) -> PostgresTaskStore:
        store = await open_store()
        assert isinstance(store, PostgresTaskStore)
        return store

    # -- PostgreSQL only --------------------------------------------------------------
    async def test_processes_starting_together_migrate_once(self, dsn: str) -> None:
        stores = [PostgresTaskStore(dsn, max_connections=2) for _ in range(6)]
        try:
            await asyncio.gather(*(s.migrate() for s in stores))
            conn = await asyncpg.connect(dsn)
            try:
                assert [tuple(r) for r in await conn.fetch("SELECT version FROM ghapp_schema")] == [
                    (SCHEMA_VERSION,)
                ]
            finally:
                await conn.close()
            task = await queued(stores[0])
            assert await stores[5].get_task(task.id) == task
        finally:
            await asyncio.gather(*(s.close() for s in stores))

    async def test_a_version_1_database_upgrades_keeping_its_tasks(self, dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for statement in MIGRATIONS[0]:
                await conn.execute(statement)
            await conn.execute("CREATE TABLE ghapp_schema (version INTEGER NOT NULL)")
            await conn.execute("INSERT INTO ghapp_schema VALUES (1)")
            await conn.execute(
                "INSERT INTO tasks (source, repo, installation_id, issue_number, requester, "
                "instructions, budget_usd, state, created_at, updated_at) VALUES "
                "('label', 'octo/app', 7, 1, 'alice', 'fix it', 1.0, 'queued', $1, $1)",
                T0,
            )
        finally:
            await conn.close()
        store = PostgresTaskStore(dsn)
        try:
            await store.migrate()
            task = await store.get_task(1)
            assert task is not None and task.instructions == "fix it"
            assert (task.triggered_at, task.pr_description, task.context_note) == (None, "", None)
            later = await queued(store, 2, triggered_at=T0, pr_description="d")
            assert (later.triggered_at, later.pr_description) == (T0, "d")
        finally:
            await store.close()

    async def test_upgrade_hashes_stored_bodies_so_their_replays_are_duplicates(
        self, dsn: str
    ) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for statement in (s for step in MIGRATIONS[:HASHES] for s in step):
                await conn.execute(statement)
            await conn.execute("CREATE TABLE ghapp_schema (version INTEGER NOT NULL)")
            await conn.execute("INSERT INTO ghapp_schema VALUES ($1)", HASHES)
            for delivery_id, body in (("a", b"X"), ("replay-of-a", b"X"), ("b", b"Y")):
                await conn.execute(
                    "INSERT INTO deliveries (id, event, body, received_at) "
                    "VALUES ($1, 'issues', $2, $3)",
                    delivery_id,
                    body,
                    T0,
                )
        finally:
            await conn.close()
        store = PostgresTaskStore(dsn)
        try:
            await store.migrate()
            await replays_of_stored_bodies_are_duplicates(store)
        finally:
            await store.close()

    async def test_upgrade_moves_stored_bodies_to_their_own_table(self, dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for statement in (s for step in MIGRATIONS[:BODIES] for s in step):
                await conn.execute(statement)
            await conn.execute("CREATE TABLE ghapp_schema (version INTEGER NOT NULL)")
            await conn.execute("INSERT INTO ghapp_schema VALUES ($1)", BODIES)
            for delivery_id, body, processed in (
                ("pruned", b"", at(1)),
                ("waiting", b'{"n": 1}', None),
                ("done", b'{"n": 2}', at(1)),
            ):
                await conn.execute(
                    "INSERT INTO deliveries (id, event, body, received_at, processed_at, "
                    "body_sha256) VALUES ($1, 'issues', $2, $3, $4, sha256($2))",
                    delivery_id,
                    body,
                    T0,
                    processed,
                )
        finally:
            await conn.close()
        store = PostgresTaskStore(dsn)
        try:
            await store.migrate()
            await bodies_moved_to_their_table(store, at(2), at(2))
        finally:
            await store.close()
        conn = await asyncpg.connect(dsn)
        try:
            assert not await conn.fetchval(
                "SELECT count(*) FROM information_schema.columns "
                "WHERE table_name = 'deliveries' AND column_name = 'body' "
                "AND table_schema = current_schema()"
            )  # claims and marks rewrite small rows only
            moved = await conn.fetch(
                "SELECT d.id FROM delivery_bodies AS b JOIN deliveries AS d ON d.seq = b.seq"
            )
            assert [tuple(row) for row in moved] == [("waiting",)]
        finally:
            await conn.close()

    async def test_newer_schema_is_refused(self, dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE TABLE ghapp_schema (version INTEGER NOT NULL)")
            await conn.execute("INSERT INTO ghapp_schema VALUES ($1)", SCHEMA_VERSION + 1)
        finally:
            await conn.close()
        store = PostgresTaskStore(dsn)
        try:
            with pytest.raises(GhappError, match="newer"):
                await store.migrate()
        finally:
            await store.close()

    async def test_unopened_store_says_so(self, dsn: str) -> None:
        store = PostgresTaskStore(dsn)
        with pytest.raises(RuntimeError, match="migrate"):
            await store.get_task(1)
        assert await store.ping() is False
        await store.close()

    async def test_unreachable_server_fails_ping_not_the_caller(self) -> None:
        store = PostgresTaskStore("postgresql://postgres@127.0.0.1:1/nothing")
        with pytest.raises(OSError):
            await store.migrate()
        assert await store.ping() is False

    async def test_naive_datetimes_are_refused(self, store: PostgresTaskStore) -> None:
        with pytest.raises(ValueError, match="naive"):
            await store.create_task(new(1), datetime(2024, 5, 1, 12, 0))
        assert await store.count(TaskState.QUEUED) == 0

    async def test_failed_statement_rolls_back_and_store_stays_usable(
        self, store: PostgresTaskStore
    ) -> None:
        task = await queued(store, 1)
        with pytest.raises(asyncpg.NotNullViolationError):
            await store.update(task.id, summary="half", installation_id=None)
        assert await store.get_task(task.id) == task
        claim = await store.claim_next(at(1), PLENTY)
        assert claim.task is not None and claim.task.id == task.id

    async def test_database_itself_refuses_two_active_tasks_per_issue(
        self, store: PostgresTaskStore, dsn: str
    ) -> None:
        await queued(store, 1)
        conn = await asyncpg.connect(dsn)
        try:
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute(
                    "INSERT INTO tasks (source, repo, installation_id, issue_number, requester,"
                    " instructions, budget_usd, state, created_at, updated_at)"
                    " VALUES ('label', 'OCTO/app', 7, 1, 'x', 'y', 1, 'queued', $1, $1)",
                    T0,
                )
        finally:
            await conn.close()

    async def test_cancel_and_new_work_are_announced(
        self, store: PostgresTaskStore, dsn: str
    ) -> None:
        heard: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        conn = await asyncpg.connect(dsn)
        try:
            for channel in ("ghapp_queue", "ghapp_cancel"):
                await conn.add_listener(
                    channel, lambda _c, _p, ch, msg: heard.put_nowait((ch, msg))
                )
            task = await queued(store, 1)
            assert await asyncio.wait_for(heard.get(), 5) == ("ghapp_queue", "")
            await store.claim_next(at(1), PLENTY)
            await store.cancel(task.id, at(2), "stop")
            assert await asyncio.wait_for(heard.get(), 5) == ("ghapp_cancel", str(task.id))
        finally:
            await conn.close()
