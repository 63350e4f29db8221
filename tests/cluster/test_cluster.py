"""One web and three worker processes on one PostgreSQL: 30 issues through the real CLI.

Every task runs exactly once and opens one pull request; a worker SIGKILLed mid-task loses
it to another worker once its lease (3 s here) expires; killing the process that polls
Telegram hands polling to another one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from tests.conftest import payload
from tests.fakes.anthropic import ScriptedAnthropic
from tests.fakes.ghapp_process import GhappProcess, free_port
from tests.fakes.postgres import require_postgres
from tests.fakes.sandbox import require_claude, require_sandbox_user
from tests.fakes.stack import REPO, Stack, close_stack, eventually, ghapp_env, make_stack
from tests.fakes.telegram import NamingTelegram

pytestmark = [pytest.mark.cli, pytest.mark.sandbox]

TASKS = 30
CHAT = 4242
LEASE_S = 3


@dataclass
class World:
    stack: Stack
    api: ScriptedAnthropic
    telegram: NamingTelegram
    db: asyncpg.Connection
    web: GhappProcess
    workers: list[GhappProcess]

    def proc(self, node: str) -> GhappProcess:
        return next(p for p in [self.web, *self.workers] if p.env["MC_NODE_ID"] == node)

    async def deliver(self, issue: int, scenario: str) -> None:
        data = payload("issues.labeled", id=1)
        data["label"]["name"] = "mc-auto"
        data["issue"]["number"] = issue
        data["issue"]["body"] = f"Fix issue {issue}. [scenario:{scenario}] [file:fix-{issue}.txt]"
        assert await self.stack.deliver("issues", data, f"cluster-{issue}") == 202

    async def task(self, issue: int) -> asyncpg.Record | None:
        return await self.db.fetchrow("SELECT * FROM tasks WHERE issue_number = $1", issue)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    user, claude = require_sandbox_user(), require_claude()
    pg = require_postgres()
    database = pg.create_database("cluster")
    api = ScriptedAnthropic(slow_turn_s=2.0)
    base = await api.start()
    stack = await make_stack(
        worker_user=user,
        claude_bin=str(claude),
        anthropic_env={"ANTHROPIC_BASE_URL": base, "ANTHROPIC_API_KEY": "sk-ant-test-key"},
    )
    for issue in range(2, TASKS + 1):
        assert stack.github.add_issue(REPO, f"Issue {issue}", "[scenario:commit]") == issue
    telegram = NamingTelegram()
    await telegram.start()

    def proc(name: str, role: str, concurrency: int) -> GhappProcess:
        port = free_port()
        env = ghapp_env(
            stack,
            port,
            DATABASE_URL=pg.dsn(database),
            MC_DATA_DIR=str(stack.root / f"data-{name}"),
            MC_NODE_ID=name,
            MC_LEASE_S=str(LEASE_S),
            MC_CONCURRENCY=str(concurrency),
            TELEGRAM_BOT_TOKEN=telegram.token,
            TELEGRAM_CHAT_IDS=str(CHAT),
            TELEGRAM_API_URL=telegram.api_url(name),
            CLAUDE_CODE_MAX_RETRIES="0",
            LOG_LEVEL="info",
        )
        return GhappProcess(env, stack.root, stack.root / f"{name}.log", role)

    web = proc("web", "web", 1)
    stack.external_url = f"{web.base_url}/api/github/webhooks"
    # w0 runs one task at a time, so the SIGKILL below takes exactly one task down with it.
    workers = [proc("w0", "worker", 1), proc("w1", "worker", 2), proc("w2", "worker", 2)]
    db = await asyncpg.connect(pg.dsn(database))
    yield World(stack, api, telegram, db, web, workers)
    await db.close()
    await asyncio.gather(*(p.stop() for p in [web, *workers]))
    for p in workers:
        p.kill_agents()
    if stack.session is not None:
        await stack.session.close()
        stack.session = None
    await telegram.stop()
    await api.close()
    await close_stack(stack)
    pg.drop_database(database)


async def test_thirty_tasks_on_one_web_and_three_workers(world: World) -> None:
    web, (w0, w1, w2) = world.web, world.workers
    await web.start()
    await eventually(lambda: bool(world.telegram.pollers()), within=20)
    await w0.start()
    assert (await web.health())["telegram"] == "polling"
    assert (await w0.health())["telegram"] == "standby"

    # Telegram: the leader dies, the standby takes polling over and answers.
    killed_at = time.monotonic()
    await web.kill()

    async def w0_polls() -> bool:
        return (await w0.health()).get("telegram") == "polling"

    await eventually(w0_polls, within=30)
    await world.telegram.inject(CHAT, "/status")
    await world.telegram.wait_text("Nothing is running", CHAT, within=20)
    assert world.telegram.pollers(until=killed_at) == {"web"}
    assert world.telegram.pollers(since=killed_at) == {"w0"}
    await web.start()  # back as a standby: w0 keeps polling
    assert (await web.health())["telegram"] == "standby"

    # Issue 1 runs slowly on w0; the other 29 spread over w1 and w2 (and w0 until it dies).
    await world.deliver(1, "slow")

    async def first_turn_on_w0() -> bool:
        row = await world.task(1)
        in_turn = any(
            r.get("tools") and "scenario:slow" in json.dumps(r) for r in world.api.requests
        )
        return row is not None and row["lease_owner"] == "w0" and in_turn

    await eventually(first_turn_on_w0, within=60)
    await asyncio.gather(w1.start(), w2.start())
    for issue in range(2, TASKS + 1):
        await world.deliver(issue, "commit")

    async def first_response_booked() -> bool:  # metered on w0 as the response ended
        row = await world.task(1)
        assert row is not None
        found = await world.db.fetch("SELECT 1 FROM ledger WHERE task_id = $1", row["id"])
        return bool(found)

    await eventually(first_response_booked, within=30)
    await w0.kill()
    killed_at, killed_wall = time.monotonic(), time.time()

    async def all_done() -> bool:
        states = await world.db.fetch("SELECT state FROM tasks")
        return len(states) == TASKS and all(
            s["state"] in ("succeeded", "failed", "cancelled") for s in states
        )

    await eventually(all_done, within=150)
    rows = await world.db.fetch("SELECT * FROM tasks ORDER BY issue_number")
    assert [r["issue_number"] for r in rows] == list(range(1, TASKS + 1))
    assert all(r["state"] == "succeeded" for r in rows), [
        (r["issue_number"], r["failure_reason"]) for r in rows if r["state"] != "succeeded"
    ]
    resumed = rows[0]
    assert resumed["attempt"] == 2 and resumed["lease_owner"] is None
    # ...not before w0's lease (renewed every LEASE_S / 3) ran out, by a sweep on w1 or w2.
    assert resumed["started_at"].timestamp() - killed_wall > LEASE_S * 2 / 3 - 0.5
    assert any("lost its lease; queued again" in p.log.read_text() for p in (w1, w2))
    assert all(r["attempt"] == 1 for r in rows[1:])

    # Each attempt ran once, on one worker: one log per attempt across every data dir.
    logs: dict[str, list[str]] = {}
    for proc in world.workers:
        for path in (proc.data_dir / "logs").glob("task-*-attempt-*.log"):
            logs.setdefault(path.name, []).append(proc.env["MC_NODE_ID"])
    for r in rows[1:]:
        assert len(logs.pop(f"task-{r['id']}-attempt-1.log")) == 1, r["issue_number"]
    assert logs.pop(f"task-{resumed['id']}-attempt-1.log") == ["w0"]
    assert logs.pop(f"task-{resumed['id']}-attempt-2.log") in (["w1"], ["w2"])
    assert logs == {}
    ledger = await world.db.fetch(
        "SELECT task_id, attempt, cost_usd FROM ledger ORDER BY task_id, attempt"
    )
    booked = {(x["task_id"], x["attempt"]): x["cost_usd"] for x in ledger}
    # the killed attempt's first response was metered and booked before w0 died, in the
    # shared store: every node sees it; every attempt is booked once
    assert sorted(booked) == sorted([(resumed["id"], 1)] + [(r["id"], r["attempt"]) for r in rows])
    assert booked[(resumed["id"], 1)] >= 0.0015 - 1e-9
    for r in rows:
        assert r["cost_usd"] == pytest.approx(
            sum(v for (t, _), v in booked.items() if t == r["id"])
        )

    # One pull request per task, each closing its issue.
    pulls = list(world.stack.github.pulls.values())
    assert len(pulls) == TASKS
    assert sorted(p.head for p in pulls) == sorted(r["branch"] for r in rows)
    for r in rows:
        [pr] = [p for p in pulls if p.head == r["branch"]]
        assert f"Closes #{r['issue_number']}" in pr.body and r["pr_number"] == pr.number

    # Each worker kept its own mirror on its own disk; the web process has none.
    ran = {proc.env["MC_NODE_ID"] for proc in world.workers if (proc.data_dir / "mirrors").exists()}
    assert {"w1", "w2"} <= ran and not (web.data_dir / "mirrors").exists()
    # w0 led Telegram when it died: exactly one other process took polling over.
    await eventually(lambda: bool(world.telegram.pollers(since=killed_at)), within=30)
    assert len(world.telegram.pollers(since=killed_at)) == 1
    assert "w0" not in world.telegram.pollers(since=killed_at)
