"""The runner's decisions over in-memory ports and the real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ghapp.bootstrap import Crew, build_core
from ghapp.core.model import NewTask, Task, TaskSource, TaskState
from ghapp.core.ports import AgentOutcome
from ghapp.core.runner import RunnerConfig, TaskRunner
from ghapp.core.tasks import Limits, TaskService
from ghapp.core.transitions import WAITING_FOR_BUDGET
from ghapp.store.sqlite import SqliteTaskStore
from tests.fakes.memory import (
    FakeClock,
    MemoryForge,
    MemoryLogs,
    MemoryVcs,
    RecordingMessenger,
    ScriptedWorker,
)
from tests.fakes.stack import eventually


@dataclass
class Rig:
    store: SqliteTaskStore
    forge: MemoryForge
    vcs: MemoryVcs
    worker: ScriptedWorker
    messenger: RecordingMessenger
    clock: FakeClock
    service: TaskService
    runner: TaskRunner

    async def queue(self, issue: int = 5, budget: float = 5.0, **kw: object) -> Task:
        new = NewTask(
            source=TaskSource.LABEL,
            repo="octo/app",
            installation_id=1,
            issue_number=issue,
            requester="alice",
            instructions="",
            budget_usd=budget,
            title=f"Fix bug {issue}",
            **kw,  # type: ignore[arg-type]
        )
        task = await self.service.submit(new)
        assert task is not None
        return task

    async def run_all(self) -> None:
        await self.runner.fill()
        await self.runner.drain()

    async def get(self, task_id: int) -> Task:
        task = await self.store.get_task(task_id)
        assert task is not None
        return task


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = SqliteTaskStore(tmp_path / "db.sqlite3")
    await store.migrate()
    forge, clock, messenger = MemoryForge({"alice": "write"}), FakeClock(), RecordingMessenger()
    vcs = MemoryVcs(tmp_path / "work")
    worker = ScriptedWorker(vcs)
    config = RunnerConfig(
        log_dir=tmp_path / "logs", daily_budget_usd=10, cancel_poll_s=0.05, progress_s=0.05
    )
    core = build_core(
        store, forge, clock, Limits(10, 5, 10), messenger, Crew(vcs, worker, config, MemoryLogs())
    )
    runner = core.runner
    assert runner is not None
    yield Rig(store, forge, vcs, worker, messenger, clock, core.service, runner)
    await runner.stop()
    await store.close()


async def test_completed_run_with_commits_opens_a_pr_that_closes_the_issue(rig: Rig) -> None:
    task = await rig.queue()
    await rig.run_all()
    done = await rig.get(task.id)
    assert done.state is TaskState.SUCCEEDED and done.pr_url and done.cost_usd == 0.5
    body = rig.forge.pr_bodies[done.pr_number or 0]
    assert "Closes #5" in body and "did it" in body and f"task #{task.id}" in body
    assert rig.vcs.pushed == [("mc/5-task", 1)]
    assert ("issue:5", "eyes") in rig.forge.reactions and (
        "issue:5",
        "rocket",
    ) in rig.forge.reactions
    assert done.pr_url in rig.forge.edits[-1][1]  # the tracking comment links the PR
    assert rig.messenger.kinds() == ["queued", "started", "pr_opened"]
    assert rig.vcs.cleaned == 1


async def test_hosts_the_egress_proxy_refused_are_shown_to_the_maintainer(rig: Rig) -> None:
    blocked = "blocked: evil.example ×3, 10.0.0.1 ×1"
    rig.worker.outcome = AgentOutcome(True, 0.5, "did it", egress_blocked=blocked)
    task = await rig.queue()
    await rig.run_all()
    done = await rig.get(task.id)
    assert blocked in rig.forge.pr_bodies[done.pr_number or 0]
    assert f"Network: {blocked}" in rig.forge.edits[-1][1]  # the final tracking comment
    rig.worker.outcome = AgentOutcome(False, 0.1, reason="API Error", egress_blocked=blocked)
    failed = await rig.queue(issue=6)
    await rig.run_all()
    assert (await rig.get(failed.id)).state is TaskState.FAILED
    assert f"Network: {blocked}" in rig.forge.edits[-1][1]


async def test_success_claim_without_commits_fails_and_pushes_nothing(rig: Rig) -> None:
    rig.worker.make_commits = 0
    task = await rig.queue()
    await rig.run_all()
    done = await rig.get(task.id)
    assert done.state is TaskState.FAILED and done.failure_reason == "the agent made no commits"
    assert rig.vcs.pushed == [] and rig.forge.prs == []
    assert ("issue:5", "confused") in rig.forge.reactions
    assert "retry" in rig.forge.edits[-1][1]


async def test_uncommitted_work_is_rescued_and_counts(rig: Rig) -> None:
    rig.worker.make_commits, rig.worker.leave_dirty = 0, True
    task = await rig.queue()
    await rig.run_all()
    assert (await rig.get(task.id)).state is TaskState.SUCCEEDED
    assert "WIP: auto-rescue" in rig.forge.pr_bodies[500]


async def test_failed_run_pushes_its_work_but_opens_no_pr(rig: Rig) -> None:
    rig.worker.outcome = AgentOutcome(False, 1.25, reason="API Error: 500", is_error=True)
    task = await rig.queue()
    await rig.run_all()
    done = await rig.get(task.id)
    assert done.state is TaskState.FAILED and "API Error: 500" in (done.failure_reason or "")
    assert "work so far is on branch mc/5-task" in (done.failure_reason or "")
    assert rig.vcs.pushed and rig.forge.prs == []
    assert done.cost_usd == 1.25


async def test_cancel_while_running_stops_agent_and_keeps_work(rig: Rig) -> None:
    rig.worker.block = True
    task = await rig.queue()
    await rig.runner.fill()
    await asyncio.wait_for(rig.worker.started.wait(), 5)
    await rig.service.cancel(task.id, "cancelled by @alice")
    await rig.runner.drain()
    done = await rig.get(task.id)
    assert done.state is TaskState.CANCELLED and done.cost_usd == 0.25
    assert rig.vcs.pushed and rig.forge.prs == []


async def test_cancel_recorded_in_store_is_noticed_without_a_wakeup(rig: Rig) -> None:
    rig.worker.block = True
    task = await rig.queue()
    await rig.runner.fill()
    await asyncio.wait_for(rig.worker.started.wait(), 5)
    await rig.store.cancel(task.id, rig.clock.now(), "from another process")
    await asyncio.wait_for(rig.runner.drain(), 5)
    assert (await rig.get(task.id)).state is TaskState.CANCELLED


async def test_budget_wait_keeps_task_queued_until_the_day_turns(rig: Rig) -> None:
    first = await rig.queue(issue=1, budget=9)
    await rig.run_all()
    assert (await rig.get(first.id)).cost_usd == 0.5
    rig.worker.outcome = AgentOutcome(True, 9.0, "expensive")
    second = await rig.queue(issue=2, budget=9)
    await rig.run_all()  # spent 0.5 + 9 -> 9.5 of 10
    third = await rig.queue(issue=3, budget=5)
    await rig.run_all()
    waiting = await rig.get(third.id)
    assert waiting.state is TaskState.QUEUED and waiting.wait_reason == WAITING_FOR_BUDGET
    assert "budget_wait" in rig.messenger.kinds() and "budget_80" in rig.messenger.kinds()
    assert any(WAITING_FOR_BUDGET in body for _, body in rig.forge.edits)
    assert (await rig.get(second.id)).state is TaskState.SUCCEEDED
    rig.clock.advance(days=1)
    await rig.run_all()
    assert (await rig.get(third.id)).state is TaskState.SUCCEEDED


async def test_workspace_failure_fails_the_task_cleanly(rig: Rig) -> None:
    rig.forge.fail_repository = RuntimeError("GitHub is down")
    task = await rig.queue()
    await rig.run_all()
    done = await rig.get(task.id)
    assert done.state is TaskState.FAILED and "GitHub is down" in (done.failure_reason or "")
    assert await rig.store.count(TaskState.RUNNING) == 0


async def test_restart_requeues_orphans_and_continues_on_their_branch(rig: Rig) -> None:
    task = await rig.queue()
    claim = await rig.store.claim_next(rig.clock.now(), 10)
    assert claim.task is not None and claim.task.id == task.id
    await rig.store.update(task.id, branch="mc/5-task")
    rig.vcs.existing_branch_commits["mc/5-task"] = ["aaa111 earlier work"]
    await rig.runner.start()  # what a fresh process does
    await asyncio.wait_for(rig.worker.started.wait(), 5)
    await rig.runner.drain()
    done = await rig.get(task.id)
    assert done.attempt == 2 and done.state is TaskState.SUCCEEDED
    assert "You were interrupted" in rig.worker.requests[0].prompt
    assert "aaa111 earlier work" in rig.worker.requests[0].prompt
    assert len(rig.forge.prs) == 1


async def test_existing_pr_is_updated_not_duplicated(rig: Rig) -> None:
    task = await rig.queue()
    await rig.run_all()
    await rig.service.retry(task.id)  # a succeeded task cannot be retried
    assert (await rig.get(task.id)).attempt == 1
    again = await rig.queue(issue=5)
    await rig.store.update(again.id, branch="mc/5-task")
    await rig.run_all()
    assert len(rig.forge.prs) == 1
    assert (await rig.get(again.id)).pr_number == (await rig.get(task.id)).pr_number


async def test_concurrency_never_runs_two_tasks_of_one_issue(rig: Rig) -> None:
    rig.worker.block = True
    a = await rig.queue(issue=1)
    assert (
        await rig.service.submit(NewTask(TaskSource.COMMENT, "octo/app", 1, 1, "bob", "more", 5))
        is None
    )
    await rig.runner.fill()
    assert rig.runner.running_ids == [a.id]
    await rig.service.cancel(a.id, "stop")
    await rig.runner.drain()


async def test_tracking_comment_shows_progress_and_failure_log(rig: Rig) -> None:
    rig.worker.block = True

    async def book(task_id: int, attempt: int, cost: float) -> None:
        await rig.store.add_spend(task_id, attempt, rig.clock.now(), cost)

    rig.worker.book = book  # metered while running: the comment shows it
    task = await rig.queue()
    await rig.runner.fill()
    await asyncio.wait_for(rig.worker.started.wait(), 5)

    def shows_cost() -> bool:
        running = [body for _, body in rig.forge.edits if "State: running" in body]
        return any("Cost (so far): $0.75" in body for body in running)

    await eventually(shows_cost, within=10)
    rig.worker.block, rig.worker.make_commits = False, 0
    await rig.service.cancel(task.id, "stop")
    await rig.runner.drain()
    rig.worker.outcome = AgentOutcome(False, 0.1, reason="API Error: 500")
    again = await rig.queue(issue=6)
    await rig.run_all()
    assert (await rig.get(again.id)).state is TaskState.FAILED
    assert "$ git commit" in rig.forge.edits[-1][1]  # the log tail is in the failure report
