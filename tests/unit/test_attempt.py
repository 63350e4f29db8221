"""An attempt's stop reason: a lost lease outranks a cancel and forbids pushing."""

from __future__ import annotations

import pytest

from ghapp.core.attempt import Attempt, LeaseTimes
from ghapp.core.model import Lease, LeaseLost
from ghapp.core.ports import AgentOutcome, StopReason
from tests.unit import test_runner
from tests.unit.test_runner import Rig

rig = test_runner.rig  # the runner rig fixture, shared
TIMES = LeaseTimes(lease_s=60.0, renew_s=20.0, beat_s=1.0)


async def attempt_of(rig: Rig, issue: int = 5, attempt_no: int | None = None) -> Attempt:
    """Claim a queued task as this node, as the runner does; `attempt_no` fakes a stale one."""
    await rig.queue(issue)
    claim = await rig.store.claim_next(rig.clock.now(), 10.0, "local", TIMES.lease_s)
    assert claim.task is not None
    lease = Lease("local", claim.task.attempt if attempt_no is None else attempt_no)
    return Attempt(claim.task, lease, rig.store, rig.clock, rig.forge, TIMES)


async def test_a_lost_lease_outranks_a_cancel_whichever_comes_first(rig: Rig) -> None:
    cancelled_first = await attempt_of(rig)
    cancelled_first.halt(StopReason.CANCELLED)
    assert cancelled_first.stop.is_set() and not cancelled_first.lost
    cancelled_first.halt(StopReason.LEASE_LOST)
    assert cancelled_first.lost
    cancelled_first.halt(StopReason.CANCELLED)
    assert cancelled_first.stopped is StopReason.LEASE_LOST
    with pytest.raises(LeaseLost):
        await cancelled_first.hold()


async def test_hold_renews_a_held_lease_and_refuses_one_taken_over(rig: Rig) -> None:
    held = await attempt_of(rig)
    await held.hold()
    assert held.stopped is None
    stale = await attempt_of(rig, issue=6, attempt_no=7)  # the row says another attempt runs it
    with pytest.raises(LeaseLost):
        await stale.hold()
    assert stale.lost and stale.stop.is_set()


async def test_every_agent_run_of_an_attempt_adds_to_its_cost(rig: Rig) -> None:
    attempt = await attempt_of(rig)
    first = attempt.spent(AgentOutcome(True, 0.5))
    attempt.spent(AgentOutcome(False, 0.25))
    assert first.cost_usd == 0.5 and attempt.cost_usd == 0.75
