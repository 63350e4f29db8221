"""The life-cycle rules every store applies, checked as plain values (no database)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from ghapp.core import transitions as rule
from ghapp.core.model import TASK_FIELDS, Lease, NewTask, Task, TaskSource, TaskState

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def running(**changes: object) -> Task:
    new = NewTask(TaskSource.LABEL, "octo/app", 7, 1, "alice", "fix it", 2.0)
    task = Task(id=1, **rule.queued(new, NOW))  # type: ignore[arg-type]
    values = {**rule.started(task, NOW, "n1", 60), **changes}
    return dataclasses.replace(task, **values)  # type: ignore[arg-type]


def test_every_transition_writes_only_task_columns() -> None:
    task = running()
    for values in (
        rule.started(task, NOW, "n1", 60),
        rule.finished(TaskState.SUCCEEDED, NOW, 1.0),
        rule.cancelled(NOW, "stop"),
        rule.requeued(2, NOW),
        rule.refused(task, 1.0, NOW),
        rule.orphaned(task, NOW, 3),
        rule.waiting_for_budget(NOW),
        rule.cancel_requested(NOW),
    ):
        assert set(values) <= TASK_FIELDS


def test_a_dead_attempt_is_retried_until_the_cap_then_fails() -> None:
    again = rule.orphaned(running(attempt=1, crashes=0), NOW, max_attempts=3)
    assert (again["state"], again["attempt"], again["crashes"]) == (TaskState.QUEUED, 2, 1)
    assert again["lease_owner"] is None and again["reserved_usd"] == 0.0
    last = rule.orphaned(running(attempt=3, crashes=2), NOW, max_attempts=3)
    assert last["state"] is TaskState.FAILED and "MC_MAX_ATTEMPTS=3" in str(last["failure_reason"])


def test_an_orphan_whose_cancel_was_asked_for_ends_cancelled() -> None:
    ended = rule.orphaned(running(cancel_requested=True), NOW, max_attempts=3)
    assert ended["state"] is TaskState.CANCELLED
    assert ended["failure_reason"] == rule.ORPHAN_CANCELLED


def test_money_fits_to_the_cent_and_never_fits_above_the_day() -> None:
    assert rule.fits(8.0, 2.0, 10.0) and not rule.fits(8.01, 2.0, 10.0)
    assert rule.never_fits(10.01, 10.0) and not rule.never_fits(10.0, 10.0)
    assert rule.top_up(None, 1.5) == 1.5 and rule.top_up(2.0, 1.5) == 0.0
    assert rule.top_up(1.0, 1.5) == 0.5


def test_a_lease_holds_only_for_its_node_and_attempt() -> None:
    task = running()
    assert rule.holds(task, Lease("n1", task.attempt))
    assert not rule.holds(task, Lease("n2", task.attempt))
    assert not rule.holds(task, Lease("n1", task.attempt + 1))


@pytest.mark.parametrize("cost", [-0.01, float("nan"), float("inf")])
def test_a_cost_no_ledger_may_hold_is_refused(cost: float) -> None:
    with pytest.raises(ValueError):
        rule.check_cost(cost)
