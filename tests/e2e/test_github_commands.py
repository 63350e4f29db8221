"""/mc commands by allowed and refused senders, cancellation by label or close, installs,
and a delivery missed while ghapp was down coming back on start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from ghapp.core.model import TaskState
from tests.conftest import payload
from tests.fakes.memory import ScriptedWorker
from tests.fakes.stack import OWNER, REPO, SECRET, Stack, close_stack, eventually, make_stack


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    s = await make_stack(worker_user=None)
    s.github.set_permission(REPO, "reader", "read")
    yield s
    await close_stack(s)


def comment(stack: Stack, body: str, sender: str = OWNER) -> dict[str, Any]:
    data = payload("issue_comment.created.with-installation")
    data["comment"]["body"] = body
    data["comment"]["id"] = stack.github.add_comment(REPO, 1, body, user=sender)
    data["sender"]["login"] = sender
    return data


def labeled(action: str = "labeled") -> dict[str, Any]:
    data = payload("issues.labeled", id=1)
    data["action"] = action
    data["label"]["name"] = "mc-auto"
    return data


async def idle(stack: Stack) -> bool:
    assert stack.app is not None
    return await stack.app.store.pending_deliveries() == []


def replies(stack: Stack) -> list[str]:
    """What ghapp itself wrote on issue #1 (everything but the humans' comments)."""
    return [c.body for c in stack.github.comments_on(REPO, 1) if not c.body.startswith("/mc")]


async def test_commands_by_allowed_and_refused_senders(stack: Stack) -> None:
    worker = ScriptedWorker(block=True)
    app = await stack.start(worker=worker)
    # help and status are open to anyone who can comment
    assert await stack.deliver("issue_comment", comment(stack, "/mc help", "reader")) == 202
    assert await stack.deliver("issue_comment", comment(stack, "/mc status", "reader")) == 202
    await eventually(lambda: idle(stack))
    help_reply, status_reply = replies(stack)
    assert "/mc retry" in help_reply and "budget=" in help_reply
    assert "no task" in status_reply
    # a reader may not start, cancel or retry
    for text in ("/mc fix it", "/mc cancel", "/mc retry"):
        assert await stack.deliver("issue_comment", comment(stack, text, "reader")) == 202
    await eventually(lambda: idle(stack))
    assert await app.store.list_tasks() == []
    assert sum("only people with write access" in r for r in replies(stack)) == 3
    # a writer starts a task with a budget, sees its status, cancels it and retries it
    await stack.deliver("issue_comment", comment(stack, "/mc fix the typo budget=7"))
    await eventually(worker.started.is_set)
    [task] = await app.store.list_tasks()
    assert task.budget_usd == 7 and task.instructions == "fix the typo"
    await stack.deliver("issue_comment", comment(stack, "/mc status", "reader"))
    await eventually(lambda: idle(stack))
    assert f"Task #{task.id} is running" in replies(stack)[-1]
    await stack.deliver("issue_comment", comment(stack, "/mc cancel"))
    await eventually(lambda: idle(stack))
    assert app.runner is not None
    await app.runner.drain()
    cancelled = await app.store.get_task(task.id)
    assert cancelled is not None and cancelled.state is TaskState.CANCELLED
    tracking = next(r for r in replies(stack) if "MissionControl task #" in r)
    assert "State: cancelled" in tracking
    worker.block = False
    await stack.deliver("issue_comment", comment(stack, "/mc retry"))

    async def retried() -> bool:
        current = await app.store.get_task(task.id)
        return current is not None and current.attempt == 2 and current.state.terminal

    await eventually(retried)
    # the stand-in agent made no commits, so the retry fails honestly
    again = await app.store.get_task(task.id)
    assert again is not None and again.failure_reason == "the agent made no commits"


async def test_removing_the_label_mid_run_cancels_and_says_so(stack: Stack) -> None:
    worker = ScriptedWorker(block=True)
    app = await stack.start(worker=worker)
    await stack.deliver("issues", labeled())
    await eventually(worker.started.is_set)
    assert await stack.deliver("issues", labeled("unlabeled")) == 202
    await eventually(lambda: idle(stack))
    assert app.runner is not None
    await app.runner.drain()
    [task] = await app.store.list_tasks()
    assert task.state is TaskState.CANCELLED
    assert task.failure_reason and "label was removed" in task.failure_reason
    [tracking] = replies(stack)
    assert "State: cancelled" in tracking and "label was removed" in tracking


async def test_closing_the_issue_cancels_a_queued_task(stack: Stack) -> None:
    worker = ScriptedWorker(block=True)
    app = await stack.start(worker=worker)
    other = labeled()
    other["issue"]["number"] = stack.github.add_issue(REPO, "Another bug")
    await stack.deliver("issues", other, "other-issue")  # runs and keeps the only slot
    await eventually(worker.started.is_set)
    await stack.deliver("issues", labeled())
    await eventually(lambda: idle(stack))
    task = await app.store.active_task_for(REPO, 1)
    assert task is not None and task.state is TaskState.QUEUED
    closed = payload("issues.closed", id=1)
    closed["repository"]["full_name"], closed["issue"]["number"] = REPO, 1
    stack.github.set_permission(REPO, closed["sender"]["login"], "write")  # a maintainer
    await stack.deliver("issues", closed)
    await eventually(lambda: idle(stack))
    done = await app.store.get_task(task.id)
    assert done is not None and done.state is TaskState.CANCELLED
    assert "closed" in (done.failure_reason or "")


async def test_installation_events_keep_the_repository_table(stack: Stack) -> None:
    app = await stack.start(worker=ScriptedWorker(block=True))
    created = payload("installation.created")
    await stack.deliver("installation", created)
    added = payload("installation_repositories.added")
    added["installation"]["id"] = created["installation"]["id"]
    await stack.deliver("installation_repositories", added)
    await eventually(lambda: idle(stack))
    [inst] = await app.store.installations()
    expected = {r["full_name"] for r in created["repositories"]}
    expected |= {r["full_name"] for r in added["repositories_added"]}
    assert inst.id == created["installation"]["id"] and set(inst.repos) == expected
    deleted = payload("installation.deleted")
    deleted["installation"]["id"] = inst.id
    await stack.deliver("installation", deleted)
    await eventually(lambda: idle(stack))
    assert await app.store.installations() == []


async def test_a_delivery_missed_while_down_is_redelivered_on_start(stack: Stack) -> None:
    # GitHub tried to deliver a trigger while ghapp was down: the attempt failed.
    stack.github.add_hook_delivery(
        "missed-guid",
        "issues",
        "labeled",
        status_code=502,
        status="Bad Gateway",
        installation_id=1,
        payload=labeled(),
    )
    stack.github.add_hook_delivery("seen-guid", "ping", status_code=202, status="OK")
    worker = ScriptedWorker(block=True)
    app = await stack.start(worker=worker)
    stack.github.apps.hook_url, stack.github.apps.hook_secret = stack.url, SECRET
    await eventually(worker.started.is_set, within=30)
    [task] = await app.store.list_tasks()
    assert task.delivery_id == "missed-guid"
    assert len(stack.github.apps.redelivery_requests) == 1
    await app.service.cancel(task.id, "test over")
    assert app.runner is not None
    await app.runner.drain()


async def test_feedback_on_a_pull_request_ghapp_did_not_open_gets_one_reply(
    stack: Stack,
) -> None:
    app = await stack.start(worker=ScriptedWorker(block=True))
    number = stack.github.add_issue(REPO, "A human's pull request")
    stack.github.issues[(REPO, number)].is_pr = True
    data = payload("issue_comment.created.pull_request", id=1)
    data["repository"] = payload("issue_comment.created.with-installation")["repository"]
    data["issue"]["number"] = number
    data["comment"]["body"] = "/mc please also handle the empty case"
    data["comment"]["id"] = stack.github.add_comment(REPO, number, data["comment"]["body"])
    data["sender"]["login"] = OWNER
    assert await stack.deliver("issue_comment", data) == 202
    await eventually(lambda: idle(stack))
    assert await app.store.list_tasks() == []
    [reply] = [c.body for c in stack.github.comments_on(REPO, number) if "/mc please" not in c.body]
    assert "only takes feedback on pull requests it opened" in reply


async def test_cancel_with_a_reason_cancels(stack: Stack) -> None:
    worker = ScriptedWorker(block=True)
    app = await stack.start(worker=worker)
    await stack.deliver("issue_comment", comment(stack, "/mc fix the typo"))
    await eventually(worker.started.is_set)
    await stack.deliver("issue_comment", comment(stack, "/mc cancel this, wrong issue"))
    await eventually(lambda: idle(stack))
    assert app.runner is not None
    await app.runner.drain()
    [task] = await app.store.list_tasks()
    assert task.state is TaskState.CANCELLED and "cancelled by @Codertocat" in (
        task.failure_reason or ""
    )
