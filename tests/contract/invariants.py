"""TaskStore contract: invariants that hold under any sequence of operations."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ghapp.core.model import (
    ACTIVE_STATES,
    LOCAL_NODE,
    TaskState,
)
from ghapp.core.ports import TaskStore
from tests.contract.support import (
    T0,
    TERMINAL,
    new,
)

_example_repos = itertools.count()
PROPERTY_DAYS = 6  # 50 ticks of at most 120 minutes stay inside this many days

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


class InvariantsContract:
    """Part of TaskStoreContract, whose docstring names the fixtures it needs."""

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
