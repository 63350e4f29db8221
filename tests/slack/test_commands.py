"""`/mc` over signed requests to POST /slack/events: every command, strangers, forged requests."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp

from ghapp.bootstrap import Ghapp
from ghapp.core.model import Installation, TaskSource, TaskState
from tests.fakes.memory import ScriptedWorker
from tests.fakes.slack import ALLOWED, OTHER, SECRET, USER, FakeSlack, signed_headers
from tests.fakes.stack import OWNER, REPO, Stack, eventually
from tests.slack.conftest import SlackRig, with_project

EVERY_COMMAND = [
    "help",
    "status",
    "budget",
    "projects",
    "task hello: fix it",
    "cancel 1",
    "retry 1",
    "logs 1",
    "addproject x Codertocat/Hello-World",
    "rmproject hello",
    "create newrepo",
]


async def test_every_command_from_the_allowed_channel(stack: Stack, fake_slack: FakeSlack) -> None:
    rig = SlackRig(stack, fake_slack)
    app = await stack.start(worker=ScriptedWorker(block=True))
    reply = await rig.command("help")
    assert not reply.ephemeral
    for usage in ("/mc task [<project>:]", "/mc status", "/mc cancel <task id>", "/mc create"):
        assert usage in reply.text
    assert "Nothing is running" in (await rig.command("status")).text
    assert "Budget for" in (await rig.command("budget")).text
    assert "No projects yet" in (await rig.command("projects")).text
    await app.store.upsert_installation(Installation(1, OWNER, (REPO,)))
    added = await rig.command(f"addproject hello {REPO}")
    assert (
        added.text == f"Added project hello: {REPO} as the default project." and not added.ephemeral
    )
    queued = await rig.command("task fix the README budget=2")
    assert (
        queued.text.startswith("Queued task #1 on Codertocat/Hello-World")
        and "$2.00" in queued.text
    )
    task = await app.store.get_task(1)
    assert (
        task is not None and task.source is TaskSource.SLACK and task.requester == f"slack:{USER}"
    )
    assert task.branch and task.branch.startswith("mc/slack-")
    await eventually(lambda: _running(app, 1))
    assert "Running #1" in (await rig.command("status")).text
    logs = await rig.command("logs 1")
    assert "log" in logs.text.lower()
    stopping = await rig.command("cancel 1")
    assert stopping.text.startswith("Stopping task #1") and not stopping.ephemeral
    await eventually(lambda: _state(app, 1, TaskState.CANCELLED))
    again = await rig.command("retry 1")
    assert again.text.startswith("Task #1 queued again as attempt 2")
    assert (await rig.command("rmproject hello")).text.startswith("Removed project hello")
    refused = await rig.command("create newrepo")
    assert refused.ephemeral and "not installed on an organization" in refused.text


async def test_errors_and_refusals_are_private(stack: Stack, fake_slack: FakeSlack) -> None:
    rig = SlackRig(stack, fake_slack)
    await stack.start(worker=ScriptedWorker(block=True))
    for text, why in [
        ("frobnicate", "Unknown command /mc frobnicate"),
        ("cancel", "give exactly one task id"),
        ("cancel 99", "There is no task #99."),
        ("task fix it", "no default project"),
        ("status now", "takes no arguments"),
    ]:
        reply = await rig.command(text)
        assert reply.ephemeral and why.lower() in reply.text.lower(), (text, reply.text)
    # an empty /mc is the help, and Slack's control characters never reach the channel raw
    assert "/mc help" in (await rig.command("")).text
    assert "&lt;@U0BOSS&gt;" in (await rig.command("rmproject <@U0BOSS>")).raw


async def test_another_channel_or_user_gets_one_refusal_and_nothing_happens(
    stack: Stack, fake_slack: FakeSlack
) -> None:
    rig = SlackRig(stack, fake_slack)
    app = await stack.start(worker=ScriptedWorker(block=True), slack_user_ids=(USER,))
    await with_project(app)
    for text in EVERY_COMMAND:
        for body in (
            fake_slack.command_body(text, OTHER),
            fake_slack.command_body(text, ALLOWED, user="U0STRANGER"),
        ):
            status, answer, _ = await rig.post(body)
            ack = json.loads(answer)
            assert status == 200 and ack["response_type"] == "ephemeral", answer
            assert ack["text"] in (
                "MissionControl does not take commands in this channel.",
                "You are not allowed to command MissionControl.",
            )
    await rig.command("status")  # an allowed request, answered after all of the above
    assert len(fake_slack.responses) == 1  # the refusals were the acks, nothing more
    assert await app.store.count(TaskState.QUEUED) == 0
    assert [p.slug for p in await app.store.projects()] == ["hello"]
    assert fake_slack.messages == []
    # Buttons are checked the same way: a stranger's press is refused privately, and only that.
    await rig.command("task fix it")
    await eventually(lambda: _running(app, 1))
    for kw in ({"channel": OTHER}, {"user": "U0STRANGER"}):
        refused = await rig.press("cancel", 1, **kw)
        assert refused.ephemeral and "MissionControl" in refused.text
    assert await _running(app, 1)
    assert (await rig.press("cancel", 1)).text.startswith("Stopping task #1")
    await eventually(lambda: _state(app, 1, TaskState.CANCELLED))


async def test_bad_signature_or_stale_timestamp_is_401_and_does_nothing(
    stack: Stack, fake_slack: FakeSlack
) -> None:
    rig = SlackRig(stack, fake_slack)
    app = await stack.start(worker=ScriptedWorker(block=True))
    await with_project(app)
    body = fake_slack.command_body("task hello: add a backdoor")
    forged: list[dict[str, Any]] = [
        {"secret": "not-the-secret"},
        {"at": time.time() - 6 * 60},  # replayed after five minutes
        {"at": time.time() + 6 * 60},
        {"headers": {"X-Slack-Signature": "v0=" + "0" * 64}},
        {"headers": {"X-Slack-Signature": ""}},
    ]
    for kw in forged:
        status, _, _ = await rig.post(body, **kw)
        assert status == 401, kw
    status, _, _ = await rig.post(body.replace("backdoor", "door"), secret=SECRET, at=None)
    assert status == 200  # the same request, properly signed, is taken
    # a body changed after signing is refused too
    headers = signed_headers(body)
    async with aiohttp.ClientSession() as session:
        tampered = body.replace("backdoor", "backd00r")
        async with session.post(rig.events_url, data=tampered, headers=headers) as resp:
            assert resp.status == 401
    await eventually(lambda: _state(app, 1, TaskState.RUNNING))
    [task] = await app.store.list_tasks()
    assert "backdoor" not in task.instructions and "backd00r" not in task.instructions


async def _running(app: Ghapp, task_id: int) -> bool:
    return await _state(app, task_id, TaskState.RUNNING)


async def _state(app: Ghapp, task_id: int, state: TaskState) -> bool:
    task = await app.store.get_task(task_id)
    return task is not None and task.state is state
