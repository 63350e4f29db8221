"""Signed real payloads through the running server into tasks, with the permission rules."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ghapp.core.model import TaskState, utcnow
from ghapp.store.sqlite import SqliteTaskStore
from tests.conftest import payload, webhook_headers
from tests.fakes.memory import ScriptedWorker
from tests.fakes.stack import REPO, SECRET, Stack, close_stack, eventually, make_stack


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    s = await make_stack(worker_user=None)
    yield s
    await close_stack(s)


def labeled(
    label: str = "mc-auto", sender: str = "Codertocat", kind: str = "User"
) -> dict[str, Any]:
    data = payload("issues.labeled", id=1)
    data["label"]["name"] = label
    data["sender"]["login"], data["sender"]["type"] = sender, kind
    return data


def comment(body: str, sender: str = "Codertocat") -> dict[str, Any]:
    data = payload("issue_comment.created.with-installation")
    data["comment"]["body"] = body
    data["sender"]["login"] = sender
    return data


async def tasks(stack: Stack) -> list[Any]:
    assert stack.app is not None
    return await stack.app.store.list_tasks()


async def processed(stack: Stack) -> bool:
    assert stack.app is not None
    return await stack.app.store.pending_deliveries() == []


async def test_label_by_admin_queues_once_and_reacts(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "ghapp.github.webhooks")
    worker = ScriptedWorker(block=True)
    app = await stack.start(worker=worker)
    assert await stack.deliver("issues", labeled(), "d-label") == 202
    await eventually(lambda: worker.started.is_set())
    [task] = await tasks(stack)
    assert (task.repo, task.issue_number, task.requester) == (REPO, 1, "Codertocat")
    assert task.state is TaskState.RUNNING and task.delivery_id == "d-label"
    assert (f"issue:{REPO}#1", "eyes") in stack.reactions()
    assert any("MissionControl task #" in c for c in stack.comments(1))
    # GitHub redelivers the same delivery: answered 200, nothing new on GitHub.
    before = (stack.comments(1), stack.reactions(), len(stack.github.comment_edits))
    assert await stack.deliver("issues", labeled(), "d-label") == 200
    await eventually(lambda: processed(stack))
    assert (stack.comments(1), stack.reactions(), len(stack.github.comment_edits)) == before
    # A second trigger for the same issue while the first is active: recorded as ignored,
    # one reply naming the active task, no second task.
    assert await stack.deliver("issue_comment", comment("/mc also fix the typo"), "d-c") == 202
    await eventually(lambda: processed(stack))
    assert len(await tasks(stack)) == 1
    [reply] = stack.comments(1)[len(before[0]) :]
    assert f"Task #{task.id} is already queued or running here" in reply
    assert "/mc cancel" in reply
    assert "ignored: already active" in caplog.text
    await app.service.cancel(task.id, "test over")
    assert app.runner is not None
    await app.runner.drain()


async def test_read_only_sender_is_refused_once_and_nothing_spends(stack: Stack) -> None:
    await stack.start(worker=ScriptedWorker(block=True))
    stack.github.set_permission(REPO, "mallory", "read")
    assert await stack.deliver("issues", labeled(sender="mallory")) == 202
    await eventually(lambda: processed(stack))
    assert await tasks(stack) == []
    [reply] = stack.comments(1)
    assert reply.startswith("mallory: only people with write access")  # named, not @-mentioned
    assert stack.github.token_mints == 1  # the permission lookup, nothing more


async def test_triage_and_unknown_users_are_refused(stack: Stack) -> None:
    await stack.start(worker=ScriptedWorker(block=True))
    stack.github.set_permission(REPO, "tria", "triage")
    assert await stack.deliver("issue_comment", comment("/mc do it", "tria")) == 202
    assert await stack.deliver("issue_comment", comment("/mc do it", "nobody")) == 202
    await eventually(lambda: processed(stack))
    assert await tasks(stack) == []
    assert len(stack.comments(1)) == 2


async def test_bots_never_trigger_and_get_no_reply(stack: Stack) -> None:
    await stack.start(worker=ScriptedWorker(block=True))
    stack.github.set_permission(REPO, "mc-app[bot]", "admin")
    assert await stack.deliver("issues", labeled(sender="mc-app[bot]", kind="Bot")) == 202
    bot_comment = comment("/mc do it", "other[bot]")
    bot_comment["sender"]["type"] = "Bot"
    assert await stack.deliver("issue_comment", bot_comment) == 202
    await eventually(lambda: processed(stack))
    assert await tasks(stack) == [] and stack.comments(1) == []
    assert stack.github.requests_to(f"/repos/{REPO}/collaborators/mc-app[bot]/permission") == []


async def test_other_events_are_acknowledged_and_ignored(stack: Stack) -> None:
    await stack.start(worker=ScriptedWorker(block=True))
    assert await stack.deliver("issues", labeled("bug")) == 202
    assert await stack.deliver("ping", payload("ping.with-app_id")) == 202
    assert await stack.deliver("issue_comment", comment("nice work!")) == 202
    assert await stack.deliver("pull_request", payload("pull_request.opened")) == 202
    edited = payload("issue_comment.edited", id=1)
    edited["comment"]["body"] = "/mc now do something else"
    assert await stack.deliver("issue_comment", edited) == 202
    await eventually(lambda: processed(stack))
    assert await tasks(stack) == [] and stack.comments(1) == []
    assert stack.github.token_mints == 0


async def test_malformed_command_gets_help_and_changes_nothing(stack: Stack) -> None:
    await stack.start(worker=ScriptedWorker(block=True))
    assert await stack.deliver("issue_comment", comment("/mc fix it budget=999")) == 202
    await eventually(lambda: processed(stack))
    assert await tasks(stack) == []
    [reply] = stack.comments(1)
    assert "above the limit" in reply and "/mc status" in reply


async def test_deliveries_stored_before_a_crash_are_processed_on_start(stack: Stack) -> None:
    # The crash: deliveries were answered 202 and stored, then the process died.
    store = SqliteTaskStore(stack.settings.sqlite_path)
    stack.settings.data_dir.mkdir(parents=True, exist_ok=True)
    await store.migrate()
    await store.add_delivery("lost-1", "issues", json.dumps(labeled()).encode(), utcnow())
    await store.close()
    worker = ScriptedWorker(block=True)
    app = await stack.start(worker=worker)
    await eventually(lambda: worker.started.is_set())
    [task] = await tasks(stack)
    assert task.delivery_id == "lost-1" and await app.store.pending_deliveries() == []
    await app.service.cancel(task.id, "test over")
    assert app.runner is not None
    await app.runner.drain()


async def test_a_signed_body_that_is_not_json_is_recorded_as_unparsable(stack: Stack) -> None:
    """The web layer only checks the shape; the inbox parses (once) and records the error."""
    app = await stack.start()
    assert stack.session is not None
    body = json.dumps(labeled()).encode()[:-40] + b"}"  # cut short: an object's shape, no JSON
    headers = webhook_headers(SECRET, "issues", "d-cut", body)
    async with stack.session.post(stack.url, data=body, headers=headers) as response:
        assert response.status == 202
    await eventually(lambda: processed(stack))
    assert await tasks(stack) == []
    db = sqlite3.connect(stack.settings.sqlite_path)
    try:
        row = db.execute("SELECT error FROM deliveries WHERE id = 'd-cut'").fetchone()
    finally:
        db.close()
    assert row == ("unparsable body",) and app.inbox is not None


async def test_healthz_is_not_ok_when_no_task_can_run(stack: Stack) -> None:
    """A real worker set-up with no Claude CLI and no model credential: not "ok"."""
    app = await stack.start(claude_bin="/nonexistent/claude", anthropic_env={})
    assert stack.server is not None and stack.session is not None
    async with stack.session.get(stack.server.make_url("/healthz")) as resp:
        report = await resp.json()
        assert resp.status == 503 and report["ok"] is False
    assert "CLAUDE_BIN" in report["tasks"] and "ANTHROPIC_API_KEY" in report["tasks"]
    assert report["database"] == "ok" and report["runner"] == "ok"
    assert app.blockers
