"""Bugs the chaos suite found, kept as regression tests now that both are fixed.

A bug still open gets a test marked xfail(strict=True): fixing it makes the test XPASS,
which fails the run, and then the marker goes.

BUG 1 — more than one tracking comment per task. README promises "one tracking comment,
edited as the task moves". The comment id is stored only by TaskService.submit
(ghapp/core/tasks.py). TaskRunner._attempt, ._progress and ._finish
(ghapp/core/runner.py) call Reporter.track(), which POSTs a new comment whenever
task.tracking_comment_id is None and returns its id, but they drop the returned id. So
if the first comment is lost (a 5xx, a rate limit, a network error) or ghapp is killed
between GitHub creating the comment and store.update(tracking_comment_id=...) (the
chaos kill point "queued_comment"), every later report POSTs yet another comment: one
at the start of each attempt, one per progress tick, one at the end. Fixed: the runner
keeps the id it gets, and Reporter.track looks for the task's hidden marker on the issue
before it creates a comment.

BUG 2 (fixed) — a killed attempt's spend was never booked, then booked from the
agent's own log (which the agent can forge). Now ghapp's metering proxy books each model
response as it ends, so whatever ghapp is killed, the ledger already holds it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ghapp.bootstrap import Crew, build_core
from ghapp.core.model import NewTask, TaskSource, TaskState
from ghapp.core.report import MARKER as TRACKING_MARKER
from ghapp.core.runner import RunnerConfig
from ghapp.core.tasks import Limits
from ghapp.store.sqlite import SqliteTaskStore
from tests.conftest import payload
from tests.fakes.anthropic import ScriptedAnthropic
from tests.fakes.ghapp_process import GhappProcess, free_port, kill_agents, read_db
from tests.fakes.memory import FakeClock, MemoryForge, MemoryVcs, RecordingMessenger, ScriptedWorker
from tests.fakes.sandbox import require_claude, require_sandbox_user
from tests.fakes.stack import REPO, Stack, close_stack, eventually, ghapp_env
from tests.fakes.trap_github import TrapGitHub, make_trap_stack

BUG_2 = (
    "BUG 2: requeue_running / requeue_expired (ghapp/store/lifecycle.py) returns a crash orphan "
    "to the queue "
    "without booking what its killed attempt spent, so the ledger and the daily cap miss it"
)


@dataclass
class FlakyForge(MemoryForge):
    """A forge whose first comment POSTs fail, as GitHub's 502s and rate limits do."""

    failing_comments: int = 1

    async def comment(self, installation_id: int, repo: str, number: int, body: str) -> int:
        if self.failing_comments > 0:
            self.failing_comments -= 1
            raise OSError("502 Bad Gateway")
        return await super().comment(installation_id, repo, number, body)


async def test_one_tracking_comment_after_the_first_one_failed(tmp_path: Path) -> None:
    store = SqliteTaskStore(tmp_path / "db.sqlite3")
    await store.migrate()
    forge, clock = FlakyForge({"alice": "write"}), FakeClock()
    vcs = MemoryVcs(tmp_path / "work")
    config = RunnerConfig(log_dir=tmp_path / "logs", daily_budget_usd=10, cancel_poll_s=0.05)
    crew = Crew(vcs, ScriptedWorker(vcs), config)
    core = build_core(store, forge, clock, Limits(10, 5, 10), RecordingMessenger(), crew)
    service, runner = core.service, core.runner
    assert runner is not None
    try:
        new = NewTask(
            source=TaskSource.LABEL,
            repo="octo/app",
            installation_id=1,
            issue_number=5,
            requester="alice",
            instructions="",
            budget_usd=5.0,
            title="Fix bug 5",
        )
        task = await service.submit(new)  # the "queued" comment hits a 502
        assert task is not None and task.tracking_comment_id is None
        await runner.fill()
        await runner.drain()
        done = await store.get_task(task.id)
        assert done is not None and done.state is TaskState.SUCCEEDED
        tracking = [c for c in forge.comments if c[2].startswith(TRACKING_MARKER)]
        assert len(tracking) == 1, f"{len(tracking)} tracking comments for one task"
    finally:
        await runner.stop()
        await store.close()


@dataclass
class Live:
    """A real ghapp process against a TrapGitHub, the scripted API and the real CLI."""

    stack: Stack
    api: ScriptedAnthropic
    ghapp: GhappProcess

    @property
    def github(self) -> TrapGitHub:
        assert isinstance(self.stack.github, TrapGitHub)
        return self.stack.github

    @property
    def db(self) -> Path:
        return self.stack.settings.sqlite_path

    async def label(self, scenario: str) -> int:
        """Seed an issue and deliver its label event; returns the issue number."""
        title, body = "Spelling error", f"Fix it. [scenario:{scenario}]"
        number = self.github.add_issue(REPO, title, body)
        data = payload("issues.labeled", id=1)
        data["label"]["name"] = "mc-auto"
        data["issue"].update(number=number, title=title, body=body)
        assert await self.stack.deliver("issues", data, f"bug-{number}") == 202
        return number

    async def finished(self) -> sqlite3.Row:
        """The only task, once it is terminal."""

        def done() -> bool:
            rows = read_db(self.db, "SELECT state FROM tasks")
            return bool(rows) and rows[0]["state"] in ("succeeded", "failed", "cancelled")

        await eventually(done, within=90)
        [task] = read_db(self.db, "SELECT * FROM tasks")
        return task


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    user, claude = require_sandbox_user(), require_claude()
    api = ScriptedAnthropic(slow_turn_s=0.5)
    base = await api.start()
    stack = await make_trap_stack(
        user,
        str(claude),
        anthropic_env={"ANTHROPIC_BASE_URL": base, "ANTHROPIC_API_KEY": "sk-ant-test-key"},
    )
    port = free_port()
    stack.external_url = f"http://127.0.0.1:{port}/api/github/webhooks"
    ghapp = GhappProcess(ghapp_env(stack, port), stack.root, stack.root / "ghapp.log")
    try:
        yield Live(stack, api, ghapp)
    finally:
        await ghapp.stop()
        kill_agents(stack.settings.data_dir)
        if stack.session is not None:
            await stack.session.close()
            stack.session = None
        await api.close()
        await close_stack(stack)


@pytest.mark.cli
@pytest.mark.sandbox
async def test_one_tracking_comment_after_a_kill_right_after_it_was_created(live: Live) -> None:
    # SIGKILL the moment GitHub created the first ("queued") tracking comment.
    trap = live.github.arm(
        "first", "POST", rf"/repos/{REPO}/issues/\d+/comments", "after", live.ghapp.kill
    )
    await live.ghapp.start()
    await live.label("commit")
    await eventually(trap.done.is_set, within=30)  # killed, not only tripped
    await live.ghapp.start()
    task = await live.finished()
    assert task["state"] == "succeeded", task["failure_reason"]
    tracking = [c.body for c in live.github.comments.values() if c.body.startswith(TRACKING_MARKER)]
    assert len(tracking) == 1, f"{len(tracking)} tracking comments for one task:\n" + "\n".join(
        b.splitlines()[3] for b in tracking
    )


@pytest.mark.cli
@pytest.mark.sandbox
async def test_the_spend_of_an_attempt_killed_with_ghapp_is_booked(live: Live) -> None:
    await live.ghapp.start()
    await live.label("slow")

    def second_turn() -> bool:  # the first paid turn is in the attempt's log
        return sum(1 for body in live.api.requests if body.get("tools")) >= 2

    await eventually(second_turn, within=60)
    # the first response ended before the kill: the proxy booked it then, not at the end
    query = "SELECT attempt, cost_usd FROM ledger WHERE task_id = ?"
    await eventually(lambda: bool(read_db(live.db, query, (1,))), within=10)
    ledger = read_db(live.db, query, (1,))
    assert {row["attempt"]: row["cost_usd"] for row in ledger} == {1: pytest.approx(0.0015)}
    await live.ghapp.kill()
    await live.ghapp.start()
    task = await live.finished()
    assert task["state"] == "succeeded" and task["attempt"] == 2, dict(task)
    ledger = read_db(live.db, "SELECT attempt, cost_usd FROM ledger WHERE task_id = ?", (1,))
    booked = {row["attempt"]: row["cost_usd"] for row in ledger}
    # 100 input and 40 output tokens a response on claude-opus-4-8: $0.0015 each
    assert booked[1] == pytest.approx(0.0015), booked
    assert booked[2] == pytest.approx(3 * 0.0015), booked
    assert task["cost_usd"] == pytest.approx(sum(booked.values()))
