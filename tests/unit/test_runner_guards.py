"""What keeps a task from spending when it should not, or from being stuck forever."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

from ghapp.core.commands import SimpleCommand
from ghapp.core.model import Lease, NewTask, Task, TaskSource, TaskState
from ghapp.core.report import MARKER
from ghapp.core.tasks import Trigger
from ghapp.store.sqlite import SqliteTaskStore
from tests.unit import test_runner
from tests.unit.test_runner import Rig

rig = test_runner.rig  # the runner rig fixture, shared


def tracking(rig: Rig) -> str:
    """The latest text of the tracking comment."""
    bodies = [b for b in rig.forge.bodies() if b.startswith(MARKER)]
    edits = [body for _, body in rig.forge.edits if body.startswith(MARKER)]
    return (edits or bodies)[-1]


# -- permission at claim and on retry (issue 12, item 5) -----------------------------------
async def test_a_requester_who_lost_write_access_spends_nothing_at_claim(rig: Rig) -> None:
    task = await rig.queue()
    rig.forge.permissions["alice"] = "read"  # removed from the repository while queued
    await rig.run_all()
    done = await rig.get(task.id)
    assert done.state is TaskState.FAILED and done.cost_usd == 0.0
    assert "alice" in (done.failure_reason or "")
    assert "no longer has write access" in (done.failure_reason or "")
    assert rig.worker.requests == [] and rig.vcs.pushed == []
    assert "no longer has write access" in tracking(rig)
    assert rig.messenger.kinds()[-1] == "failed"


async def test_a_task_from_telegram_is_not_asked_about_github_permission(rig: Rig) -> None:
    new = NewTask(
        source=TaskSource.TELEGRAM,
        repo="octo/app",
        installation_id=1,
        issue_number=-7,
        requester="telegram:carol",
        instructions="add a README",
        budget_usd=1.0,
        branch="mc/tg-7-readme",
    )
    task = await rig.service.submit(new)
    assert task is not None
    await rig.run_all()
    assert (await rig.get(task.id)).state is TaskState.SUCCEEDED


async def test_a_red_ci_follow_up_is_not_asked_about_its_requesters_permission(rig: Rig) -> None:
    # ghapp queued it itself, for a PR a Telegram task opened: no GitHub user asked for it now
    new = NewTask(
        source=TaskSource.CI,
        repo="octo/app",
        installation_id=1,
        issue_number=12,
        requester="telegram:carol",
        instructions="CI failed on head abc",
        budget_usd=1.0,
        is_pull_request=True,
        branch="mc/tg-7-readme",
        pr_number=12,
    )
    task = await rig.service.submit(new)
    assert task is not None
    await rig.run_all()
    assert (await rig.get(task.id)).state is TaskState.SUCCEEDED


async def test_mc_retry_of_a_task_whose_requester_lost_access_is_refused(rig: Rig) -> None:
    rig.worker.make_commits = 0
    task = await rig.queue()
    await rig.run_all()
    assert (await rig.get(task.id)).state is TaskState.FAILED
    rig.forge.permissions.update(alice="none", bob="write")
    trig = Trigger(
        repo="octo/app",
        installation_id=1,
        number=5,
        sender="bob",
        sender_is_bot=False,
        source=TaskSource.COMMENT,
        command=SimpleCommand("retry"),
    )
    assert await rig.service.handle(trig) == "refused retry"
    after = await rig.get(task.id)
    assert after.state is TaskState.FAILED and after.attempt == 1
    assert "no longer has write access" in (after.failure_reason or "")
    assert "was not run again" in rig.forge.comments[-1][2]
    rig.forge.permissions["alice"] = "write"  # given back: the retry works again
    assert await rig.service.handle(trig) == "retried"


# -- a cap above a lowered daily budget (item 10) --------------------------------------------
async def test_a_cap_above_a_lowered_daily_budget_fails_and_frees_the_queue(rig: Rig) -> None:
    big = await rig.queue(issue=1, budget=9)
    small = await rig.queue(issue=2, budget=2)
    rig.runner.config = replace(rig.runner.config, daily_budget_usd=5.0)
    await rig.run_all()
    refused = await rig.get(big.id)
    assert refused.state is TaskState.FAILED
    assert "$9.00" in (refused.failure_reason or "") and "$5.00" in (refused.failure_reason or "")
    assert (await rig.get(small.id)).state is TaskState.SUCCEEDED
    failed = [n for n in rig.messenger.notices if n.kind == "failed"]
    assert failed and failed[0].task is not None and failed[0].task.id == big.id
    assert any("$9.00" in body and "$5.00" in body for _, body in rig.forge.edits)


# -- a worker that keeps dying (item 11) -------------------------------------------------------
async def test_a_task_whose_worker_keeps_dying_fails_after_max_attempts(rig: Rig) -> None:
    task = await rig.queue()
    for attempt in (1, 2, 3):
        claim = await rig.store.claim_next(rig.clock.now(), 10, "doomed-node", 1.0)
        assert claim.task is not None and claim.task.attempt == attempt
        rig.clock.advance(seconds=2)  # the node died: its lease runs out
        await rig.runner.sweep()
    done = await rig.get(task.id)
    assert done.state is TaskState.FAILED and done.attempt == 3
    assert "3 times" in (done.failure_reason or "")
    assert "MC_MAX_ATTEMPTS=3" in (done.failure_reason or "")
    assert "3 times" in tracking(rig)
    assert rig.messenger.kinds()[-1] == "failed"
    await rig.run_all()
    assert rig.worker.requests == []  # it is not claimed again


# -- self-fencing (item 15) --------------------------------------------------------------------
class Partition:
    """The store as a worker cut off from it sees it: renewals and reads fail once cut."""

    def __init__(self, store: SqliteTaskStore) -> None:
        self._store = store
        self.cut = False
        self.last_renewal = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def renew(self, task_id: int, lease: Lease, now: datetime, lease_s: float) -> Task | None:
        if self.cut:
            raise OSError("connection timed out")
        asked = time.monotonic()
        held = await self._store.renew(task_id, lease, now, lease_s)
        self.last_renewal = asked
        return held

    async def get_task(self, task_id: int) -> Task | None:
        if self.cut:
            await asyncio.sleep(3600)  # a read that hangs, as over a dead TCP connection
        return await self._store.get_task(task_id)


async def test_a_worker_that_cannot_renew_stops_its_agent_before_the_lease_ends(
    rig: Rig,
) -> None:
    lease_s = 0.6
    partition = Partition(rig.store)
    rig.runner.store = partition
    rig.runner.config = replace(rig.runner.config, lease_s=lease_s, cancel_poll_s=0.05)
    rig.worker.block = True
    task = await rig.queue()
    await rig.runner.fill()
    await asyncio.wait_for(rig.worker.started.wait(), 5)
    await asyncio.sleep(0.25)  # at least one renewal went through
    assert partition.last_renewal > 0
    partition.cut = True
    stop = rig.runner._runs[task.id].stop
    await asyncio.wait_for(stop.wait(), 5)
    stopped = time.monotonic()
    assert stopped < partition.last_renewal + lease_s, (
        f"agent stopped {stopped - partition.last_renewal:.2f} s after the last renewal, "
        f"past the {lease_s} s lease"
    )
    await asyncio.wait_for(rig.runner.drain(), 5)
    done = await rig.get(task.id)
    assert rig.forge.prs == [] and "lease" in (done.failure_reason or "")
