"""The whole product with the real Claude CLI as the sandbox user: label in, PR out."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ghapp.core.model import Task, TaskState, utc_day, utcnow
from tests.conftest import payload
from tests.fakes.anthropic import ScriptedAnthropic
from tests.fakes.sandbox import require_claude, require_sandbox_user
from tests.fakes.stack import REPO, Stack, close_stack, eventually, make_stack


@pytest.fixture
async def api() -> AsyncIterator[tuple[ScriptedAnthropic, str]]:
    server = ScriptedAnthropic()
    url = await server.start()
    yield server, url
    await server.close()


@pytest.fixture
async def stack(api: tuple[ScriptedAnthropic, str]) -> AsyncIterator[Stack]:
    user, claude = require_sandbox_user(), require_claude()
    base = api[1]
    s = await make_stack(
        worker_user=user,
        claude_bin=str(claude),
        anthropic_env={"ANTHROPIC_BASE_URL": base, "ANTHROPIC_API_KEY": "sk-ant-test-key"},
        soft_timeout_s=60,
        kill_after_s=5,
        grace_s=60,
    )
    yield s
    await close_stack(s)


def labeled(scenario: str) -> dict[str, Any]:
    data = payload("issues.labeled", id=1)
    data["label"]["name"] = "mc-auto"
    data["issue"]["body"] = f"Please fix the spelling. [scenario:{scenario}]"
    return data


async def finished(stack: Stack) -> Task:
    """Wait until the task is over and the issue has heard so (the state is written first)."""
    assert stack.app is not None
    store = stack.app.store
    ending = {TaskState.SUCCEEDED: "rocket", TaskState.FAILED: "confused"}

    async def done() -> bool:
        task = await store.latest_task_for(REPO, 1)
        if task is None or not task.state.terminal:
            return False
        told = ending.get(task.state)
        return told is None or (f"issue:{REPO}#1", told) in stack.reactions()

    await eventually(done, within=90)
    task = await store.latest_task_for(REPO, 1)
    assert task is not None
    return task


def git(stack: Stack, *args: str) -> str:
    repo = stack.root / "git" / f"{REPO}.git"
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout


async def test_label_to_pull_request_with_the_real_cli(stack: Stack) -> None:
    app = await stack.start()
    assert await stack.deliver("issues", labeled("commit")) == 202
    task = await finished(stack)
    assert task.state is TaskState.SUCCEEDED, task.failure_reason
    assert task.branch == "mc/1-spelling-error-in-the-readme-file"
    # The PR on GitHub: from the task branch, closing the issue, with the agent's summary.
    [pr] = [p for p in stack.github.pulls.values() if p.head == task.branch]
    assert pr.base == "main" and "Closes #1" in pr.body and "Done: added" in pr.body
    assert pr.title == "Spelling error in the README file"
    assert task.pr_url and task.pr_number == pr.number
    # The branch really holds the agent's commit on top of main.
    log = git(stack, "log", "--format=%s", f"main..{task.branch}")
    assert log.strip().splitlines() and "WIP" not in log
    # Cost reached the store and the day's ledger.
    assert task.cost_usd > 0
    budget = await app.store.budget(utc_day(utcnow()), 50)
    assert budget.spent_usd == pytest.approx(task.cost_usd)
    # The issue heard about it: eyes, then rocket, and the tracking comment links the PR.
    reactions = stack.reactions()
    assert (f"issue:{REPO}#1", "eyes") in reactions and (f"issue:{REPO}#1", "rocket") in reactions
    [tracking] = stack.comments(1)
    assert task.pr_url in tracking and "succeeded" in tracking
    # The checkout is gone, the log stays.
    assert not list((stack.settings.data_dir / "work").glob("*/repo"))
    assert task.log_path and (stack.settings.data_dir / "logs").is_dir()


async def test_claimed_success_without_commits_fails_with_no_pr(stack: Stack) -> None:
    await stack.start()
    assert await stack.deliver("issues", labeled("no_changes")) == 202
    task = await finished(stack)
    assert task.state is TaskState.FAILED
    assert task.failure_reason == "the agent made no commits"
    assert stack.github.pulls == {}
    assert "refs/heads/mc/" not in git(stack, "show-ref")
    [tracking] = stack.comments(1)
    assert "the agent made no commits" in tracking and "/mc retry" in tracking
    assert (f"issue:{REPO}#1", "confused") in stack.reactions()


async def test_uncommitted_work_is_rescued_into_the_pr(stack: Stack) -> None:
    await stack.start()
    assert await stack.deliver("issues", labeled("write_no_commit")) == 202
    task = await finished(stack)
    assert task.state is TaskState.SUCCEEDED, task.failure_reason
    assert git(stack, "log", "-1", "--format=%s", task.branch or "").strip() == "WIP: auto-rescue"


async def test_api_error_fails_with_the_reason_and_its_cost(stack: Stack) -> None:
    await stack.start()
    assert await stack.deliver("issues", labeled("api_error")) == 202
    task = await finished(stack)
    assert task.state is TaskState.FAILED
    assert "500" in (task.failure_reason or "") or "API Error" in (task.failure_reason or "")
    assert stack.github.pulls == {}


async def test_over_budget_run_is_booked_at_its_real_cost(
    stack: Stack, api: tuple[ScriptedAnthropic, str]
) -> None:
    api[0].set_usage("over_budget", input_tokens=2_000_000, output_tokens=100)
    app = await stack.start(task_budget_usd=1.0, task_budget_max_usd=10, daily_budget_usd=50)
    assert await stack.deliver("issues", labeled("over_budget")) == 202
    task = await finished(stack)
    assert task.state is TaskState.FAILED
    assert task.cost_usd > 1.0  # the CLI's cap is only checked between turns
    budget = await app.store.budget(utc_day(utcnow()), 50)
    assert budget.spent_usd == pytest.approx(task.cost_usd)
    # Its work (the Write) was rescued onto the branch, but no PR for a failed run.
    assert stack.github.pulls == {}


async def test_token_revoked_mid_run_is_replaced(stack: Stack) -> None:
    app = await stack.start()
    assert await stack.deliver("issues", labeled("commit")) == 202

    async def running() -> bool:
        task = await app.store.latest_task_for(REPO, 1)
        return task is not None and task.state is TaskState.RUNNING

    await eventually(running, within=30)
    stack.github.revoke_all_tokens()  # every cached installation token is now dead
    task = await finished(stack)
    assert task.state is TaskState.SUCCEEDED, task.failure_reason
    assert stack.github.token_mints >= 2
