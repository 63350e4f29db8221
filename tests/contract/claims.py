"""TaskStore contract: claims in order, one per issue and branch, one node per task."""

from __future__ import annotations

import asyncio

from ghapp.core.model import (
    TaskState,
)
from ghapp.core.ports import TaskStore
from tests.contract.support import (
    PLENTY,
    T0,
    StoreFactory,
    at,
    queued,
    started,
)


class ClaimsContract:
    """Part of TaskStoreContract, whose docstring names the fixtures it needs."""

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
