"""A GitHub outage across a trigger: the delivery (already answered 202) is kept and retried,
across a restart, until GitHub is back; after MC_INBOX_RETRY_S it is dropped with a notice."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator

import pytest

from ghapp.inbox import backoff_s
from tests.e2e.test_triggers import labeled, processed, tasks
from tests.fakes.memory import RecordingMessenger, ScriptedWorker
from tests.fakes.stack import Stack, close_stack, eventually, make_stack

PERMISSION = "/repos/Codertocat/Hello-World/collaborators/Codertocat/permission"


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    s = await make_stack(worker_user=None, inbox_retry_s=60.0)  # tries at most 6 s apart
    yield s
    await close_stack(s)


def outage_hits(stack: Stack) -> int:
    """How often ghapp asked GitHub anything about the trigger (minting or permission)."""
    return sum(1 for r in stack.github.log if r.path == PERMISSION or "access_tokens" in r.path)


def test_backoff_grows_to_at_most_a_minute() -> None:
    waits = [backoff_s(age, 6 * 3600) for age in (0, 4, 30, 120, 3600, 6 * 3600)]
    assert waits == sorted(waits) and waits[0] == 1.0 and max(waits) == 60.0
    assert backoff_s(3600, 60) == 6.0  # a short window tries more often


async def test_trigger_during_an_outage_is_queued_when_github_returns(stack: Stack) -> None:
    stack.github.outage = 502
    worker = ScriptedWorker(block=True)
    await stack.start(worker=worker)
    assert await stack.deliver("issues", labeled(), "d-outage") == 202
    started = time.monotonic()
    # Seven tries take about 10 s, longer than the old give-up (3 tries over ~6 s).
    await eventually(lambda: outage_hits(stack) >= 7, within=30)
    assert stack.app is not None
    [pending] = await stack.app.store.pending_deliveries()
    assert pending.id == "d-outage" and "502" in (pending.error or "")
    assert await tasks(stack) == []
    # A restart while GitHub is still down keeps it.
    await stack.stop()
    hits = outage_hits(stack)
    await stack.start(worker=worker)
    await eventually(lambda: outage_hits(stack) > hits, within=15)
    assert not await processed(stack)
    stack.github.outage = None
    await eventually(lambda: worker.started.is_set(), within=15)
    [task] = await tasks(stack)
    assert task.delivery_id == "d-outage" and await processed(stack)
    assert time.monotonic() - started > 6
    assert any("MissionControl task #" in c for c in stack.comments(1))
    assert stack.app is not None and stack.app.runner is not None
    await stack.app.service.cancel(task.id, "test over")
    await stack.app.runner.drain()


async def test_an_outage_longer_than_the_window_drops_it_with_a_notice(stack: Stack) -> None:
    stack.github.outage = 503
    messenger = RecordingMessenger()
    await stack.start(worker=ScriptedWorker(block=True), messenger=messenger, inbox_retry_s=10)
    assert await stack.deliver("issues", labeled(), "d-lost") == 202
    await eventually(lambda: processed(stack), within=30)
    assert outage_hits(stack) >= 5  # tried on, about a second apart, for the whole window
    [notice] = [n for n in messenger.notices if n.kind == "delivery_failed"]
    assert "d-lost" in notice.text and "MC_INBOX_RETRY_S" in notice.text
    assert await tasks(stack) == []
    with sqlite3.connect(stack.settings.sqlite_path) as db:
        [(error,)] = db.execute("SELECT error FROM deliveries WHERE id = 'd-lost'")
    assert "gave up" in error and "503" in error
