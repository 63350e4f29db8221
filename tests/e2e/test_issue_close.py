"""Closing an issue stops its task only when the closer may write or asked for the task."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from ghapp.core.model import TaskState
from ghapp.core.report import MARKER
from tests.conftest import payload
from tests.fakes.memory import ScriptedWorker
from tests.fakes.stack import OWNER, REPO, Stack, close_stack, eventually, make_stack


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    s = await make_stack(worker_user=None)
    yield s
    await close_stack(s)


def closed_by(login: str) -> dict[str, Any]:
    data = payload("issues.closed", id=1)
    data["repository"]["full_name"], data["issue"]["number"] = REPO, 1
    data["sender"]["login"] = login
    return data


def labeled() -> dict[str, Any]:
    data = payload("issues.labeled", id=1)
    data["label"]["name"] = "mc-auto"
    return data


def tracking(stack: Stack) -> str:
    [comment] = [c for c in stack.github.comments_on(REPO, 1) if c.body.startswith(MARKER)]
    return comment.body


async def test_an_outsider_closing_the_issue_does_not_stop_a_running_task(stack: Stack) -> None:
    worker = ScriptedWorker(block=True)
    app = await stack.start(worker=worker)
    stack.github.set_permission(REPO, "author", "read")  # opened the issue, may close it
    assert await stack.deliver("issues", labeled()) == 202
    await eventually(worker.started.is_set)
    assert await stack.deliver("issues", closed_by("author"), "closed-by-author") == 202
    await eventually(lambda: "author closed the issue" in tracking(stack))
    assert "goes on" in tracking(stack)
    task = await app.store.active_task_for(REPO, 1)
    assert task is not None and task.state is TaskState.RUNNING and not task.cancel_requested
    # the requester closing it does stop it
    assert await stack.deliver("issues", closed_by(OWNER), "closed-by-requester") == 202
    assert app.runner is not None
    await eventually(lambda: not app.runner.running_ids)
    done = await app.store.get_task(task.id)
    assert done is not None and done.state is TaskState.CANCELLED
    assert f"closed by {OWNER}" in (done.failure_reason or "")
