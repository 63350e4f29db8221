"""The TaskStore contract against SQLite, plus what only the SQLite adapter promises."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest

from ghapp.core.model import GhappError, TaskState
from ghapp.store.rows import body_sha256, unpack_body
from ghapp.store.sqlite import SqliteTaskStore
from ghapp.store.sqlite.schema import MIGRATIONS, SCHEMA_VERSION
from ghapp.store.sqlite.writer import CHECKPOINT_RESTART_PAGES
from tests.conftest import FIXTURES
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
from tests.fakes.ghapp_process import read_db

LZ4_BODIES = 11  # the schema from which bodies are stored as LZ4 frames
# the step that hashes delivery bodies
HASHES = next(i for i, step in enumerate(MIGRATIONS) if "body_sha256" in step[0])
# the step that moves delivery bodies into a table of their own
BODIES = next(i for i, step in enumerate(MIGRATIONS) if "delivery_bodies" in step[0])


async def _burst(store: SqliteTaskStore, start: int, count: int) -> None:
    """`count` deliveries of 20 KB arriving together (random: stored as large as sent)."""
    await asyncio.gather(
        *(
            store.add_delivery(f"d-{i}", "issues", os.urandom(10_000).hex().encode(), T0)
            for i in range(start, start + count)
        )
    )


class TestSqliteTaskStore(TaskStoreContract):
    """Runs every contract test on a fresh SQLite file per test."""

    WRITER_PROCESS = False  # deliveries written in this process (tests, tools, workers)
    WAL_PAGES = 1000  # past this many WAL pages a commit checkpoints (SQLite's autocheckpoint)

    @pytest.fixture
    def db_path(self, tmp_path: Path) -> Path:
        return tmp_path / "data" / "ghapp.sqlite3"

    @pytest.fixture
    async def open_store(self, db_path: Path) -> AsyncIterator[StoreFactory]:
        opened: list[SqliteTaskStore] = []

        async def factory() -> SqliteTaskStore:
            secret = "contract-secret" if self.WRITER_PROCESS else None
            store = SqliteTaskStore(db_path, intake_secret=secret)
            await store.migrate()
            opened.append(store)
            return store

        yield factory
        for store in opened:
            await store.close()

    @pytest.fixture
    async def store(self, open_store: StoreFactory) -> SqliteTaskStore:
        store = await open_store()
        assert isinstance(store, SqliteTaskStore)
        return store

    # -- SQLite only ------------------------------------------------------------------
    async def test_file_is_wal_at_the_current_schema_version(
        self, store: SqliteTaskStore, db_path: Path
    ) -> None:
        raw = sqlite3.connect(db_path)
        try:
            assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        finally:
            raw.close()

    async def test_a_version_2_database_upgrades_keeping_its_tasks(self, db_path: Path) -> None:
        db_path.parent.mkdir(parents=True)
        raw = sqlite3.connect(db_path)
        for step in MIGRATIONS[:2]:
            for statement in step:
                raw.execute(statement)
        raw.execute("PRAGMA user_version = 2")
        raw.execute(
            "INSERT INTO tasks (source, repo, installation_id, issue_number, requester, "
            "instructions, budget_usd, state, created_at, updated_at) VALUES "
            "('label', 'octo/app', 7, 1, 'alice', 'fix it', 1.0, 'queued', ?, ?)",
            (T0.isoformat(), T0.isoformat()),
        )
        raw.commit()
        raw.close()
        store = SqliteTaskStore(db_path)
        try:
            await store.migrate()
            task = await store.get_task(1)
            assert task is not None and task.instructions == "fix it"
            assert (task.triggered_at, task.pr_description, task.context_note) == (None, "", None)
            later = await queued(store, 2, triggered_at=T0, pr_description="d")
            assert (later.triggered_at, later.pr_description) == (T0, "d")
        finally:
            await store.close()

    async def test_connection_pragmas(self, store: SqliteTaskStore) -> None:
        async with store._read() as conn:
            for pragma, expected in (
                ("foreign_keys", 1),
                ("busy_timeout", 5000),
                ("synchronous", 1),
            ):
                assert await conn.value(f"PRAGMA {pragma}") == expected, pragma

    async def test_sustained_intake_keeps_the_wal_file_bounded(
        self, store: SqliteTaskStore, db_path: Path
    ) -> None:
        # A writer restarts the WAL only if every frame was copied when it began, so copying it
        # in the background alone lets it grow for ever under steady writes.
        for start in range(0, 2400, 40):  # 48 MB of bodies, in bursts as webhooks come
            await _burst(store, start, 40)
        wal = db_path.with_name(db_path.name + "-wal").stat().st_size
        page = read_db(db_path, "PRAGMA page_size")[0]["page_size"]
        # and the bursts that went on while the checkpoint waited its turn
        assert wal < self.WAL_PAGES * page + 12 * 2**20, wal
        assert read_db(db_path, "SELECT COUNT(*) AS n FROM delivery_bodies")[0]["n"] == 2400

    async def test_upgrade_hashes_stored_bodies_so_their_replays_are_duplicates(
        self, db_path: Path
    ) -> None:
        db_path.parent.mkdir(parents=True)
        raw = sqlite3.connect(db_path, isolation_level=None)
        for statement in (s for step in MIGRATIONS[:HASHES] for s in step):
            raw.execute(statement)
        raw.execute(f"PRAGMA user_version = {HASHES}")
        for delivery_id, body in (("a", b"X"), ("replay-of-a", b"X"), ("b", b"Y")):
            raw.execute(
                "INSERT INTO deliveries (id, event, body, received_at) VALUES (?, 'issues', ?, ?)",
                (delivery_id, body, "2024-05-01T12:00:00.000000+00:00"),
            )
        raw.close()
        store = SqliteTaskStore(db_path)
        try:
            await store.migrate()
            await replays_of_stored_bodies_are_duplicates(store)
        finally:
            await store.close()

    async def test_upgrade_moves_stored_bodies_to_their_own_table(self, db_path: Path) -> None:
        db_path.parent.mkdir(parents=True)
        raw = sqlite3.connect(db_path, isolation_level=None)
        raw.create_function("sha256", 1, body_sha256)
        for statement in (s for step in MIGRATIONS[:BODIES] for s in step):
            raw.execute(statement)
        raw.execute(f"PRAGMA user_version = {BODIES}")
        for delivery_id, body, processed in (
            ("pruned", b"", "2024-05-01T12:00:01.000000+00:00"),
            ("waiting", b'{"n": 1}', None),
            ("done", b'{"n": 2}', "2024-05-01T12:00:01.000000+00:00"),
        ):
            raw.execute(
                "INSERT INTO deliveries (id, event, body, received_at, processed_at, "
                "body_sha256) VALUES (?, 'issues', ?, '2024-05-01T12:00:00.000000+00:00', ?, ?)",
                (delivery_id, body, processed, body_sha256(body)),
            )
        raw.close()
        store = SqliteTaskStore(db_path)
        try:
            await store.migrate()
            await bodies_moved_to_their_table(store, T0, at(1))
        finally:
            await store.close()
        raw = sqlite3.connect(db_path)
        try:
            columns = [row[1] for row in raw.execute("PRAGMA table_info(deliveries)")]
            assert "body" not in columns  # claims and marks rewrite small rows only
            assert raw.execute(
                "SELECT d.id FROM delivery_bodies AS b JOIN deliveries AS d ON d.seq = b.seq"
            ).fetchall() == [("waiting",)]
        finally:
            raw.close()

    async def test_a_new_body_lands_on_no_index_page(
        self, store: SqliteTaskStore, db_path: Path
    ) -> None:
        """Keyed by the delivery's seq, bodies are appended; a text key had an index of its own,
        one more random page written per delivery."""
        await store.add_delivery("d-1", "issues", b'{"n": 1}', T0)
        raw = sqlite3.connect(db_path)
        try:
            assert raw.execute("PRAGMA index_list(delivery_bodies)").fetchall() == []
            seq = raw.execute("SELECT seq FROM deliveries WHERE id = 'd-1'").fetchone()[0]
            body = raw.execute("SELECT body FROM delivery_bodies WHERE seq = ?", (seq,))
            assert unpack_body(body.fetchone()[0]) == b'{"n": 1}'
        finally:
            raw.close()

    async def test_a_real_body_is_kept_compressed_in_one_small_page(
        self, store: SqliteTaskStore, db_path: Path
    ) -> None:
        """What intake writes per delivery: GitHub's 28 KB pull request JSON takes under 5 KB,
        and a new file's 4 KB pages (a random index page each) are what it dirties besides."""
        sent = (FIXTURES / "pull_request.opened.json").read_bytes()
        assert await store.add_delivery("d-pr", "pull_request", sent, T0)
        raw = sqlite3.connect(db_path)
        try:
            assert raw.execute("PRAGMA page_size").fetchone() == (4096,)
            (kept,) = raw.execute("SELECT length(body) FROM delivery_bodies").fetchone()
            # schema 11 marks LZ4 bodies: a ghapp from before (at 10) refuses the file
            assert raw.execute("PRAGMA user_version").fetchone()[0] >= LZ4_BODIES
        finally:
            raw.close()
        assert kept < len(sent) / 5
        [delivery] = await store.pending_deliveries()
        assert delivery.body == sent  # byte for byte, as signed

    async def test_a_body_stored_uncompressed_before_reads_as_it_was(
        self, store: SqliteTaskStore, db_path: Path
    ) -> None:
        sent = (FIXTURES / "issues.labeled.json").read_bytes()
        raw = sqlite3.connect(db_path)
        try:
            raw.execute(
                "INSERT INTO deliveries (id, event, received_at, body_sha256) VALUES (?, ?, ?, ?)",
                ("d-old", "issues", "2026-11-01T00:00:00+00:00", body_sha256(sent)),
            )
            raw.execute(
                "INSERT INTO delivery_bodies (seq, body) VALUES (last_insert_rowid(), ?)", (sent,)
            )
            raw.commit()
        finally:
            raw.close()
        [delivery] = await store.pending_deliveries()
        assert delivery.body == sent
        assert not await store.add_delivery("d-replay", "issues", sent, T0)  # still a replay

    async def test_newer_schema_is_refused(self, db_path: Path) -> None:
        db_path.parent.mkdir(parents=True)
        raw = sqlite3.connect(db_path)
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        raw.close()
        store = SqliteTaskStore(db_path)
        try:
            with pytest.raises(GhappError, match="newer"):
                await store.migrate()
        finally:
            await store.close()

    async def test_unopened_store_says_so(self, tmp_path: Path) -> None:
        store = SqliteTaskStore(tmp_path / "x.sqlite3")
        with pytest.raises(RuntimeError, match="migrate"):
            await store.get_task(1)
        assert await store.ping() is False
        await store.close()

    async def test_in_memory_database_works(self) -> None:
        store = SqliteTaskStore(":memory:")
        await store.migrate()
        try:
            assert (await queued(store)).id == 1
        finally:
            await store.close()

    async def test_naive_datetimes_are_refused(self, store: SqliteTaskStore) -> None:
        with pytest.raises(ValueError, match="naive"):
            await store.create_task(new(1), datetime(2024, 5, 1, 12, 0))
        assert await store.count(TaskState.QUEUED) == 0

    async def test_failed_statement_rolls_back_and_store_stays_usable(
        self, store: SqliteTaskStore
    ) -> None:
        task = await queued(store, 1)
        with pytest.raises(sqlite3.IntegrityError):
            await store.update(task.id, summary="half", installation_id=None)
        assert await store.get_task(task.id) == task
        claim = await store.claim_next(at(1), PLENTY)
        assert claim.task is not None and claim.task.id == task.id

    async def test_database_itself_refuses_two_active_tasks_per_issue(
        self, store: SqliteTaskStore, db_path: Path
    ) -> None:
        await queued(store, 1)
        raw = sqlite3.connect(db_path)
        try:
            with pytest.raises(sqlite3.IntegrityError):
                raw.execute(
                    "INSERT INTO tasks (source, repo, installation_id, issue_number, requester,"
                    " instructions, budget_usd, state, created_at, updated_at)"
                    " VALUES ('label', 'OCTO/app', 7, 1, 'x', 'y', 1, 'queued', ?, ?)",
                    (T0.isoformat(), T0.isoformat()),
                )
        finally:
            raw.close()


class TestSqliteWriterProcess(TestSqliteTaskStore):
    """The same, with deliveries written by a child process (as a webhook server does)."""

    WRITER_PROCESS = True
    WAL_PAGES = CHECKPOINT_RESTART_PAGES  # the checkpointer's full checkpoint
