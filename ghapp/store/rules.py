"""Decisions every TaskStore backend makes the same way, so SQLite and PostgreSQL agree."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime

from ghapp.core.model import MUTABLE_FIELDS, Lease, Task, TaskState
from ghapp.store.rows import NO_LEASE, requeued

BUDGET_EPSILON = 1e-9
WAITING_FOR_BUDGET = "waiting for daily budget"
ORPHAN_CANCELLED = "cancelled (its worker went away while stopping it)"


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
    return cost_usd if booked is None else max(cost_usd - booked, 0.0)


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


def refused(task: Task, daily_budget_usd: float, now: datetime) -> dict[str, object]:
    """What claiming writes to a queued task whose cap can never fit: failed, and why."""
    reason = (
        f"its cap of ${task.budget_usd:.2f} is more than the whole daily budget of "
        f"${daily_budget_usd:.2f} (MC_DAILY_BUDGET_USD), so it could never start; "
        f"ask again with a budget of at most ${daily_budget_usd:.2f}"
    )
    return _failed(now, reason)


def expired(task: Task, now: datetime, max_attempts: int) -> dict[str, object]:
    """What a sweep writes to a task whose worker died: the next attempt, or failed at the cap."""
    crashes = task.crashes + 1
    if crashes < max_attempts:
        return {**requeued(task.attempt + 1, now), "crashes": crashes}
    reason = (
        f"its worker stopped without finishing {crashes} times (MC_MAX_ATTEMPTS={max_attempts}); "
        "see the ghapp log of the node that ran it"
    )
    return {**_failed(now, reason), "crashes": crashes}


def _failed(now: datetime, reason: str) -> dict[str, object]:
    """A task ended by the store itself, with nothing booked (no attempt ran to an end)."""
    return {
        "state": TaskState.FAILED,
        "finished_at": now,
        "failure_reason": reason,
        "wait_reason": None,
        "reserved_usd": 0.0,
        "updated_at": now,
        **NO_LEASE,
    }
