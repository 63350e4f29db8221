"""From Slack to a pull request with the real Claude CLI as the sandbox user, and Slack down."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ghapp.core.model import Task, TaskState
from tests.fakes.anthropic import ScriptedAnthropic
from tests.fakes.sandbox import require_claude, require_sandbox_user
from tests.fakes.slack import FakeSlack
from tests.fakes.stack import REPO, Stack, close_stack, eventually
from tests.slack.conftest import SlackRig, slack_stack, with_project


@pytest.fixture
async def stack(fake_slack: FakeSlack) -> AsyncIterator[Stack]:
    user, claude = require_sandbox_user(), require_claude()
    api = ScriptedAnthropic()
    base = await api.start()
    s = await slack_stack(
        fake_slack,
        worker_user=user,
        claude_bin=str(claude),
        anthropic_env={"ANTHROPIC_BASE_URL": base, "ANTHROPIC_API_KEY": "sk-ant-test-key"},
        soft_timeout_s=60,
        kill_after_s=5,
        grace_s=60,
    )
    yield s
    await close_stack(s)
    await api.close()


async def finished(rig: SlackRig, task_id: int) -> Task:
    async def done() -> bool:
        task = await rig.app.store.get_task(task_id)
        return task is not None and task.state.terminal

    await eventually(done, within=90)
    task = await rig.app.store.get_task(task_id)
    assert task is not None
    return task


async def test_a_task_from_slack_runs_and_its_thread_gets_the_pr(
    stack: Stack, fake_slack: FakeSlack
) -> None:
    rig = SlackRig(stack, fake_slack)
    await stack.start()
    await with_project(rig.app)
    reply = await rig.command("task fix the spelling in the README [scenario:commit]")
    assert reply.text.startswith(f"Queued task #1 on {REPO}")
    parent = await rig.parent(1)
    task = await finished(rig, 1)
    assert task.state is TaskState.SUCCEEDED, task.failure_reason
    [pr] = [p for p in stack.github.pulls.values() if p.head == task.branch]
    url = task.pr_url
    assert url and "Requested from Slack" in pr.body and "Closes #" not in pr.body
    await fake_slack.wait_for(lambda: any(url in m.text for m in fake_slack.thread(parent)))
    await fake_slack.wait_for(lambda: f"#{pr.number}" in parent.all_text())
    assert "succeeded" in parent.all_text() and parent.buttons() == ["mc_logs"]
    assert [m.ts for m in fake_slack.parents()] == [parent.ts]


async def test_slack_down_during_a_task_loses_no_github_work(
    stack: Stack, fake_slack: FakeSlack
) -> None:
    rig = SlackRig(stack, fake_slack)
    await stack.start()
    await with_project(rig.app)
    await rig.command("task fix the spelling in the README [scenario:commit]")
    await rig.parent(1)
    await fake_slack.down("refuse")  # Slack goes away while the agent works
    task = await finished(rig, 1)
    assert task.state is TaskState.SUCCEEDED, task.failure_reason
    [pr] = [p for p in stack.github.pulls.values() if p.head == task.branch]
    assert pr.base == "main" and task.pr_number == pr.number and task.cost_usd > 0
    await fake_slack.up()
    status = await rig.command("status")  # back: commands are answered again
    assert task.pr_url is not None and task.pr_url in status.text
