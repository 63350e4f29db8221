"""A task that runs on node A has its log and its cost so far answered by node B.

Two real processes on one PostgreSQL: B serves webhooks and polls Telegram but runs no
task, so it has no log file of its own; A runs the agent (the real CLI) and nothing else.
Both run on this machine, so the test moves A's log directory out of B's sight.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import asyncpg
import pytest

from ghapp.messaging.text import money
from tests.conftest import payload
from tests.fakes.anthropic import ScriptedAnthropic
from tests.fakes.ghapp_process import GhappProcess, free_port
from tests.fakes.postgres import require_postgres
from tests.fakes.sandbox import require_claude, require_sandbox_user
from tests.fakes.stack import Stack, close_stack, eventually, ghapp_env, make_stack
from tests.fakes.telegram import NamingTelegram

pytestmark = [pytest.mark.cli, pytest.mark.sandbox]

CHAT = 4242


@pytest.fixture
async def nodes() -> AsyncIterator[
    tuple[Stack, NamingTelegram, asyncpg.Connection, GhappProcess, GhappProcess]
]:
    user, claude = require_sandbox_user(), require_claude()
    pg = require_postgres()
    database = pg.create_database("logs")
    api = ScriptedAnthropic()
    api.set_usage("write_then_hang", input_tokens=200_000)  # a cost that shows in dollars
    base = await api.start()
    stack = await make_stack(
        worker_user=user,
        claude_bin=str(claude),
        anthropic_env={"ANTHROPIC_BASE_URL": base, "ANTHROPIC_API_KEY": "sk-ant-test-key"},
    )
    telegram = NamingTelegram()
    await telegram.start()

    def proc(name: str, role: str) -> GhappProcess:
        env = ghapp_env(
            stack,
            free_port(),
            DATABASE_URL=pg.dsn(database),
            MC_DATA_DIR=str(stack.root / f"data-{name}"),
            MC_NODE_ID=name,
            TELEGRAM_BOT_TOKEN=telegram.token,
            TELEGRAM_CHAT_IDS=str(CHAT),
            TELEGRAM_API_URL=telegram.api_url(name),
            CLAUDE_CODE_MAX_RETRIES="0",
            LOG_LEVEL="info",
        )
        return GhappProcess(env, stack.root, stack.root / f"{name}.log", role)

    a, b = proc("a", "worker"), proc("b", "web")
    stack.external_url = f"{b.base_url}/api/github/webhooks"
    db = await asyncpg.connect(pg.dsn(database))
    yield stack, telegram, db, a, b
    await db.close()
    await asyncio.gather(a.stop(), b.stop())
    a.kill_agents()
    if stack.session is not None:
        await stack.session.close()
        stack.session = None
    await telegram.stop()
    await api.close()
    await close_stack(stack)
    pg.drop_database(database)


async def test_logs_and_cost_so_far_of_a_task_on_a_are_answered_by_b(
    nodes: tuple[Stack, NamingTelegram, asyncpg.Connection, GhappProcess, GhappProcess],
) -> None:
    stack, telegram, db, a, b = nodes
    await b.start()
    await eventually(lambda: telegram.pollers() == {"b"}, within=20)
    await a.start()
    data = payload("issues.labeled", id=1)
    data["label"]["name"] = "mc-auto"
    data["issue"]["body"] = "Fix it. [scenario:write_then_hang] [file:fix.txt]"
    assert await stack.deliver("issues", data, "logs-1") == 202

    async def paid_turn_done_on_a() -> bool:  # the Write ran; the next turn hangs
        row = await db.fetchrow("SELECT * FROM tasks WHERE issue_number = 1")
        if row is None or row["lease_owner"] != "a" or row["log_path"] is None:
            return False
        logged = a.data_dir / "logs" / f"task-{row['id']}-attempt-1.log"
        return row["cost_usd"] > 0 and logged.exists() and '"tool_result"' in logged.read_text()

    await eventually(paid_turn_done_on_a, within=90)
    row = await db.fetchrow("SELECT * FROM tasks WHERE issue_number = 1")
    assert row is not None and row["state"] == "running"
    assert not list((b.data_dir / "logs").glob("task-*")), "b must have no log file of its own"
    # b runs on another machine: a's disk is out of its reach (a writes on through its fd)
    (a.data_dir / "logs").rename(a.data_dir / "logs-on-a")

    async def ask(command: str) -> str:
        """What b answers to one command in the chat."""
        before = len(telegram.texts(CHAT))
        await telegram.inject(CHAT, command)
        await telegram.wait_for(lambda sent: len(telegram.texts(CHAT)) > before, within=20)
        answer: str = telegram.texts(CHAT)[-1]
        return answer

    async def logs_shown() -> bool:  # a ships its lines a second after they come
        answer = await ask(f"/logs {row['id']}")
        if answer == f"The log of task #{row['id']} has no readable lines yet.":
            return False
        assert answer.startswith(f"Task #{row['id']} log, attempt 1 (running)"), answer
        return "-> ok:" in answer

    await eventually(logs_shown, within=20)
    assert re.search(r"tool Write: .*fix\.txt", telegram.texts(CHAT)[-1])

    status = await ask("/status")
    assert f"about {money(row['cost_usd'])} of a" in status and money(row["cost_usd"]) != "$0.00"
