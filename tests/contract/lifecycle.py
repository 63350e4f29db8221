"""TaskStore contract: how an attempt ends: finish, cancel, retry and a restart's requeue."""

from __future__ import annotations

import pytest

from ghapp.core.model import (
    ACTIVE_STATES,
    TaskState,
)
from ghapp.core.ports import TaskStore
from tests.contract.support import (
    DAY1,
    PLENTY,
    T0,
    TERMINAL,
    at,
    leased,
    new,
    queued,
    started,
)


class LifeCycleContract:
    """Part of TaskStoreContract, whose docstring names the fixtures it needs."""

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
