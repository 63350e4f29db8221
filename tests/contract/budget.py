"""TaskStore contract: the daily budget: reservations at claim time, spend booked per UTC day."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ghapp.core.model import (
    LOCAL_NODE,
    LedgerEntry,
    TaskState,
)
from ghapp.core.ports import TaskStore
from tests.contract.support import (
    DAY1,
    DAY2,
    PLENTY,
    WAITING,
    StoreFactory,
    at,
    queued,
    started,
)


class BudgetContract:
    """Part of TaskStoreContract, whose docstring names the fixtures it needs."""

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
