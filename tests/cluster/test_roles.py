"""Scaling-out pieces one at a time: settings, roles, Telegram leadership, migrate-store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from ghapp.__main__ import main
from ghapp.agent.logview import AgentLogReader
from ghapp.bootstrap import build, build_core
from ghapp.config import ConfigError, default_node_id, load_settings
from ghapp.core.model import Installation, Project, TaskState
from ghapp.core.tasks import Limits
from ghapp.process import Role, web_app
from ghapp.store.migrate import MigrationError, copy_store
from ghapp.store.postgres import PostgresTaskStore
from ghapp.store.postgres.signals import PgLeader, PgListener
from ghapp.store.sqlite import SqliteTaskStore
from ghapp.telegram.bot import TelegramBot
from tests.contract.support import DAY1, PLENTY, T0, at, queued
from tests.fakes.memory import FakeClock, MemoryForge, ScriptedWorker
from tests.fakes.stack import Stack, close_stack, eventually, make_stack
from tests.fakes.telegram import FakeTelegram
from tests.telegram.conftest import CHAT, FAST

BASE = {"WEBHOOK_SECRET": "s3cret"}


# -- settings ---------------------------------------------------------------------------------
def test_postgres_url_is_accepted_and_its_password_kept_out_of_logs() -> None:
    url = "postgresql://ghapp:hunter22@db.internal:5432/ghapp"
    settings = load_settings({**BASE, "DATABASE_URL": url})
    assert settings.is_postgres and settings.database_url == url
    assert settings.database_label == "postgresql://ghapp:***@db.internal:5432/ghapp"
    assert "hunter22" in settings.secrets
    assert load_settings({**BASE, "DATABASE_URL": "postgres://h/db"}).is_postgres
    assert not load_settings(BASE).is_postgres
    with pytest.raises(ConfigError, match=r"^DATABASE_URL") as refused:
        load_settings({**BASE, "DATABASE_URL": "mysql://root:hunter22@h/db"})
    assert "hunter22" not in str(refused.value)


def test_node_id_is_stable_per_data_dir_and_configurable(tmp_path: Path) -> None:
    one = load_settings({**BASE, "MC_DATA_DIR": str(tmp_path / "a")})
    assert (
        one.node_id
        == default_node_id(tmp_path / "a")
        == load_settings({**BASE, "MC_DATA_DIR": str(tmp_path / "a")}).node_id
    )
    assert one.node_id != load_settings({**BASE, "MC_DATA_DIR": str(tmp_path / "b")}).node_id
    assert load_settings({**BASE, "MC_NODE_ID": "box-7"}).node_id == "box-7"
    assert one.lease_s == 60.0
    assert load_settings({**BASE, "MC_LEASE_S": "3"}).lease_s == 3.0
    with pytest.raises(ConfigError, match=r"^MC_LEASE_S"):
        load_settings({**BASE, "MC_LEASE_S": "0.1"})


# -- roles ------------------------------------------------------------------------------------
@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    stack = await make_stack(worker_user=None)
    yield stack
    await close_stack(stack)


async def test_roles_leave_out_what_they_do_not_run(stack: Stack, pg_dsn: str) -> None:
    settings = replace(stack.settings, database_url=pg_dsn, node_id="w1")
    worker = build(settings, role=Role.WORKER, worker=ScriptedWorker())
    assert worker.runner is not None and worker.inbox is None
    assert isinstance(worker.store, PostgresTaskStore)
    with pytest.raises(ValueError, match="worker process serves no webhooks"):
        web_app(worker)
    web = build(replace(settings, node_id="web1"), role=Role.WEB)
    assert web.runner is None and web.inbox is not None and web.service.runner is None
    await worker.start()
    await web.start()
    try:
        health = await worker.health()
        assert health["ok"] and health["role"] == "worker" and health["node"] == "w1"
        assert (health["runner"], health["telegram"]) == ("ok", "off")
        health = await web.health()
        assert health["ok"] and health["role"] == "web" and health["runner"] == "off"
    finally:
        await web.stop()
        await worker.stop()


# -- Telegram leadership ----------------------------------------------------------------------
async def test_one_leader_at_a_time_and_a_new_one_when_it_goes(pg_dsn: str) -> None:
    events: list[str] = []

    def leader(name: str) -> PgLeader:
        async def elected() -> None:
            events.append(f"+{name}")

        async def deposed() -> None:
            events.append(f"-{name}")

        return PgLeader(pg_dsn, 42, elected, deposed, retry_s=0.1, check_s=0.1)

    first, second = leader("a"), leader("b")
    await first.start()
    await eventually(lambda: first.leader, within=5)
    await second.start()
    await asyncio.sleep(0.5)
    assert (first.leader, second.leader) == (True, False)
    await first.stop()  # a clean stop steps down before the lock goes
    await eventually(lambda: second.leader, within=5)
    assert events == ["+a", "-a", "+b"]
    admin = await asyncpg.connect(pg_dsn)  # a dead session (killed backend) also hands over
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks "
            "WHERE locktype = 'advisory' AND objid = 42 AND granted"
        )
    finally:
        await admin.close()
    await eventually(lambda: events[-2:] == ["-b", "+b"], within=5)
    await second.stop()


async def test_a_standby_bot_sends_but_polls_only_once_elected(tmp_path: Path) -> None:
    fake = FakeTelegram()
    await fake.start()
    store = SqliteTaskStore(tmp_path / "db.sqlite3")
    try:
        await store.migrate()
        forge = MemoryForge()
        service = build_core(store, forge, FakeClock(), Limits(10, 5, 8)).service
        bot = TelegramBot(
            fake.token, [CHAT], service, AgentLogReader(store), api_url=fake.base_url, config=FAST,
            polling=False,
        )  # fmt: skip
        try:
            await bot.start()
            await eventually(lambda: bot.connected, within=5)
            await bot.outbox.idle()
            bot.outbox.put(CHAT, "hello from a worker")
            await fake.wait_text("hello from a worker", CHAT)
            assert fake.method_calls("getUpdates") == [] and not bot.polling
            await bot.set_polling(True)
            await fake.inject(CHAT, "/help")
            await fake.wait_text("/status", CHAT)
            assert bot.polling and fake.method_calls("getUpdates")
            await bot.set_polling(False)
            assert not bot.polling
            calls = len(fake.method_calls("getUpdates"))
            await asyncio.sleep(0.5)
            assert len(fake.method_calls("getUpdates")) == calls
        finally:
            await bot.stop()
    finally:
        await store.close()
        await fake.stop()


# -- migrate-store ----------------------------------------------------------------------------
@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[SqliteTaskStore]:
    """A SQLite store with a bit of everything, left open for comparisons."""
    store = SqliteTaskStore(tmp_path / "ghapp.sqlite3")
    await store.migrate()
    try:
        await fill(store)
        yield store
    finally:
        await store.close()


async def fill(store: SqliteTaskStore) -> None:
    done = await queued(store, 1, budget=2.0)
    await store.claim_next(at(1), PLENTY)
    await store.update(done.id, pr_number=7, pr_url="https://x/pull/7", summary="ok ✓")
    await store.finish(done.id, TaskState.SUCCEEDED, at(2), 1.25)
    await queued(store, 2, at(3), repo="Octo/Other")
    await queued(store, 3, at(4))
    await store.claim_next(at(5), PLENTY, "old-box", 60)
    for i in range(3):
        await store.add_delivery(f"d{i}", "issues", bytes([i, 255]), at(i))
    await store.mark_delivery("d0", at(9), error="boom")
    await store.upsert_installation(Installation(7, "octo", ("octo/app", "Octo/Other")))
    await store.add_project(Project("app", "octo/app", 7, is_default=True))
    assert await store.claim_thread("slack:C1", done.id, at(2), 10.0)
    await store.set_thread_ref("slack:C1", done.id, "1700000001.000100")
    await store.append_task_log(done.id, 1, "tool Write: a.txt ✓\n", 1000)


async def test_migrate_store_copies_everything_and_checks_counts(
    tmp_path: Path, pg_dsn: str, source: SqliteTaskStore
) -> None:
    lines: list[str] = []
    copied = await copy_store(tmp_path / "ghapp.sqlite3", pg_dsn, say=lines.append)
    assert copied == {
        "installations": 1,
        "installation_repos": 2,
        "projects": 1,
        "tasks": 3,
        "chat_threads": 1,
        "task_logs": 1,
        "deliveries": 3,
        "delivery_bodies": 3,
        "ledger": 1,
    }
    assert any("ledger total" in line and "$1.25" in line for line in lines)
    target = PostgresTaskStore(pg_dsn)
    await target.migrate()
    try:
        assert await target.list_tasks(limit=100) == await source.list_tasks(limit=100)
        assert await target.thread_ref("slack:C1", 1) == "1700000001.000100"
        assert await target.task_log(1, 1) == "tool Write: a.txt ✓\n"
        assert await target.pending_deliveries() == await source.pending_deliveries()
        assert await target.budget(DAY1, 10) == await source.budget(DAY1, 10)
        assert await target.installations() == await source.installations()
        assert await target.projects() == await source.projects()
        fresh = await queued(target, 9, at(10))  # ids go on after the copied ones
        assert fresh.id == 4
        assert await target.add_delivery("d9", "issues", b'{"n": 9}', at(11))  # and seqs
        assert (await target.pending_deliveries())[-1].body == b'{"n": 9}'
    finally:
        await target.close()


async def test_migrate_store_refuses_a_non_empty_target_unless_told(
    tmp_path: Path, pg_dsn: str, source: SqliteTaskStore
) -> None:
    target = PostgresTaskStore(pg_dsn)
    await target.migrate()
    await queued(target, 50, T0)
    await target.close()
    with pytest.raises(MigrationError, match="--replace"):
        await copy_store(tmp_path / "ghapp.sqlite3", pg_dsn, say=lambda _: None)
    url = f"sqlite:///{tmp_path / 'ghapp.sqlite3'}"
    cli = ["migrate-store", "--to", pg_dsn, "--from", url]
    assert await asyncio.to_thread(main, cli) == 1
    assert await asyncio.to_thread(main, [*cli, "--replace"]) == 0
    assert await asyncio.to_thread(main, ["migrate-store", "--to", "sqlite:///x"]) == 2
    target = PostgresTaskStore(pg_dsn)
    await target.migrate()
    try:
        assert [t.issue_number for t in await target.list_tasks(limit=100)] == [2, 1, 3]
    finally:
        await target.close()


async def test_listener_wakes_the_runner_and_forwards_cancels(pg_dsn: str) -> None:
    store = PostgresTaskStore(pg_dsn)
    woken: list[str] = []
    listener = PgListener(
        pg_dsn, lambda: woken.append("queue"), lambda i: woken.append(f"stop {i}")
    )
    try:
        await store.migrate()
        await listener.start()
        await eventually(lambda: woken == ["queue"], within=5)  # a catch-up wake on connect
        task = await queued(store, 1)
        await eventually(lambda: woken == ["queue", "queue"], within=5)
        await store.claim_next(at(1), PLENTY, "worker-9")
        await store.cancel(task.id, at(2), "stop")
        await eventually(lambda: woken[-1] == f"stop {task.id}", within=5)
    finally:
        await listener.stop()
        await store.close()
