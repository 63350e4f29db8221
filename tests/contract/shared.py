"""TaskStore contract: what every process shares beside tasks: write slots and log tails."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from ghapp.core.model import (
    TaskState,
)
from ghapp.core.ports import TaskStore
from tests.contract.support import (
    StoreFactory,
    at,
    queued,
    started,
)


class SharedContract:
    """Part of TaskStoreContract, whose docstring names the fixtures it needs."""

    async def test_write_slots_are_spaced_per_installation_across_processes(
        self, store: TaskStore, open_store: StoreFactory
    ) -> None:
        other = await open_store()
        slots = await asyncio.gather(*(s.reserve_write(7, at(1), 1.0) for s in [store, other] * 3))
        assert sorted(slots) == [at(1) + timedelta(seconds=i) for i in range(6)]
        assert await other.reserve_write(8, at(1), 1.0) == at(1)  # another installation
        # Long after the last slot a write goes at once.
        assert await store.reserve_write(7, at(9), 1.0) == at(9)

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
