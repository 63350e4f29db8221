"""TaskStore contract: creating, reading, updating and keeping tasks."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime, timedelta, timezone

import pytest

from ghapp.core.model import (
    MUTABLE_FIELDS,
    Installation,
    NewTask,
    Project,
    Task,
    TaskSource,
    TaskState,
)
from ghapp.core.ports import TaskStore
from tests.contract.support import (
    DAY1,
    PLENTY,
    T0,
    StoreFactory,
    at,
    new,
    queued,
    started,
)


class TasksContract:
    """Part of TaskStoreContract, whose docstring names the fixtures it needs."""

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

    async def test_ping(self, store: TaskStore) -> None:
        assert await store.ping() is True
