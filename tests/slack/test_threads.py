"""Task notices as Slack threads with buttons; Retry-After; Slack down; Telegram beside Slack."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from ghapp.core.model import TaskState
from ghapp.core.ports import Notice, NoticeKind
from tests.conftest import payload
from tests.fakes.memory import ScriptedWorker
from tests.fakes.slack import OTHER, FakeSlack
from tests.fakes.stack import Stack, close_stack, eventually
from tests.fakes.telegram import FakeTelegram
from tests.slack.conftest import SlackRig, slack_stack, with_project


def labeled() -> dict[str, Any]:
    data = payload("issues.labeled", id=1)
    data["label"]["name"] = "mc-auto"
    return data


async def state_is(rig: SlackRig, task_id: int, state: TaskState) -> bool:
    task = await rig.app.store.get_task(task_id)
    return task is not None and task.state is state


async def test_a_task_is_one_thread_and_its_buttons_work(
    stack: Stack, fake_slack: FakeSlack
) -> None:
    rig = SlackRig(stack, fake_slack)
    worker = ScriptedWorker(block=True)
    await stack.start(worker=worker)
    await with_project(rig.app)
    await rig.command("task hello: tidy the README")
    parent = await rig.parent(1)
    # Queued or already started (the parent is updated in place): Cancel comes first.
    assert parent.buttons()[0] == "mc_cancel" and "tidy the README" in parent.all_text()
    await asyncio.wait_for(worker.started.wait(), 10)
    result = {"type": "result", "subtype": "success", "is_error": False, "result": "half <done>"}
    worker.requests[0].log_path.write_text(json.dumps(result) + "\n")
    await fake_slack.wait_for(lambda: any("started" in m.text for m in fake_slack.thread(parent)))
    await fake_slack.wait_for(lambda: "running" in parent.all_text())
    await fake_slack.wait_for(lambda: parent.buttons() == ["mc_cancel", "mc_logs"])
    # Someone in another channel cannot press it; nothing changes.
    refused = await rig.press("cancel", 1, message=parent, channel=OTHER)
    assert refused.ephemeral and "does not take commands" in refused.text
    assert await state_is(rig, 1, TaskState.RUNNING)
    # Cancel stops the running task; the thread says so and the parent offers Retry and Logs.
    stopping = await rig.press("cancel", 1, message=parent)
    assert stopping.ephemeral and stopping.text.startswith("Stopping task #1")
    await eventually(lambda: state_is(rig, 1, TaskState.CANCELLED))
    await fake_slack.wait_for(lambda: parent.buttons() == ["mc_retry", "mc_logs"])
    await rig.idle()
    replies = [m.text for m in fake_slack.thread(parent)]
    assert any("cancelled" in r for r in replies), replies
    assert "cancelled" in parent.all_text() and parent.updates >= 2
    logs = await rig.press("logs", 1, message=parent)
    assert logs.ephemeral and logs.text.startswith("Task #1 log, attempt 1 (cancelled)")
    assert "```" in logs.raw and "half &lt;done&gt;" in logs.raw  # a code block, escaped
    retried = await rig.press("retry", 1, message=parent)
    assert retried.text.startswith("Task #1 queued again as attempt 2")
    await fake_slack.wait_for(lambda: "mc_cancel" in parent.buttons())
    # One thread for the task: every later notice is a reply, never a second parent.
    await rig.idle()
    assert [m.ts for m in fake_slack.parents()] == [parent.ts]
    await rig.press("cancel", 1, message=parent)
    await eventually(lambda: state_is(rig, 1, TaskState.CANCELLED))


async def test_budget_notices_are_channel_messages(stack: Stack, fake_slack: FakeSlack) -> None:
    rig = SlackRig(stack, fake_slack)
    await stack.start(worker=ScriptedWorker())
    assert rig.app.slack is not None
    await rig.app.slack.notify(Notice(NoticeKind.BUDGET_80, "Daily budget: $40.00 of $50.00 spent"))
    await rig.idle()
    [message] = fake_slack.messages
    assert message.thread_ts is None and "$40.00 of $50.00" in message.text


async def test_retry_after_is_honoured(stack: Stack, fake_slack: FakeSlack) -> None:
    rig = SlackRig(stack, fake_slack)
    await stack.start(worker=ScriptedWorker())
    assert rig.app.slack is not None
    fake_slack.rate_limits = [1.0]
    started = time.monotonic()
    await rig.app.slack.notify(Notice(NoticeKind.BUDGET_80, "Daily budget: $40.00 of $50.00 spent"))
    await rig.idle()
    [message] = fake_slack.messages
    assert message.at - started >= 1.0  # not before Retry-After
    assert len(fake_slack.method_calls("chat.postMessage")) == 2


async def test_slack_down_never_blocks_ghapp(stack: Stack, fake_slack: FakeSlack) -> None:
    rig = SlackRig(stack, fake_slack)
    worker = ScriptedWorker()
    await stack.start(worker=worker)
    await fake_slack.down("refuse")
    started = time.monotonic()
    assert await stack.deliver("issues", labeled()) == 202
    assert time.monotonic() - started < 1.0
    await eventually(lambda: state_is(rig, 1, TaskState.FAILED))  # no commits: it ran through
    assert worker.requests
    assert fake_slack.messages == []
    await fake_slack.up()
    status = await rig.command("status")  # Slack back: commands and notices work again
    assert "task #1" in status.text.lower() or "#1 " in status.text


async def test_notices_go_to_telegram_and_slack(fake_slack: FakeSlack) -> None:
    telegram = FakeTelegram()
    await telegram.start()
    s = await slack_stack(
        fake_slack,
        telegram_token=telegram.token,
        telegram_chat_ids=(1001,),
        telegram_api_url=telegram.base_url,
    )
    try:
        await s.start(worker=ScriptedWorker())
        assert await s.deliver("issues", labeled()) == 202
        await telegram.wait_text("Task #1 queued", 1001)
        rig = SlackRig(s, fake_slack)
        parent = await rig.parent(1)
        assert "Hello-World#1" in parent.all_text()
        await telegram.wait_text("Task #1 failed", 1001)
        await fake_slack.wait_for(
            lambda: any("failed" in m.text for m in fake_slack.thread(parent))
        )
    finally:
        await close_stack(s)
        await telegram.stop()


async def test_a_restart_keeps_the_task_in_its_thread(stack: Stack, fake_slack: FakeSlack) -> None:
    """The parent is in the store, so another process (or this one restarted) replies to it."""
    rig = SlackRig(stack, fake_slack)
    await stack.start(worker=ScriptedWorker())
    await with_project(rig.app)
    await rig.command("task hello: tidy the README")
    await eventually(lambda: state_is(rig, 1, TaskState.FAILED))  # no commits
    parent = await rig.parent(1)
    await rig.idle()
    await stack.stop()
    await stack.start(worker=ScriptedWorker())
    retried = await rig.command("retry 1")
    assert retried.text.startswith("Task #1 queued again as attempt 2")
    await eventually(lambda: state_is(rig, 1, TaskState.FAILED))
    await rig.idle()
    assert [m.ts for m in fake_slack.parents()] == [parent.ts]
    replies = [m.text for m in fake_slack.thread(parent)]
    assert any("re-queued (attempt 2)" in r for r in replies), replies
    assert "attempt 2" in parent.all_text()
