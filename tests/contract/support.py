"""What the contract modules share: a timeline from T0, task builders and the store factory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ghapp.core.model import (
    NewTask,
    Task,
    TaskSource,
    TaskState,
)
from ghapp.core.ports import TaskStore

StoreFactory = Callable[[], Awaitable[TaskStore]]

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
DAY1 = date(2024, 5, 1)
DAY2 = date(2024, 5, 2)
PLENTY = 1000.0
WAITING = "waiting for daily budget"
TERMINAL = (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)


def at(minutes: float) -> datetime:
    """A moment relative to T0, so tests read as a timeline."""
    return T0 + timedelta(minutes=minutes)


def new(issue: int = 1, *, repo: str = "octo/app", budget: float = 1.0, **extra: Any) -> NewTask:
    """A NewTask with sensible defaults."""
    return NewTask(
        source=TaskSource.LABEL,
        repo=repo,
        installation_id=7,
        issue_number=issue,
        requester="alice",
        instructions="fix it",
        budget_usd=budget,
        **extra,
    )


async def queued(store: TaskStore, issue: int = 1, now: datetime = T0, **extra: Any) -> Task:
    """Create a task and insist it was accepted."""
    task = await store.create_task(new(issue, **extra), now)
    assert task is not None
    return task


async def started(store: TaskStore, issue: int = 1, now: datetime = T0, **extra: Any) -> Task:
    """Create a task and claim it (the queue must hold nothing older)."""
    task = await queued(store, issue, now, **extra)
    claim = await store.claim_next(now, PLENTY)
    assert claim.task is not None and claim.task.id == task.id
    return claim.task


async def leased(
    store: TaskStore,
    issue: int,
    now: datetime,
    node: str,
    lease_s: float = 600.0,
    **extra: Any,
) -> Task:
    """Create a task and claim it for `node` (the queue must hold nothing older)."""
    task = await queued(store, issue, now, **extra)
    claim = await store.claim_next(now, PLENTY, node, lease_s)
    assert claim.task is not None and claim.task.id == task.id
    return claim.task


async def all_tasks(store: TaskStore) -> list[Task]:
    """Every task, whatever its state."""
    return await store.list_tasks(None, limit=1_000_000)


async def replays_of_stored_bodies_are_duplicates(store: TaskStore) -> None:
    """After the hashing step: deliveries a, replay-of-a (body X) and b (body Y) were stored."""
    assert [d.id for d in await store.pending_deliveries()] == ["a", "replay-of-a", "b"]
    assert await store.add_delivery("c", "issues", b"X", T0) is False
    assert await store.add_delivery("d", "issues", b"Y", T0) is False
    assert await store.add_delivery("e", "issues", b"Z", T0) is True


async def bodies_moved_to_their_table(
    store: TaskStore, claim_at: datetime, prune_at: datetime
) -> None:
    """After the bodies step: "waiting" is claimable with its body, "done"'s body is pruned."""
    [waiting] = await store.claim_deliveries("n1", claim_at, 60)
    assert (waiting.id, waiting.body) == ("waiting", b'{"n": 1}')
    assert await store.add_delivery("replay", "issues", b'{"n": 2}', claim_at) is False
    assert await store.prune_deliveries(prune_at) == 1  # "done"'s body; "pruned" had none
