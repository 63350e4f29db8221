"""The task life cycle's rules: what each transition writes and when money fits.

Every TaskStore backend applies these (through ghapp/store/lifecycle.py), so SQLite and
PostgreSQL cannot drift apart; they are plain values, so they are tested without a database.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from datetime import datetime, timedelta

from ghapp.core.model import MUTABLE_FIELDS, Lease, NewTask, Task, TaskState

BUDGET_EPSILON = 1e-9
WAITING_FOR_BUDGET = "waiting for daily budget"
ORPHAN_CANCELLED = "cancelled (its worker went away while stopping it)"
NO_LEASE: dict[str, object] = {"lease_owner": None, "lease_expires_at": None}

Values = dict[str, object]


def check_fields(fields: Mapping[str, object]) -> None:
    """Refuse, before any change, fields that only transitions may touch."""
    refused = sorted(set(fields) - MUTABLE_FIELDS)
    if refused:
        raise KeyError(f"fields not updatable: {', '.join(refused)}")


def check_finish(state: TaskState, cost_usd: float, fields: Mapping[str, object]) -> None:
    """Refuse, before any change, a finish no store may record."""
    if not state.terminal:
        raise ValueError(f"finish needs a terminal state, not {state.value}")
    check_cost(cost_usd)
    check_fields(fields)


def check_cost(cost_usd: float) -> None:
    """Refuse a cost no ledger may hold."""
    if not math.isfinite(cost_usd) or cost_usd < 0:
        raise ValueError(f"cost must be a finite amount >= 0, not {cost_usd!r}")


def top_up(booked: float | None, cost_usd: float) -> float:
    """What finishing an attempt adds: its total less what metering already booked."""
    return float(cost_usd) if booked is None else max(cost_usd - booked, 0.0)


def holds(task: Task, lease: Lease) -> bool:
    """Whether this lease still runs the task: same node, same attempt, still running."""
    return (
        task.state is TaskState.RUNNING
        and task.lease_owner == lease.node
        and task.attempt == lease.attempt
    )


def fits(spent_and_reserved: float, budget_usd: float, daily_budget_usd: float) -> bool:
    """Whether a task's whole cap still fits in today's budget."""
    return spent_and_reserved + budget_usd <= daily_budget_usd + BUDGET_EPSILON


def never_fits(budget_usd: float, daily_budget_usd: float) -> bool:
    """A cap above the whole daily budget: the task could wait forever and block the queue."""
    return budget_usd > daily_budget_usd + BUDGET_EPSILON


def lease_until(now: datetime, lease_s: float) -> datetime:
    """When a lease taken or renewed now runs out."""
    return now + timedelta(seconds=lease_s)


def queued(new: NewTask, now: datetime) -> Values:
    """What creating a task writes: every field of the request, queued as attempt 1."""
    values: Values = {f.name: getattr(new, f.name) for f in dataclasses.fields(new)}
    values.update(state=TaskState.QUEUED, attempt=1, created_at=now, updated_at=now)
    return values


def started(task: Task, now: datetime, node: str, lease_s: float) -> Values:
    """What claiming writes: running, the task's whole cap reserved, leased to `node`."""
    return {
        "state": TaskState.RUNNING,
        "started_at": now,
        "reserved_usd": task.budget_usd,
        "wait_reason": None,
        "cancel_requested": False,
        "updated_at": now,
        "lease_owner": node,
        "lease_expires_at": lease_until(now, lease_s),
    }


def waiting_for_budget(now: datetime) -> Values:
    """What claiming writes to the head of the queue when its cap does not fit today."""
    return {"wait_reason": WAITING_FOR_BUDGET, "updated_at": now}


def finished(state: TaskState, now: datetime, total_cost_usd: float) -> Values:
    """What ending an attempt writes: the terminal state, the cost, no reservation."""
    return {
        "state": state,
        "finished_at": now,
        "reserved_usd": 0.0,
        "cost_usd": total_cost_usd,
        "updated_at": now,
        **NO_LEASE,
    }


def cancel_requested(now: datetime) -> Values:
    """What cancelling a running task writes: its runner stops it and finishes it."""
    return {"cancel_requested": True, "updated_at": now}


def cancelled(now: datetime, reason: str) -> Values:
    """What cancelling a queued task writes."""
    return _ended(TaskState.CANCELLED, now, reason)


def requeued(attempt: int, now: datetime) -> Values:
    """What putting a task back in the queue as a new attempt writes (a fresh crash count)."""
    return {
        "state": TaskState.QUEUED,
        "attempt": attempt,
        "crashes": 0,
        "failure_reason": None,
        "wait_reason": None,
        "started_at": None,
        "finished_at": None,
        "cancel_requested": False,
        "reserved_usd": 0.0,
        "updated_at": now,
        **NO_LEASE,
    }


def refused(task: Task, daily_budget_usd: float, now: datetime) -> Values:
    """What claiming writes to a queued task whose cap can never fit: failed, and why."""
    reason = (
        f"its cap of ${task.budget_usd:.2f} is more than the whole daily budget of "
        f"${daily_budget_usd:.2f} (MC_DAILY_BUDGET_USD), so it could never start; "
        f"ask again with a budget of at most ${daily_budget_usd:.2f}"
    )
    return _failed(now, reason)


def orphaned(task: Task, now: datetime, max_attempts: int) -> Values:
    """What a sweep writes to a task whose worker died.

    A cancel already asked for ends it cancelled (a restart must not revive work somebody
    stopped); otherwise the next attempt, or failed at the max_attempts-th dead attempt.
    """
    if task.cancel_requested:
        return cancelled(now, ORPHAN_CANCELLED)
    crashes = task.crashes + 1
    if crashes < max_attempts:
        return {**requeued(task.attempt + 1, now), "crashes": crashes}
    reason = (
        f"its worker stopped without finishing {crashes} times (MC_MAX_ATTEMPTS={max_attempts}); "
        "see the ghapp log of the node that ran it"
    )
    return {**_failed(now, reason), "crashes": crashes}


def _failed(now: datetime, reason: str) -> Values:
    """A task ended by the store itself, with nothing booked (no attempt ran to an end)."""
    return _ended(TaskState.FAILED, now, reason)


def _ended(state: TaskState, now: datetime, reason: str) -> Values:
    """A task ended without an attempt running to its end: nothing booked, nothing reserved."""
    return {
        "state": state,
        "finished_at": now,
        "failure_reason": reason,
        "wait_reason": None,
        "reserved_usd": 0.0,
        "updated_at": now,
        **NO_LEASE,
    }
