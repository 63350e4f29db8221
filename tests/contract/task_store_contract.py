"""Behaviour every TaskStore backend must show; a backend's test module subclasses this.

A subclass provides two fixtures:

- ``open_store``: an async factory that opens another, already migrated store object on
  the same database (a second connection); everything it opened is closed at teardown.
- ``store``: one store from that factory, used by most tests.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import fields
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ghapp.core.model import (
    ACTIVE_STATES,
    DEFAULT_LEASE_S,
    LOCAL_NODE,
    MUTABLE_FIELDS,
    Installation,
    Lease,
    LeaseLost,
    LedgerEntry,
    NewTask,
    Project,
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
_example_repos = itertools.count()
PROPERTY_DAYS = 6  # 50 ticks of at most 120 minutes stay inside this many days


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


_CREATE = st.tuples(st.just("create"), st.integers(0, 2), st.sampled_from([0.5, 1.0, 2.5]))
_CLAIM = st.tuples(st.just("claim"), st.sampled_from([2.0, 4.0, 100.0]))
_FINISH = st.tuples(
    st.just("finish"),
    st.integers(0, 7),
    st.sampled_from(TERMINAL),
    st.sampled_from([0.0, 0.25, 1.0, 2.75]),
)
# Repeated branches weight the draw towards the create -> claim -> finish life cycle.
_OPERATION = st.one_of(
    _CREATE,
    _CREATE,
    _CLAIM,
    _CLAIM,
    _FINISH,
    _FINISH,
    st.tuples(st.just("cancel"), st.integers(0, 7)),
    st.tuples(st.just("retry"), st.integers(0, 7)),
    st.tuples(st.just("requeue")),
    st.tuples(st.just("tick"), st.integers(1, 120)),
)


class TaskStoreContract:
    """The TaskStore contract; see the module docstring for the fixtures to provide."""

    # -- deliveries inbox -------------------------------------------------------------
    async def test_redelivery_is_refused_without_change(self, store: TaskStore) -> None:
        assert await store.add_delivery("d-1", "issues", b'{"a": 1}', T0) is True
        assert await store.add_delivery("d-1", "ping", b"other", at(5)) is False
        assert await store.has_delivery("d-1") is True
        assert await store.has_delivery("d-2") is False
        [stored] = await store.pending_deliveries()
        assert (stored.id, stored.event, stored.body, stored.received_at) == (
            "d-1",
            "issues",
            b'{"a": 1}',
            T0,
        )

    async def test_concurrent_deliveries_each_stored_once(self, store: TaskStore) -> None:
        ids = [f"d-{i % 150}" for i in range(200)]  # 50 redeliveries racing their originals
        results = await asyncio.gather(
            *(store.add_delivery(d, "issues", d.encode(), T0) for d in ids)
        )
        assert sum(results) == 150
        accepted = {d for d, ok in zip(ids, results, strict=True) if ok}
        assert accepted == set(ids)
        pending = await store.pending_deliveries(limit=1000)
        assert sorted(p.id for p in pending) == sorted(accepted)
        await asyncio.gather(*(store.mark_delivery(d, at(1)) for d in accepted))
        assert await store.pending_deliveries() == []

    async def test_pending_deliveries_oldest_first_until_marked(self, store: TaskStore) -> None:
        for delivery_id, minutes in (("late", 9), ("early", 1), ("middle", 5)):
            body = b"\x00\xff" if delivery_id == "late" else delivery_id.encode()
            await store.add_delivery(delivery_id, "issues", body, at(minutes))
        assert [d.id for d in await store.pending_deliveries()] == ["early", "middle", "late"]
        assert [d.id for d in await store.pending_deliveries(limit=2)] == ["early", "middle"]
        await store.mark_delivery("middle", at(10), error="boom")
        await store.mark_delivery("early", at(11))
        [left] = await store.pending_deliveries()
        assert left.id == "late" and left.processed_at is None and left.body == b"\x00\xff"
        assert await store.has_delivery("middle") is True
        assert await store.add_delivery("middle", "issues", b"", at(12)) is False

    async def test_a_replayed_body_under_a_new_id_is_a_duplicate(self, store: TaskStore) -> None:
        body = b'{"action": "labeled", "label": {"name": "mc-auto"}}'
        assert await store.add_delivery("d-1", "issues", body, T0) is True
        await store.mark_delivery("d-1", at(1))  # handled long ago: still a duplicate
        assert await store.add_delivery("d-2", "issues", body, at(5)) is False
        assert await store.add_delivery("d-3", "ping", body, at(6)) is False
        assert await store.has_delivery("d-2") is False
        assert await store.add_delivery("d-4", "issues", body + b" ", at(7)) is True
        assert [d.id for d in await store.pending_deliveries()] == ["d-4"]

    async def test_concurrent_replays_store_each_body_once(
        self, store: TaskStore, open_store: StoreFactory
    ) -> None:
        other = await open_store()
        shots = [(f"d-{i}", f"body-{i % 50}".encode()) for i in range(200)]
        results = await asyncio.gather(
            *(
                (store, other)[i % 2].add_delivery(d, "issues", body, T0)
                for i, (d, body) in enumerate(shots)
            )
        )
        assert sum(results) == 50
        pending = await store.pending_deliveries(limit=1000)
        assert sorted(p.body for p in pending) == sorted({body for _, body in shots})
        stored = {d for (d, _), ok in zip(shots, results, strict=True) if ok}
        assert {p.id for p in pending} == stored

    async def test_prune_drops_old_processed_bodies_and_keeps_the_dedupe(
        self, store: TaskStore
    ) -> None:
        for delivery_id, minutes in (("old", 1), ("recent", 50), ("unprocessed", 2)):
            assert await store.add_delivery(
                delivery_id, "issues", delivery_id.encode(), at(minutes)
            )
        await store.mark_delivery("old", at(2))
        await store.mark_delivery("recent", at(51))
        assert await store.prune_deliveries(at(30)) == 1
        assert await store.prune_deliveries(at(30)) == 0  # once
        [left] = await store.pending_deliveries()
        assert (left.id, left.body) == ("unprocessed", b"unprocessed")  # never pruned
        assert await store.has_delivery("old")
        assert await store.add_delivery("old", "issues", b"again", at(60)) is False
        assert await store.add_delivery("replay-of-old", "issues", b"old", at(60)) is False
        assert await store.add_delivery("new", "issues", b"new", at(60)) is True

    # -- creating and reading tasks ---------------------------------------------------
    async def test_create_task_keeps_every_field(self, store: TaskStore) -> None:
        request = NewTask(
            source=TaskSource.REVIEW,
            repo="octo/app",
            installation_id=42,
            issue_number=17,
            requester="bob",
            instructions="rename the thing",
            budget_usd=2.5,
            title="Title",
            body="Body ✓",
            delivery_id="d-9",
            trigger_comment_id=9001,
            is_pull_request=True,
            branch="mc/issue-3",
            pr_number=17,
            review_path="src/a.py",
            review_line=12,
            parent_task_id=None,
            triggered_at=T0 - timedelta(seconds=3),
            pr_description="PR text ✓",
        )
        task = await store.create_task(request, T0)
        assert task is not None
        for f in fields(NewTask):
            assert getattr(task, f.name) == getattr(request, f.name), f.name
        assert task.state is TaskState.QUEUED and task.attempt == 1
        assert task.created_at == T0 and task.created_at.utcoffset() == timedelta(0)
        assert (task.cost_usd, task.reserved_usd, task.cancel_requested) == (0.0, 0.0, False)
        assert task.started_at is None and task.finished_at is None
        assert task.triggered_at is not None and task.triggered_at.utcoffset() == timedelta(0)
        assert task.context_note is None
        assert await store.get_task(task.id) == task
        assert isinstance(task.source, TaskSource) and isinstance(task.is_pull_request, bool)
        follow_up = await queued(store, 18, parent_task_id=task.id)
        assert follow_up.parent_task_id == task.id
        assert follow_up.id != task.id

    async def test_times_come_back_as_aware_utc(self, store: TaskStore) -> None:
        local = datetime(2024, 5, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
        task = await queued(store, now=local)
        assert task.created_at == local
        assert task.created_at.tzinfo is not None and task.created_at.utcoffset() == timedelta(0)
        assert task.created_at.hour == 12 and task.created_at.microsecond == 123456

    async def test_get_unknown_task_is_none(self, store: TaskStore) -> None:
        assert await store.get_task(999) is None

    async def test_one_active_task_per_issue(self, store: TaskStore) -> None:
        first = await queued(store, 1)
        assert await store.create_task(new(1), at(1)) is None
        assert await store.create_task(new(1, repo="Octo/App"), at(1)) is None
        assert await store.count(TaskState.QUEUED) == 1
        assert (await queued(store, 2)).issue_number == 2
        assert (await queued(store, 1, repo="octo/other")).repo == "octo/other"
        claim = await store.claim_next(at(2), PLENTY)
        assert claim.task is not None and claim.task.id == first.id
        assert await store.create_task(new(1), at(3)) is None  # running counts as active
        await store.finish(first.id, TaskState.SUCCEEDED, at(4), 0.5)
        again = await store.create_task(new(1), at(5))
        assert again is not None and again.id != first.id

    async def test_lookups_by_issue_and_pr(self, store: TaskStore) -> None:
        assert await store.active_task_for("octo/app", 1) is None
        assert await store.latest_task_for("octo/app", 1) is None
        first = await started(store, 1)
        await store.update(first.id, pr_number=30, pr_url="https://x/pull/30")
        assert (await store.active_task_for("octo/app", 1)) == await store.get_task(first.id)
        await store.finish(first.id, TaskState.SUCCEEDED, at(1), 0.1)
        assert await store.active_task_for("octo/app", 1) is None
        second = await queued(store, 1, now=at(2))
        assert (await store.active_task_for("octo/app", 1)) == second
        assert (await store.latest_task_for("octo/app", 1)) == second
        assert await store.latest_task_for("octo/app", 2) is None
        pr_task = await store.task_for_pr("octo/app", 30)
        assert pr_task is not None and pr_task.id == first.id
        await store.update(second.id, pr_number=30)
        newest = await store.task_for_pr("octo/app", 30)
        assert newest is not None and newest.id == second.id
        assert await store.task_for_pr("octo/app", 31) is None
        assert await store.task_for_pr("octo/other", 30) is None

    async def test_count_and_queue_position(self, store: TaskStore) -> None:
        a = await queued(store, 1, at(3))
        b = await queued(store, 2, at(1))
        c = await queued(store, 3, at(1))  # same instant as b: id breaks the tie
        assert [await store.queue_position(t.id) for t in (a, b, c)] == [3, 1, 2]
        await store.claim_next(at(4), PLENTY)  # takes b
        assert [await store.queue_position(t.id) for t in (a, b, c)] == [2, None, 1]
        await store.cancel(c.id, at(5), "no")
        assert await store.queue_position(a.id) == 1
        assert await store.queue_position(999) is None
        assert await store.count(TaskState.QUEUED) == 1
        assert await store.count(TaskState.RUNNING) == 1
        assert await store.count(TaskState.CANCELLED) == 1
        assert await store.count(TaskState.SUCCEEDED) == 0

    async def test_list_tasks_order_filter_and_limit(self, store: TaskStore) -> None:
        done = [await started(store, issue, at(issue)) for issue in (1, 2, 3)]
        for task in done:
            await store.finish(task.id, TaskState.FAILED, at(10), 0.0)
        q_late = await queued(store, 4, at(30))
        q_early = await queued(store, 5, at(20))
        assert [t.id for t in await store.list_tasks([TaskState.QUEUED])] == [
            q_early.id,
            q_late.id,
        ]
        assert [t.id for t in await store.list_tasks([TaskState.FAILED])] == [
            done[2].id,
            done[1].id,
            done[0].id,
        ]
        assert [t.id for t in await store.list_tasks([TaskState.FAILED], limit=2)] == [
            done[2].id,
            done[1].id,
        ]
        everything = [t.id for t in await store.list_tasks()]
        assert everything == [done[2].id, done[1].id, done[0].id, q_early.id, q_late.id]
        assert await store.list_tasks([TaskState.RUNNING]) == []
        assert await store.list_tasks([]) == []

    # -- claiming ---------------------------------------------------------------------
    async def test_claim_with_empty_queue(self, store: TaskStore) -> None:
        claim = await store.claim_next(T0, PLENTY)
        assert claim.task is None and claim.waiting_for_budget is None

    async def test_claim_is_fifo_by_creation_then_id(self, store: TaskStore) -> None:
        c = await queued(store, 3, at(2))
        a = await queued(store, 1, at(1))
        b = await queued(store, 2, at(1))
        claimed = [(await store.claim_next(at(5), PLENTY)).task for _ in range(4)]
        assert [t.id if t else None for t in claimed] == [a.id, b.id, c.id, None]

    async def test_claim_starts_the_task(self, store: TaskStore) -> None:
        task = await queued(store, 1, budget=2.5)
        claim = await store.claim_next(at(1), PLENTY)
        assert claim.task is not None and claim.waiting_for_budget is None
        running = claim.task
        assert running.id == task.id and running.state is TaskState.RUNNING
        assert running.started_at == at(1) and running.reserved_usd == 2.5
        assert running.wait_reason is None and running.cancel_requested is False
        assert await store.get_task(task.id) == running

    async def test_claim_skips_issue_or_branch_already_running(self, store: TaskStore) -> None:
        await started(store, 1, branch="mc/issue-1")
        same_branch = await queued(store, 8, at(1), branch="mc/issue-1")  # review follow-up
        other_repo = await queued(store, 9, at(2), repo="octo/lib", branch="mc/issue-1")
        claim = await store.claim_next(at(3), PLENTY)
        assert claim.task is not None and claim.task.id == other_repo.id
        assert (await store.claim_next(at(3), PLENTY)).task is None
        assert await store.queue_position(same_branch.id) == 1

    async def test_branch_frees_when_running_task_finishes(self, store: TaskStore) -> None:
        first = await started(store, 1, branch="mc/issue-1")
        follow = await queued(store, 8, at(1), branch="mc/issue-1")
        assert (await store.claim_next(at(2), PLENTY)).task is None
        await store.finish(first.id, TaskState.SUCCEEDED, at(3), 0.2)
        claim = await store.claim_next(at(4), PLENTY)
        assert claim.task is not None and claim.task.id == follow.id

    async def test_concurrent_claims_on_two_connections_never_share_a_task(
        self, store: TaskStore, open_store: StoreFactory
    ) -> None:
        other = await open_store()
        ids = {(await queued(store, issue, at(issue))).id for issue in range(20)}
        claims = await asyncio.gather(*(s.claim_next(at(30), PLENTY) for s in [store, other] * 12))
        got = [c.task.id for c in claims if c.task is not None]
        assert len(got) == 20 and set(got) == ids
        assert sum(c.task is None for c in claims) == 4
        assert await store.count(TaskState.RUNNING) == 20
        assert await other.count(TaskState.QUEUED) == 0

    # -- daily budget -----------------------------------------------------------------
    async def test_oldest_task_waits_for_budget_and_blocks_younger(self, store: TaskStore) -> None:
        first = await started(store, 1, budget=6.0)
        big = await queued(store, 2, at(1), budget=6.0)
        small = await queued(store, 3, at(2), budget=1.0)
        claim = await store.claim_next(at(3), 10.0)
        assert claim.task is None
        assert claim.waiting_for_budget is not None and claim.waiting_for_budget.id == big.id
        assert claim.waiting_for_budget.wait_reason == WAITING
        waiting = await store.get_task(big.id)
        assert waiting is not None and waiting.state is TaskState.QUEUED
        assert waiting.wait_reason == WAITING
        assert (await store.get_task(small.id)) == small  # the younger one did not jump
        again = await store.claim_next(at(4), 10.0)
        assert again.task is None and again.waiting_for_budget is not None
        await store.finish(first.id, TaskState.SUCCEEDED, at(5), 3.0)  # frees 6, spends 3
        claim = await store.claim_next(at(6), 10.0)
        assert claim.task is not None and claim.task.id == big.id
        assert claim.task.wait_reason is None
        claim = await store.claim_next(at(7), 10.0)  # 3 spent + 6 reserved + 1 fits exactly
        assert claim.task is not None and claim.task.id == small.id

    async def test_a_cap_above_the_daily_budget_fails_and_no_longer_blocks(
        self, store: TaskStore
    ) -> None:
        big = await queued(store, 1, budget=10.0)  # queued before the budget was lowered
        also = await queued(store, 2, at(1), budget=8.0)
        small = await queued(store, 3, at(2), budget=1.0)
        claim = await store.claim_next(at(3), 5.0)
        assert claim.task is not None and claim.task.id == small.id
        assert [t.id for t in claim.refused] == [big.id, also.id]
        for task, cap in ((big, "$10.00"), (also, "$8.00")):
            failed = await store.get_task(task.id)
            assert failed is not None and failed.state is TaskState.FAILED
            assert failed.failure_reason is not None
            assert cap in failed.failure_reason and "$5.00" in failed.failure_reason
            assert failed.reserved_usd == 0.0 and failed.finished_at == at(3)
            assert failed in claim.refused
        assert (await store.budget(DAY1, 5.0)).spent_usd == 0.0  # nothing was booked
        exactly = await queued(store, 4, at(4), budget=5.0)  # equal to the budget still waits
        waiting = await store.claim_next(at(5), 5.0)
        assert waiting.refused == () and waiting.waiting_for_budget is not None
        assert waiting.waiting_for_budget.id == exactly.id

    async def test_waiting_task_starts_when_the_utc_day_turns(self, store: TaskStore) -> None:
        first = await started(store, 1, budget=8.0)
        await store.finish(first.id, TaskState.SUCCEEDED, at(10), 8.0)
        waiting = await queued(store, 2, at(11), budget=5.0)
        assert (await store.claim_next(at(12), 10.0)).waiting_for_budget is not None
        late_local = datetime(2024, 5, 2, 1, 30, tzinfo=timezone(timedelta(hours=2)))
        still = await store.claim_next(late_local, 10.0)  # 23:30 UTC: same UTC day
        assert still.task is None and still.waiting_for_budget is not None
        claim = await store.claim_next(datetime(2024, 5, 2, 0, 0, 1, tzinfo=UTC), 10.0)
        assert claim.task is not None and claim.task.id == waiting.id

    async def test_budget_fit_tolerates_float_rounding(self, store: TaskStore) -> None:
        for issue, cost in ((1, 0.1), (2, 0.2)):
            task = await started(store, issue, at(issue), budget=0.2)
            await store.finish(task.id, TaskState.SUCCEEDED, at(issue), cost)
        await queued(store, 3, at(5), budget=0.7)
        claim = await store.claim_next(at(6), 1.0)
        assert claim.task is not None and claim.task.issue_number == 3

    async def test_budget_view_reports_spent_reserved_and_entries(self, store: TaskStore) -> None:
        empty = await store.budget(DAY1, 10.0)
        assert (empty.spent_usd, empty.reserved_usd, empty.entries) == (0.0, 0.0, ())
        done = await started(store, 1, budget=2.0)
        await store.finish(done.id, TaskState.FAILED, at(1), 1.25)
        running = await started(store, 2, at(2), budget=3.0)
        view = await store.budget(DAY1, 10.0)
        assert view.day == DAY1 and view.daily_budget_usd == 10.0
        assert view.spent_usd == pytest.approx(1.25)
        assert view.reserved_usd == pytest.approx(3.0)
        assert view.remaining_usd == pytest.approx(5.75)
        assert view.entries == (LedgerEntry(DAY1, done.id, 1, 1.25),)
        other_day = await store.budget(DAY2, 10.0)
        assert other_day.spent_usd == 0.0 and other_day.entries == ()
        assert other_day.reserved_usd == pytest.approx(3.0)
        await store.finish(running.id, TaskState.SUCCEEDED, at(3), 0.5)
        assert (await store.budget(DAY1, 10.0)).reserved_usd == 0.0

    # -- finishing --------------------------------------------------------------------
    async def test_cost_is_booked_per_utc_day_and_accumulates(self, store: TaskStore) -> None:
        task = await queued(store, 1, at(0), budget=4.0)
        await store.claim_next(datetime(2024, 5, 1, 23, 0, tzinfo=UTC), PLENTY)
        just_before_midnight = datetime(2024, 5, 2, 1, 59, 59, tzinfo=timezone(timedelta(hours=2)))
        failed = await store.finish(task.id, TaskState.FAILED, just_before_midnight, 1.5)
        assert failed.cost_usd == pytest.approx(1.5) and failed.reserved_usd == 0.0
        assert failed.finished_at == just_before_midnight
        retried = await store.retry(task.id, datetime(2024, 5, 2, 0, 0, tzinfo=UTC))
        assert retried is not None and retried.attempt == 2
        after_midnight = datetime(2024, 5, 2, 0, 0, 1, tzinfo=UTC)
        await store.claim_next(after_midnight, PLENTY)
        done = await store.finish(task.id, TaskState.SUCCEEDED, after_midnight, 2.0)
        assert done.cost_usd == pytest.approx(3.5) and done.attempt == 2
        assert (await store.budget(DAY1, 10.0)).entries == (LedgerEntry(DAY1, task.id, 1, 1.5),)
        day2 = await store.budget(DAY2, 10.0)
        assert day2.entries == (LedgerEntry(DAY2, task.id, 2, 2.0),)
        assert day2.spent_usd == pytest.approx(2.0)

    async def test_finish_only_ends_a_running_attempt(self, store: TaskStore) -> None:
        task = await queued(store, 1)
        with pytest.raises(ValueError):
            await store.finish(task.id, TaskState.SUCCEEDED, at(1), 1.0)
        assert await store.get_task(task.id) == task
        await store.claim_next(at(2), PLENTY)
        for not_terminal in ACTIVE_STATES:
            with pytest.raises(ValueError):
                await store.finish(task.id, not_terminal, at(3), 1.0)
        done = await store.finish(task.id, TaskState.SUCCEEDED, at(4), 1.0)
        with pytest.raises(ValueError):  # a second finish cannot book the attempt twice
            await store.finish(task.id, TaskState.FAILED, at(5), 1.0)
        assert await store.get_task(task.id) == done
        view = await store.budget(DAY1, 10.0)
        assert view.spent_usd == pytest.approx(1.0) and len(view.entries) == 1
        with pytest.raises(KeyError):
            await store.finish(999, TaskState.FAILED, at(6), 0.0)

    async def test_finish_applies_fields_or_changes_nothing(self, store: TaskStore) -> None:
        task = await started(store, 1)
        with pytest.raises(KeyError):
            await store.finish(task.id, TaskState.FAILED, at(1), 1.0, attempt=5)
        with pytest.raises(KeyError):
            await store.finish(task.id, TaskState.FAILED, at(1), 1.0, nonsense=1)
        assert await store.get_task(task.id) == task
        assert (await store.budget(DAY1, 10.0)).entries == ()
        done = await store.finish(
            task.id,
            TaskState.FAILED,
            at(2),
            0.75,
            failure_reason="agent gave up",
            summary="tried",
            log_path="/data/logs/1.log",
        )
        assert done.state is TaskState.FAILED and done.failure_reason == "agent gave up"
        assert (done.summary, done.log_path) == ("tried", "/data/logs/1.log")
        assert await store.get_task(task.id) == done

    # -- cancel -----------------------------------------------------------------------
    async def test_cancel_queued_task_ends_it(self, store: TaskStore) -> None:
        task = await queued(store, 1)
        cancelled = await store.cancel(task.id, at(1), "changed my mind")
        assert cancelled is not None and cancelled.state is TaskState.CANCELLED
        assert cancelled.finished_at == at(1) and cancelled.failure_reason == "changed my mind"
        assert await store.get_task(task.id) == cancelled
        assert (await store.claim_next(at(2), PLENTY)).task is None
        assert await store.create_task(new(1), at(3)) is not None  # the issue is free again

    async def test_cancel_running_task_only_requests_it(self, store: TaskStore) -> None:
        task = await started(store, 1)
        requested = await store.cancel(task.id, at(1), "stop")
        assert requested is not None and requested.state is TaskState.RUNNING
        assert requested.cancel_requested is True
        assert (await store.cancel(task.id, at(2), "stop")) is not None  # asking twice is fine
        done = await store.finish(task.id, TaskState.CANCELLED, at(3), 0.3)
        assert done.state is TaskState.CANCELLED and done.cost_usd == pytest.approx(0.3)

    async def test_cancel_terminal_or_unknown_is_none(self, store: TaskStore) -> None:
        for state in TERMINAL:
            task = await started(store, 1)
            await store.finish(task.id, state, at(1), 0.0)
            before = await store.get_task(task.id)
            assert await store.cancel(task.id, at(2), "late") is None
            assert await store.get_task(task.id) == before
        assert await store.cancel(999, at(3), "who") is None

    # -- retry and crash recovery -----------------------------------------------------
    async def test_retry_requeues_failed_or_cancelled_as_next_attempt(
        self, store: TaskStore
    ) -> None:
        task = await started(store, 1, budget=2.0)
        await store.cancel(task.id, at(1), "stop")
        await store.finish(task.id, TaskState.FAILED, at(2), 0.5, failure_reason="broke")
        again = await store.retry(task.id, at(3))
        assert again is not None and again.id == task.id
        assert again.state is TaskState.QUEUED and again.attempt == 2
        assert again.failure_reason is None and again.wait_reason is None
        assert again.started_at is None and again.finished_at is None
        assert again.cancel_requested is False and again.reserved_usd == 0.0
        assert again.cost_usd == pytest.approx(0.5)
        assert await store.queue_position(task.id) == 1
        assert await store.cancel(task.id, at(4), "nah") is not None
        third = await store.retry(task.id, at(5))
        assert third is not None and third.attempt == 3

    async def test_retry_refusals(self, store: TaskStore) -> None:
        done = await started(store, 1)
        await store.finish(done.id, TaskState.SUCCEEDED, at(1), 0.1)
        assert await store.retry(done.id, at(2)) is None  # succeeded is never retried
        failed = await started(store, 2, at(2))
        await store.finish(failed.id, TaskState.FAILED, at(3), 0.1)
        newer = await queued(store, 2, at(4))  # the issue has an active task again
        assert await store.retry(failed.id, at(5)) is None
        assert await store.retry(newer.id, at(5)) is None  # queued
        await store.claim_next(at(6), PLENTY)
        assert await store.retry(newer.id, at(7)) is None  # running
        assert await store.retry(999, at(7)) is None
        still_failed = await store.get_task(failed.id)
        assert still_failed is not None and still_failed.state is TaskState.FAILED

    async def test_restarted_node_requeues_its_orphans_unless_cancel_was_asked(
        self, store: TaskStore
    ) -> None:
        a = await leased(store, 1, T0, "n1", budget=2.0)
        b = await leased(store, 2, at(1), "n1", budget=3.0)
        other = await leased(store, 3, at(1), "n2", budget=1.0)
        waiting = await queued(store, 4, at(2))
        await store.cancel(b.id, at(3), "stop")
        assert await store.requeue_expired(at(3)) == []  # no lease ran out yet
        requeued = await store.requeue_expired(at(3), "n1")  # n1 restarted: its tasks are orphans
        assert [t.id for t in requeued] == [a.id]
        stopped = await store.get_task(b.id)
        assert stopped is not None and stopped.state is TaskState.CANCELLED  # cancel survives
        assert stopped.reserved_usd == 0.0 and stopped.lease_owner is None
        for task in requeued:
            assert task.state is TaskState.QUEUED and task.attempt == 2
            assert task.reserved_usd == 0.0
            assert task.lease_owner is None and task.lease_expires_at is None
            assert await store.get_task(task.id) == task
        assert (await store.budget(DAY1, 10.0)).reserved_usd == pytest.approx(1.0)
        assert await store.get_task(other.id) == other  # n2 is alive: its task stays
        assert await store.get_task(waiting.id) == waiting
        assert await store.requeue_expired(at(5), "n1") == []
        claim = await store.claim_next(at(6), PLENTY)
        assert claim.task is not None and claim.task.id == a.id and claim.task.attempt == 2

    # -- leases -------------------------------------------------------------------------
    async def test_claim_leases_the_task_to_its_node(self, store: TaskStore) -> None:
        task = await queued(store, 1)
        claim = await store.claim_next(at(1), PLENTY, "worker-a", 30.0)
        assert claim.task is not None and claim.task.id == task.id
        assert claim.task.lease_owner == "worker-a"
        assert claim.task.lease_expires_at == at(1) + timedelta(seconds=30)
        assert await store.get_task(task.id) == claim.task
        default = await started(store, 2, at(2))
        assert default.lease_owner == LOCAL_NODE
        assert default.lease_expires_at == at(2) + timedelta(seconds=DEFAULT_LEASE_S)

    async def test_only_the_holder_renews_its_lease(self, store: TaskStore) -> None:
        task = await leased(store, 1, T0, "n1", lease_s=10.0)
        mine = Lease("n1", 1)
        renewed = await store.renew(task.id, mine, T0 + timedelta(seconds=5), 10.0)
        assert renewed is not None and renewed.lease_expires_at == T0 + timedelta(seconds=15)
        assert renewed.state is TaskState.RUNNING and renewed.attempt == 1
        assert await store.get_task(task.id) == renewed
        assert await store.renew(task.id, Lease("n2", 1), T0, 10.0) is None
        assert await store.renew(task.id, Lease("n1", 2), T0, 10.0) is None
        assert await store.renew(999, mine, T0, 10.0) is None
        assert await store.requeue_expired(T0 + timedelta(seconds=14)) == []
        await store.finish(task.id, TaskState.SUCCEEDED, at(1), 0.1, lease=mine)
        assert await store.renew(task.id, mine, at(1), 10.0) is None  # ended: nothing to hold

    async def test_expired_lease_returns_the_task_as_its_next_attempt(
        self, store: TaskStore
    ) -> None:
        task = await leased(store, 1, T0, "n1", budget=2.0, lease_s=10.0)
        assert await store.requeue_expired(T0 + timedelta(seconds=9)) == []
        [back] = await store.requeue_expired(T0 + timedelta(seconds=10))
        assert back.id == task.id and back.state is TaskState.QUEUED and back.attempt == 2
        assert back.lease_owner is None and back.reserved_usd == 0.0
        assert await store.renew(task.id, Lease("n1", 1), at(1), 10.0) is None  # too late
        claim = await store.claim_next(at(1), PLENTY, "n2", 10.0)
        assert claim.task is not None and claim.task.id == task.id
        assert (claim.task.attempt, claim.task.lease_owner) == (2, "n2")

    async def test_a_task_whose_worker_keeps_dying_fails_at_max_attempts(
        self, store: TaskStore
    ) -> None:
        task = await leased(store, 1, T0, "n1", budget=2.0, lease_s=10.0)
        now = T0
        for attempt in (2, 3):
            now += timedelta(minutes=1)
            [back] = await store.requeue_expired(now, max_attempts=3)
            assert back.state is TaskState.QUEUED and back.attempt == attempt
            assert back.crashes == attempt - 1
            claim = await store.claim_next(now, PLENTY, "n1", 10.0)
            assert claim.task is not None and claim.task.id == task.id
        now += timedelta(minutes=1)
        [dead] = await store.requeue_expired(now, max_attempts=3)
        assert dead.id == task.id and dead.state is TaskState.FAILED and dead.attempt == 3
        assert dead.failure_reason is not None
        assert "3 times" in dead.failure_reason and "MC_MAX_ATTEMPTS=3" in dead.failure_reason
        assert dead.reserved_usd == 0.0 and dead.lease_owner is None
        assert await store.get_task(task.id) == dead
        assert (await store.claim_next(now, PLENTY)).task is None
        again = await store.retry(task.id, now)  # a person asking again starts a fresh count
        assert again is not None and again.attempt == 4 and again.crashes == 0

    async def test_a_finished_attempt_resets_nothing_but_a_retry_resets_the_crash_count(
        self, store: TaskStore
    ) -> None:
        task = await leased(store, 1, T0, "n1", lease_s=10.0)
        [back] = await store.requeue_expired(at(1), max_attempts=2)
        assert back.crashes == 1
        await store.claim_next(at(2), PLENTY, "n1", 10.0)
        await store.finish(task.id, TaskState.FAILED, at(3), 0.0)
        again = await store.retry(task.id, at(4))
        assert again is not None and again.crashes == 0
        await store.claim_next(at(5), PLENTY, "n1", 10.0)
        [requeued] = await store.requeue_expired(at(6), max_attempts=2)
        assert requeued.state is TaskState.QUEUED and requeued.crashes == 1

    async def test_giving_a_lease_up_lets_any_node_resume_the_task(self, store: TaskStore) -> None:
        task = await leased(store, 1, T0, "n1")
        given_up = await store.renew(task.id, Lease("n1", 1), at(1), 0.0)
        assert given_up is not None and given_up.lease_expires_at == at(1)
        [back] = await store.requeue_expired(at(1))
        assert back.id == task.id and back.attempt == 2

    async def test_finish_after_losing_the_lease_only_books_the_cost(
        self, store: TaskStore
    ) -> None:
        task = await leased(store, 1, T0, "n1", budget=2.0, lease_s=10.0)
        await store.requeue_expired(at(1))
        claim = await store.claim_next(at(2), PLENTY, "n2", 600.0)
        assert claim.task is not None and claim.task.attempt == 2
        for _ in range(2):  # a second report of the lost attempt books nothing more
            with pytest.raises(LeaseLost):
                await store.finish(
                    task.id, TaskState.SUCCEEDED, at(3), 0.75, Lease("n1", 1), summary="stale"
                )
        current = await store.get_task(task.id)
        assert current is not None and current.state is TaskState.RUNNING
        assert current.lease_owner == "n2" and current.summary is None
        assert current.cost_usd == pytest.approx(0.75) and current.reserved_usd == 2.0
        done = await store.finish(task.id, TaskState.SUCCEEDED, at(4), 0.5, Lease("n2", 2))
        assert done.state is TaskState.SUCCEEDED and done.cost_usd == pytest.approx(1.25)
        assert (await store.budget(DAY1, 10.0)).entries == (
            LedgerEntry(DAY1, task.id, 1, 0.75),
            LedgerEntry(DAY1, task.id, 2, 0.5),
        )
        with pytest.raises(LeaseLost):  # ended: no lease holds it any more
            await store.finish(task.id, TaskState.FAILED, at(5), 0.0, Lease("n2", 2))

    async def test_finish_of_a_requeued_attempt_is_lost(self, store: TaskStore) -> None:
        task = await leased(store, 1, T0, "n1")
        await store.requeue_expired(at(1), "n1")
        with pytest.raises(LeaseLost):
            await store.finish(task.id, TaskState.FAILED, at(2), 0.0, Lease("n1", 1))
        again = await store.get_task(task.id)
        assert again is not None and again.state is TaskState.QUEUED and again.attempt == 2

    async def test_concurrent_claims_never_overspend_the_daily_budget(
        self, store: TaskStore, open_store: StoreFactory
    ) -> None:
        other = await open_store()
        for issue in range(12):
            await queued(store, issue, at(issue), budget=1.0)
        claims = await asyncio.gather(
            *(s.claim_next(at(30), 5.0, f"node-{i}") for i, s in enumerate([store, other] * 8))
        )
        assert sum(c.task is not None for c in claims) == 5
        assert (await store.budget(DAY1, 5.0)).reserved_usd == pytest.approx(5.0)
        assert all(c.waiting_for_budget is not None for c in claims if c.task is None)

    async def test_claimed_deliveries_go_to_one_node_until_the_claim_expires(
        self, store: TaskStore, open_store: StoreFactory
    ) -> None:
        other = await open_store()
        for delivery_id, minutes in (("d1", 1), ("d2", 2), ("d3", 3)):
            await store.add_delivery(delivery_id, "issues", delivery_id.encode(), at(minutes))
        assert [d.id for d in await store.claim_deliveries("n1", at(5), 60, limit=2)] == [
            "d1",
            "d2",
        ]
        assert [d.id for d in await other.claim_deliveries("n2", at(5), 60)] == ["d3"]
        again = await other.claim_deliveries("n2", at(5), 60)  # its own again, never n1's
        assert [d.id for d in again] == ["d3"]
        await other.mark_delivery("d3", at(5))
        again = await store.claim_deliveries("n1", at(5), 60)  # a restarted n1 takes its own back
        assert [d.id for d in again] == ["d1", "d2"] and again[0].body == b"d1"
        await store.mark_delivery("d1", at(5))
        assert await other.claim_deliveries("n2", at(5) + timedelta(seconds=59), 60) == []
        late = await other.claim_deliveries("n2", at(6), 60)  # n1's claim ran out
        assert [d.id for d in late] == ["d2"]
        assert [d.id for d in await store.pending_deliveries()] == ["d2"]

    async def test_a_deferred_delivery_waits_for_its_time_then_goes_to_any_node(
        self, store: TaskStore, open_store: StoreFactory
    ) -> None:
        other = await open_store()
        await store.add_delivery("d1", "issues", b"{}", at(1))
        [claimed] = await store.claim_deliveries("n1", at(2), 300)
        await store.defer_delivery(claimed.id, at(3), "GitHub 502: Bad Gateway")
        [pending] = await store.pending_deliveries()  # still unprocessed, with its last error
        assert pending.error == "GitHub 502: Bad Gateway" and pending.processed_at is None
        assert await store.claim_deliveries("n1", at(2), 300) == []  # not even its old holder
        assert await other.claim_deliveries("n2", at(3) - timedelta(seconds=1), 300) == []
        assert [d.id for d in await other.claim_deliveries("n2", at(3), 300)] == ["d1"]
        await other.mark_delivery("d1", at(4))
        await store.defer_delivery("d1", at(9), "late")  # a processed delivery stays processed
        assert await store.pending_deliveries() == []

    async def test_write_slots_are_spaced_per_installation_across_processes(
        self, store: TaskStore, open_store: StoreFactory
    ) -> None:
        other = await open_store()
        slots = await asyncio.gather(*(s.reserve_write(7, at(1), 1.0) for s in [store, other] * 3))
        assert sorted(slots) == [at(1) + timedelta(seconds=i) for i in range(6)]
        assert await other.reserve_write(8, at(1), 1.0) == at(1)  # another installation
        # Long after the last slot a write goes at once.
        assert await store.reserve_write(7, at(9), 1.0) == at(9)

    async def test_concurrent_delivery_claims_split_the_inbox(
        self, store: TaskStore, open_store: StoreFactory
    ) -> None:
        other = await open_store()
        for i in range(30):
            await store.add_delivery(f"d{i:02}", "issues", f"{i}".encode(), at(i))
        batches = await asyncio.gather(
            *(
                s.claim_deliveries(f"n{i}", at(40), 60, limit=4)
                for i, s in enumerate([store, other] * 5)
            )
        )
        got = [d.id for batch in batches for d in batch]
        assert len(got) == 30 and set(got) == {f"d{i:02}" for i in range(30)}

    async def test_metered_spend_is_booked_at_once_and_finish_only_tops_it_up(
        self, store: TaskStore
    ) -> None:
        task = await started(store, 1)
        await store.add_spend(task.id, task.attempt, at(1), 0.25)
        await store.add_spend(task.id, task.attempt, at(2), 0.15)
        running = await store.get_task(task.id)
        assert running is not None and running.cost_usd == pytest.approx(0.4)
        assert (await store.budget(DAY1, 10.0)).spent_usd == pytest.approx(0.4)
        # the attempt's end books its total: what metering booked is not booked twice
        done = await store.finish(task.id, TaskState.FAILED, at(3), 0.4)
        assert done.cost_usd == pytest.approx(0.4)
        view = await store.budget(DAY1, 10.0)
        assert view.spent_usd == pytest.approx(0.4) and len(view.entries) == 1
        with pytest.raises(ValueError):
            await store.add_spend(task.id, task.attempt, at(4), -1.0)
        with pytest.raises(ValueError):
            await store.add_spend(task.id, task.attempt, at(4), float("nan"))

    async def test_finish_tops_up_spend_that_metering_missed(self, store: TaskStore) -> None:
        task = await started(store, 1)
        await store.add_spend(task.id, task.attempt, at(1), 0.25)
        done = await store.finish(task.id, TaskState.SUCCEEDED, at(2), 0.75)
        assert done.cost_usd == pytest.approx(0.75)
        assert (await store.budget(DAY1, 10.0)).spent_usd == pytest.approx(0.75)

    async def test_spend_of_a_requeued_attempt_stays_booked(self, store: TaskStore) -> None:
        task = await started(store, 1)
        await store.add_spend(task.id, task.attempt, at(1), 0.3)
        requeued = await store.requeue_expired(at(2), LOCAL_NODE)
        assert [t.id for t in requeued] == [task.id]
        again = await store.get_task(task.id)
        assert again is not None and again.cost_usd == pytest.approx(0.3)
        assert (await store.budget(DAY1, 10.0)).spent_usd == pytest.approx(0.3)

    # -- update -----------------------------------------------------------------------
    # -- task logs shared by every node ----------------------------------------------
    async def test_task_log_keeps_the_newest_tail_for_every_process(
        self, store: TaskStore, open_store: StoreFactory
    ) -> None:
        task, other = await started(store, 1), await open_store()
        assert await other.task_log(task.id, 1) is None
        await store.append_task_log(task.id, 1, "tool Write: a.txt\n", 24)
        assert await other.task_log(task.id, 1) == "tool Write: a.txt\n"
        await store.append_task_log(task.id, 1, "  -> ok: wrote ✓\n", 24)
        # characters, not bytes, and the newest ones: the head goes past the cap
        both = "tool Write: a.txt\n  -> ok: wrote ✓\n"
        assert await other.task_log(task.id, 1) == both[-24:] == " a.txt\n  -> ok: wrote ✓\n"
        await store.append_task_log(task.id, 1, "x" * 30, 24)  # one batch past the cap
        assert await other.task_log(task.id, 1) == "x" * 24

    async def test_task_log_of_a_new_attempt_replaces_the_old_one(self, store: TaskStore) -> None:
        task = await started(store, 1)
        await store.append_task_log(task.id, 1, "first attempt\n", 100)
        await store.append_task_log(task.id, 2, "second attempt\n", 100)
        assert await store.task_log(task.id, 1) is None
        assert await store.task_log(task.id, 2) == "second attempt\n"
        await store.append_task_log(task.id, 1, "late line of the lost attempt\n", 100)
        assert await store.task_log(task.id, 2) == "second attempt\n"
        assert await store.task_log(task.id, 1) is None
        assert await store.task_log(task.id + 1, 1) is None

    async def test_stored_logs_of_finished_tasks_are_pruned(self, store: TaskStore) -> None:
        old, running = await started(store, 1), await queued(store, 2)
        await store.append_task_log(old.id, 1, "old\n", 100)
        await store.append_task_log(running.id, 1, "running\n", 100)
        await store.finish(old.id, TaskState.SUCCEEDED, at(2), 0.0)
        assert await store.prune_task_logs(at(1)) == 0  # finished after the cut-off
        assert await store.prune_task_logs(at(3)) == 1
        assert await store.task_log(old.id, 1) is None
        assert await store.task_log(running.id, 1) == "running\n"

    async def test_update_changes_bookkeeping_fields(self, store: TaskStore) -> None:
        task = await started(store, 1)
        changed = await store.update(
            task.id,
            branch="mc/issue-1",
            base_sha="abc123",
            pr_number=5,
            pr_url="https://github.test/octo/app/pull/5",
            pr_fate="merged",
            summary="did it",
            log_path="/logs/1.log",
            tracking_comment_id=77,
            is_pull_request=True,
            wait_reason=None,
            context_note="3 earlier comments not shown",
        )
        assert (changed.branch, changed.base_sha, changed.pr_number) == ("mc/issue-1", "abc123", 5)
        assert changed.context_note == "3 earlier comments not shown"
        assert changed.pr_fate == "merged" and changed.tracking_comment_id == 77
        assert changed.is_pull_request is True
        assert changed.state is TaskState.RUNNING and changed.attempt == 1
        assert await store.get_task(task.id) == changed
        assert await store.update(task.id) == changed

    async def test_update_refuses_other_fields_with_no_change(self, store: TaskStore) -> None:
        task = await queued(store, 1)
        for name in sorted(set(f.name for f in fields(Task)) - MUTABLE_FIELDS):
            with pytest.raises(KeyError):
                await store.update(task.id, summary="sneaky", **{name: 1})
        with pytest.raises(KeyError):
            await store.update(task.id, summary="sneaky", colour="red")
        assert await store.get_task(task.id) == task
        with pytest.raises(KeyError):
            await store.update(999, summary="x")

    # -- persistence ------------------------------------------------------------------
    async def test_data_survives_close_and_reopen(
        self, store: TaskStore, open_store: StoreFactory
    ) -> None:
        task = await started(store, 1)
        await store.finish(task.id, TaskState.SUCCEEDED, at(1), 0.4)
        await store.add_delivery("d-1", "issues", b"{}", T0)
        await store.upsert_installation(Installation(7, "octo", ("octo/app",)))
        await store.add_project(Project("app", "octo/app", 7, is_default=True))
        await store.close()
        reopened = await open_store()
        await reopened.migrate()  # migrating an up-to-date database changes nothing
        assert await reopened.get_task(task.id) == await reopened.latest_task_for("octo/app", 1)
        restored = await reopened.get_task(task.id)
        assert restored is not None and restored.cost_usd == pytest.approx(0.4)
        assert await reopened.has_delivery("d-1")
        assert await reopened.installation_for_repo("octo/app") == 7
        assert await reopened.projects() == [Project("app", "octo/app", 7, is_default=True)]
        assert (await reopened.budget(DAY1, 1.0)).spent_usd == pytest.approx(0.4)
        assert await reopened.ping() is True

    async def test_migrate_twice_keeps_data(self, store: TaskStore) -> None:
        task = await queued(store, 1)
        await store.migrate()
        await store.migrate()
        assert await store.get_task(task.id) == task
        assert await store.ping() is True

    # -- installations and projects ---------------------------------------------------
    async def test_upsert_installation_replaces_account_and_repos(self, store: TaskStore) -> None:
        await store.upsert_installation(Installation(1, "octo", ("octo/a", "octo/b")))
        await store.upsert_installation(Installation(2, "other", ()))
        await store.upsert_installation(Installation(1, "octo-renamed", ("octo/c",)))
        assert await store.installations() == [
            Installation(1, "octo-renamed", ("octo/c",)),
            Installation(2, "other", ()),
        ]
        assert await store.installation_for_repo("octo/a") is None
        assert await store.installation_for_repo("octo/c") == 1

    async def test_installation_repos_change_and_match_any_case(self, store: TaskStore) -> None:
        await store.upsert_installation(Installation(1, "octo", ("octo/a",)))
        await store.set_installation_repos(1, added=["octo/b", "octo/c"], removed=["OCTO/A"])
        [inst] = await store.installations()
        assert sorted(inst.repos) == ["octo/b", "octo/c"]
        assert await store.installation_for_repo("Octo/B") == 1
        assert await store.installation_for_repo("octo/a") is None
        await store.set_installation_repos(1, added=["octo/b"], removed=["octo/nope"])
        assert sorted((await store.installations())[0].repos) == ["octo/b", "octo/c"]
        await store.remove_installation(1)
        assert await store.installations() == []
        assert await store.installation_for_repo("octo/b") is None

    async def test_repos_of_an_unknown_installation_are_recorded(self, store: TaskStore) -> None:
        await store.set_installation_repos(5, added=["octo/x"], removed=[])
        assert await store.installation_for_repo("octo/x") == 5
        assert [i.id for i in await store.installations()] == [5]

    async def test_projects_replace_by_slug_with_one_default(self, store: TaskStore) -> None:
        await store.add_project(Project("web", "octo/web", 1, is_default=True))
        await store.add_project(Project("api", "octo/api", 1))
        assert {p.slug: p.is_default for p in await store.projects()} == {
            "web": True,
            "api": False,
        }
        await store.add_project(Project("api", "octo/api2", 2, is_default=True))
        assert sorted(await store.projects(), key=lambda p: p.slug) == [
            Project("api", "octo/api2", 2, is_default=True),
            Project("web", "octo/web", 1, is_default=False),
        ]
        await store.add_project(Project("api", "octo/api2", 2, is_default=False))
        assert not any(p.is_default for p in await store.projects())
        assert await store.remove_project("web") is True
        assert await store.remove_project("web") is False
        assert [p.slug for p in await store.projects()] == ["api"]

    async def test_one_process_posts_a_tasks_chat_thread(
        self, store: TaskStore, open_store: StoreFactory
    ) -> None:
        """Processes sharing a store agree on a task's parent message (Slack threads)."""
        refs: Any = store
        other: Any = await open_store()
        task = await store.create_task(new(1), at(0))
        assert task is not None
        assert await refs.thread_ref("slack:C1", task.id) is None
        first, second = await asyncio.gather(
            refs.claim_thread("slack:C1", task.id, at(0), 10.0),
            other.claim_thread("slack:C1", task.id, at(0), 10.0),
        )
        assert sorted([first, second]) == [False, True]  # exactly one posts the parent
        assert await refs.claim_thread("slack:C2", task.id, at(0), 10.0)  # per chat
        assert not await other.claim_thread("slack:C1", task.id, at(0.1), 10.0)
        # A claim whose poster died without posting is taken over once it is stale.
        assert await other.claim_thread("slack:C1", task.id, at(1), 10.0)
        await other.set_thread_ref("slack:C1", task.id, "1700000001.000100")
        assert await refs.thread_ref("slack:C1", task.id) == "1700000001.000100"
        assert not await refs.claim_thread("slack:C1", task.id, at(60), 10.0)  # posted: final
        assert await refs.thread_ref("slack:C2", task.id) is None

    async def test_ping(self, store: TaskStore) -> None:
        assert await store.ping() is True

    # -- invariants under any sequence of operations ------------------------------------
    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(ops=st.lists(_OPERATION, min_size=20, max_size=50))
    async def test_invariants_hold_under_any_operations(
        self, store: TaskStore, ops: list[tuple[Any, ...]]
    ) -> None:
        # Examples share the store: each gets its own repo and its own days (so its own
        # ledger), and ends what earlier examples left active.
        example = next(_example_repos)
        repo, start = f"prop/r{example}", T0 + timedelta(days=PROPERTY_DAYS * example)
        now, ids = start, list[int]()
        await store.requeue_expired(now, LOCAL_NODE)
        for leftover in await store.list_tasks([TaskState.QUEUED], limit=1_000_000):
            await store.cancel(leftover.id, now, "previous example")
        for op in ops:
            kind = op[0]
            if kind == "create":
                _, issue, budget = op
                task = await store.create_task(new(issue, repo=repo, budget=budget), now)
                if task is not None:
                    ids.append(task.id)
            elif kind == "claim":
                await store.claim_next(now, op[1])
            elif kind == "tick":
                now += timedelta(minutes=op[1])
            elif kind == "requeue":
                await store.requeue_expired(now, LOCAL_NODE)
            elif ids:
                running = [t.id for t in await store.list_tasks([TaskState.RUNNING])]
                pool = running if kind == "finish" and running and op[1] != 7 else ids
                task_id = pool[op[1] % len(pool)]
                before = await store.get_task(task_id)
                assert before is not None
                if kind == "finish":
                    _, _, state, cost = op
                    try:
                        await store.finish(task_id, state, now, cost)
                        assert before.state is TaskState.RUNNING
                    except ValueError:
                        assert before.state is not TaskState.RUNNING
                elif kind == "cancel":
                    result = await store.cancel(task_id, now, "prop")
                    assert (result is None) == before.state.terminal
                else:
                    await store.retry(task_id, now)
            await self._check_invariants(store, ids, start, now)

    async def _check_invariants(
        self, store: TaskStore, ids: list[int], start: datetime, now: datetime
    ) -> None:
        """One active task per issue; the ledger holds exactly the tasks' costs; reserves match."""
        active_tasks = await store.list_tasks(ACTIVE_STATES, limit=1_000_000)
        issues = [(task.repo.lower(), task.issue_number) for task in active_tasks]
        assert len(issues) == len(set(issues))
        for task in active_tasks:
            expected_reserve = task.budget_usd if task.state is TaskState.RUNNING else 0.0
            assert task.reserved_usd == pytest.approx(expected_reserve)
        running = sum(t.budget_usd for t in active_tasks if t.state is TaskState.RUNNING)
        assert (await store.budget(now.date(), 1.0)).reserved_usd == pytest.approx(running)
        booked: defaultdict[int, float] = defaultdict(float)
        for offset in range((now.date() - start.date()).days + 1):
            for entry in (await store.budget(start.date() + timedelta(days=offset), 1.0)).entries:
                booked[entry.task_id] += entry.cost_usd
        assert set(booked) <= set(ids)
        for task_id in ids:
            mine = await store.get_task(task_id)
            assert mine is not None
            assert mine.cost_usd == pytest.approx(booked.get(task_id, 0.0)), mine
            if mine.state not in ACTIVE_STATES:
                assert mine.reserved_usd == 0.0
