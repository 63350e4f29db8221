"""The runner's gate over in-memory ports: the repository's settings, verify, on_red, paths."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ghapp.bootstrap import Crew, build_core
from ghapp.core.gate import DEFAULT_PROTECTED, OnRed, RepoSettings, SettingsInvalid
from ghapp.core.model import NewTask, Task, TaskSource, TaskState
from ghapp.core.ports import AgentOutcome
from ghapp.core.runner import RunnerConfig, TaskRunner
from ghapp.core.tasks import Limits, TaskService
from ghapp.store.sqlite import SqliteTaskStore
from tests.fakes.memory import (
    FakeClock,
    MemoryForge,
    MemoryLogs,
    MemorySettings,
    MemoryVcs,
    RecordingMessenger,
    ScriptedChecks,
    ScriptedWorker,
)
from tests.unit.test_publish import CLOSING, HOSTILE, MENTION, code_blocks, live_text


@dataclass
class Rig:
    store: SqliteTaskStore
    forge: MemoryForge
    vcs: MemoryVcs
    worker: ScriptedWorker
    messenger: RecordingMessenger
    settings: MemorySettings
    checks: ScriptedChecks
    service: TaskService
    runner: TaskRunner

    def use(self, **fields: object) -> None:
        base = {"present": True, "protected_paths": DEFAULT_PROTECTED, "verify": ("pytest -q",)}
        self.settings.settings = RepoSettings(**(base | fields))  # type: ignore[arg-type]

    async def run(self, budget: float = 5.0) -> Task:
        new = NewTask(
            source=TaskSource.LABEL,
            repo="octo/app",
            installation_id=1,
            issue_number=5,
            requester="alice",
            instructions="",
            budget_usd=budget,
            title="Fix bug 5",
        )
        task = await self.service.submit(new)
        assert task is not None
        await self.runner.fill()
        await self.runner.drain()
        done = await self.store.get_task(task.id)
        assert done is not None
        return done

    def body(self, task: Task) -> str:
        return self.forge.pr_bodies[task.pr_number or 0]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = SqliteTaskStore(tmp_path / "db.sqlite3")
    await store.migrate()
    forge, clock, messenger = MemoryForge({"alice": "write"}), FakeClock(), RecordingMessenger()
    vcs = MemoryVcs(tmp_path / "work")
    worker = ScriptedWorker(vcs)
    settings, checks = MemorySettings(), ScriptedChecks()
    config = RunnerConfig(log_dir=tmp_path / "logs", daily_budget_usd=10, cancel_poll_s=0.05)
    crew = Crew(vcs, worker, config, MemoryLogs(), checks)
    core = build_core(store, forge, clock, Limits(10, 5, 10), messenger, crew, settings)
    runner = core.runner
    assert runner is not None
    yield Rig(store, forge, vcs, worker, messenger, settings, checks, core.service, runner)
    await runner.stop()
    await store.close()


def fixed_after(rig: Rig, agent_runs: int) -> None:
    """The checks pass once the agent has run this many times."""
    rig.checks.passes = lambda command: len(rig.worker.requests) >= agent_runs


async def test_green_checks_open_a_ready_pr_with_the_checks_section(rig: Rig) -> None:
    rig.use(verify=("ruff check .", "pytest -q"))
    done = await rig.run()
    assert done.state is TaskState.SUCCEEDED
    [pr] = rig.forge.prs
    assert not pr.draft
    body = rig.body(done)
    assert "### Checks" in body and "✅ `ruff check .`: passed" in body and "`pytest -q`" in body
    assert rig.checks.runs == [(("ruff check .", "pytest -q"), False)]  # network off
    assert rig.vcs.resets == ["sha1"]  # the verified tree is the pushed tree
    tracking = [e[1] for e in rig.forge.edits]
    assert any("Checks: running verify (2 commands)" in t for t in tracking)
    assert "Checks: verify passed: 2 of 2 commands passed" in tracking[-1]


async def test_red_with_on_red_draft_opens_a_draft_with_the_failing_tail(rig: Rig) -> None:
    rig.use(on_red=OnRed.DRAFT)
    rig.checks.passes = lambda command: False
    done = await rig.run()
    assert done.state is TaskState.SUCCEEDED and len(rig.worker.requests) == 1
    [pr] = rig.forge.prs
    assert pr.draft
    body = rig.body(done)
    assert "❌ `pytest -q`: failed" in body and "<details>" in body
    assert "assert 1 == 2" in body and "this pull request is a draft" in body
    assert "verify failed" in rig.forge.edits[-1][1]


async def test_red_with_fix_gives_the_agent_the_failure_then_opens_ready(rig: Rig) -> None:
    rig.use(on_red=OnRed.FIX, verify_retries=2)
    fixed_after(rig, 2)
    done = await rig.run(budget=5.0)
    assert done.state is TaskState.SUCCEEDED
    first, second = rig.worker.requests
    assert "assert 1 == 2" not in first.prompt
    assert "The repository's checks failed" in second.prompt and "assert 1 == 2" in second.prompt
    assert second.budget_usd == pytest.approx(5.0 - 0.5)  # what is left of the task's cap
    assert done.cost_usd == pytest.approx(1.0)  # both runs are booked on the attempt
    [pr] = rig.forge.prs
    assert not pr.draft
    body = rig.body(done)
    assert "Verified 2 times" in body and "✅ `pytest -q`" in body
    assert "After the checks failed" in body
    assert "Tests were changed" not in body


async def test_a_follow_ups_checks_go_in_its_tracking_comment_not_the_pr_body(rig: Rig) -> None:
    rig.use(on_red=OnRed.DRAFT)
    first = await rig.run()
    assert first.pr_number is not None
    body = rig.body(first)
    rig.checks.passes = lambda command: False  # the follow-up's change breaks the tests
    follow = await rig.service.submit(
        NewTask(
            source=TaskSource.REVIEW,
            repo="octo/app",
            installation_id=1,
            issue_number=first.pr_number,
            requester="alice",
            instructions="rename it",
            budget_usd=5.0,
            is_pull_request=True,
            branch=first.branch,
            pr_number=first.pr_number,
            parent_task_id=first.id,
        )
    )
    assert follow is not None
    await rig.runner.fill()
    await rig.runner.drain()
    done = await rig.store.get_task(follow.id)
    assert done is not None and done.state is TaskState.SUCCEEDED
    assert rig.body(first) == body  # the description stays the first task's
    final = rig.forge.edits[-1][1]
    assert f"task #{follow.id}" in final
    assert "Checks: verify failed: 0 of 1 commands passed" in final
    assert "❌ `pytest -q`: failed" in final and "assert 1 == 2" in final


async def test_hostile_output_and_paths_stay_inert_in_the_pr_body(rig: Rig) -> None:
    rig.use(on_red=OnRed.DRAFT)
    rig.checks.passes = lambda command: False
    rig.checks.output = HOSTILE
    path = ".github/`x @maintainer Closes #3`.md"  # the agent names its own files
    rig.vcs.files["c0 agent work"] = [path]
    done = await rig.run()
    body = rig.body(done)
    live = live_text(body)
    assert CLOSING.findall(live) == ["Closes #5"], live  # ghapp's own, for its issue
    assert MENTION.findall(live) == ["@a"], live  # "Requested by @alice": ghapp's own
    assert any("Closes" in block for block in code_blocks(body))  # the output, as code


async def test_fix_that_changes_tests_to_pass_is_flagged(rig: Rig) -> None:
    rig.use(on_red=OnRed.FIX)
    fixed_after(rig, 2)
    rig.vcs.files["c0 agent work"] = ["tests/test_app.py"]  # every commit touches the test
    done = await rig.run()
    assert "⚠️ Tests were changed to pass: `tests/test_app.py`" in rig.body(done)


async def test_fix_gives_up_after_verify_retries_and_opens_a_draft(rig: Rig) -> None:
    rig.use(on_red=OnRed.FIX, verify_retries=2)
    rig.checks.passes = lambda command: False
    done = await rig.run()
    assert len(rig.worker.requests) == 3 and len(rig.checks.runs) == 3
    [pr] = rig.forge.prs
    assert pr.draft and "Verified 3 times" in rig.body(done)


async def test_fix_stops_when_the_budget_is_spent(rig: Rig) -> None:
    rig.use(on_red=OnRed.FIX, verify_retries=2)
    rig.checks.passes = lambda command: False
    rig.worker.outcome = AgentOutcome(True, 1.0, "did it")
    await rig.run(budget=1.0)
    assert len(rig.worker.requests) == 1  # nothing left of the $1 cap for a fix round


async def test_block_pushes_the_branch_but_opens_no_pr(rig: Rig) -> None:
    rig.use(on_red=OnRed.BLOCK)
    rig.checks.passes = lambda command: False
    done = await rig.run()
    assert done.state is TaskState.FAILED and rig.forge.prs == []
    assert rig.vcs.pushed == [("mc/5-task", 1)]
    assert "on_red is block" in (done.failure_reason or "")
    assert "mc/5-task" in (done.failure_reason or "")
    assert "assert 1 == 2" in rig.forge.edits[-1][1]  # the failing tail, on the issue


async def test_invalid_settings_refuse_the_task_before_any_agent_or_spend(rig: Rig) -> None:
    message = ".github/ghapp.yml:3: verfy: unknown key; the keys are version, ..."
    rig.settings.error = SettingsInvalid(message)
    done = await rig.run()
    assert done.state is TaskState.FAILED and done.failure_reason == message
    assert rig.worker.requests == [] and done.cost_usd == 0 and rig.vcs.pushed == []
    assert rig.settings.loads == 1  # not retried with a fresh token
    assert message in rig.forge.edits[-1][1]
    failed = [n for n in rig.messenger.notices if n.kind == "failed"]
    assert failed and message in failed[0].text


async def test_a_change_under_workflows_is_never_pushed(rig: Rig) -> None:
    rig.use(verify=())
    rig.vcs.files["c0 agent work"] = ["src/app.py", ".github/workflows/ci.yml"]
    done = await rig.run()
    assert done.state is TaskState.FAILED and rig.vcs.pushed == [] and rig.forge.prs == []
    assert "`.github/workflows/ci.yml`" in (done.failure_reason or "")


async def test_protected_paths_open_a_draft_listing_them(rig: Rig) -> None:
    rig.use(verify=(), protected_paths=(*DEFAULT_PROTECTED, "migrations/**"))
    rig.vcs.files["c0 agent work"] = ["src/app.py", "migrations/0002.sql", "CLAUDE.md"]
    done = await rig.run()
    [pr] = rig.forge.prs
    assert pr.draft
    body = rig.body(done)
    assert "### Protected paths" in body and "- `migrations/0002.sql`" in body
    assert "- `CLAUDE.md`" in body and "src/app.py" not in body.split("### Protected")[1]


async def test_failed_setup_fails_the_task_without_running_the_agent(rig: Rig) -> None:
    rig.use(setup=("pip install -e .",))
    rig.checks.passes = lambda command: command != "pip install -e ."
    done = await rig.run()
    assert done.state is TaskState.FAILED and rig.worker.requests == []
    assert "setup command `pip install -e .` failed" in (done.failure_reason or "")
    assert rig.checks.runs == [(("pip install -e .",), True)]  # network as the agent's
    assert "assert 1 == 2" in rig.forge.edits[-1][1]


async def test_the_files_limits_guidance_and_base_reach_the_agent(rig: Rig) -> None:
    rig.use(
        verify=(),
        model="claude-sonnet-4-5",
        max_turns=7,
        timeout_min=3,
        max_budget_usd=2,
        base_branch="develop",
        instructions="Always run make lint.",
        instructions_path="AGENTS.md",
    )
    await rig.run(budget=5.0)
    [request] = rig.worker.requests
    assert (request.model, request.max_turns, request.soft_timeout_s) == (
        "claude-sonnet-4-5",
        7,
        180,
    )
    assert request.budget_usd == 2
    assert "Always run make lint." in request.prompt and "AGENTS.md from the base branch" in (
        request.prompt
    )
    assert rig.vcs.bases == ["develop"]


async def test_config_command_shows_the_effective_settings(rig: Rig) -> None:
    rig.use(verify=("make test",), on_red=OnRed.DRAFT)
    text = await rig.service.describe_settings(1, "octo/app")
    assert "`make test`" in text and "draft" in text and "`.github/**`" in text
    rig.settings.error = SettingsInvalid(".github/ghapp.yml:2: on_red: Input should be ...")
    text = await rig.service.describe_settings(1, "octo/app")
    assert text.startswith("A task here would be refused: .github/ghapp.yml:2: on_red")
