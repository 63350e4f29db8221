"""TaskStore contract: a task runs on the node holding its lease and returns when it ends."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ghapp.core.model import (
    DEFAULT_LEASE_S,
    LOCAL_NODE,
    Lease,
    LeaseLost,
    LedgerEntry,
    TaskState,
)
from ghapp.core.ports import TaskStore
from tests.contract.support import (
    DAY1,
    PLENTY,
    T0,
    at,
    leased,
    queued,
    started,
)


class LeaseContract:
    """Part of TaskStoreContract, whose docstring names the fixtures it needs."""

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
