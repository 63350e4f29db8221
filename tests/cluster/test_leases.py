"""Runners on several nodes share one store: leases decide who runs what (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ghapp.bootstrap import Crew, SystemClock, build_core
from ghapp.cluster import DELIVERY_BATCH, ClaimingInbox
from ghapp.core.model import NewTask, Task, TaskSource, TaskState
from ghapp.core.ports import TaskStore
from ghapp.core.runner import RunnerConfig, TaskRunner
from ghapp.core.tasks import Limits, TaskService
from tests.cluster.conftest import StoreFactory
from tests.fakes.memory import (
    MemoryForge,
    MemoryLogs,
    MemoryVcs,
    RecordingMessenger,
    ScriptedWorker,
)
from tests.fakes.stack import eventually

LEASE_S = 2.0  # renewed every 0.67 s: a stall of over a second on a loaded box is survived


@dataclass
class Node:
    """One simulated ghapp process: its own store connection, runner and agent."""

    name: str
    store: TaskStore
    vcs: MemoryVcs
    forge: MemoryForge
    worker: ScriptedWorker
    messenger: RecordingMessenger
    service: TaskService
    runner: TaskRunner


@dataclass
class Cluster:
    open_store: StoreFactory
    root: Path
    nodes: list[Node] = field(default_factory=list)

    async def node(self, name: str, **config: float) -> Node:
        store = await self.open_store()
        forge, messenger, clock = (
            MemoryForge({"alice": "write"}),
            RecordingMessenger(),
            SystemClock(),
        )
        vcs = MemoryVcs(self.root / name)
        worker = ScriptedWorker(vcs)
        settings = {"lease_s": LEASE_S, "cancel_poll_s": 0.05, "poll_s": 0.05, **config}
        knobs = RunnerConfig(log_dir=self.root / name / "logs", node=name, **settings)  # type: ignore[arg-type]
        crew = Crew(vcs, worker, knobs, MemoryLogs())
        core = build_core(store, forge, clock, Limits(100, 5, 10), messenger, crew)
        assert core.runner is not None
        node = Node(name, store, vcs, forge, worker, messenger, core.service, core.runner)
        self.nodes.append(node)
        return node


@pytest.fixture
async def cluster(open_store: StoreFactory, tmp_path: Path) -> AsyncIterator[Cluster]:
    world = Cluster(open_store, tmp_path)
    yield world
    for node in world.nodes:
        node.worker.block = False
        await node.runner.stop()


async def queue(node: Node, issue: int = 5) -> Task:
    new = NewTask(TaskSource.LABEL, "octo/app", 1, issue, "alice", "", 5.0, title=f"Bug {issue}")
    task = await node.service.submit(new)
    assert task is not None
    return task


async def state_of(store: TaskStore, task_id: int) -> Task:
    task = await store.get_task(task_id)
    assert task is not None
    return task


async def test_a_live_worker_keeps_its_task_past_the_lease_time(cluster: Cluster) -> None:
    a = await cluster.node("a")
    other = await cluster.node("b")
    a.worker.block = True
    task = await queue(a)
    await a.runner.start()
    await asyncio.wait_for(a.worker.started.wait(), 5)
    await asyncio.sleep(LEASE_S * 3)  # three lease lengths: only renewals keep it
    assert await other.store.requeue_expired(SystemClock().now()) == []
    held = await state_of(other.store, task.id)
    assert held.state is TaskState.RUNNING and held.lease_owner == "a" and held.attempt == 1
    await other.service.cancel(task.id, "stop")  # asked on another node, noticed by a's heartbeat
    await asyncio.wait_for(a.runner.drain(), 5)
    assert (await state_of(other.store, task.id)).state is TaskState.CANCELLED


async def test_a_dead_workers_task_is_resumed_by_another_after_its_lease(cluster: Cluster) -> None:
    dead = await cluster.node("dead")
    alive = await cluster.node("alive")
    task = await queue(dead)
    claim = await dead.store.claim_next(SystemClock().now(), 100, "dead", LEASE_S)
    assert claim.task is not None  # ...and "dead" never renews, as after a SIGKILL
    await alive.runner.start()
    assert (await state_of(alive.store, task.id)).state is TaskState.RUNNING  # not its own

    async def finished() -> bool:
        return (await state_of(alive.store, task.id)).state.terminal

    await eventually(finished, within=10)
    done = await state_of(alive.store, task.id)
    assert done.state is TaskState.SUCCEEDED and done.attempt == 2
    assert len(alive.worker.requests) == 1 and len(alive.forge.prs) == 1


async def test_a_worker_that_lost_its_lease_stops_and_publishes_nothing(cluster: Cluster) -> None:
    slow = await cluster.node("slow")
    fast = await cluster.node("fast")
    slow.worker.block = True
    task = await queue(slow)
    await slow.runner.fill()
    await asyncio.wait_for(slow.worker.started.wait(), 5)
    # slow hung long enough for its lease to lapse; fast swept and took the task over.
    now = SystemClock().now()
    await fast.store.requeue_expired(now, "slow")
    claim = await fast.store.claim_next(now, 100, "fast", 600)
    assert claim.task is not None and claim.task.attempt == 2
    await asyncio.wait_for(slow.runner.drain(), 5)  # the heartbeat saw it and stopped the agent
    assert slow.vcs.pushed == [] and slow.forge.prs == []
    assert "cancelled" not in slow.messenger.kinds()
    current = await state_of(fast.store, task.id)
    assert current.state is TaskState.RUNNING and current.lease_owner == "fast"
    assert current.cost_usd == pytest.approx(0.25)  # what the lost attempt spent is booked
    ledger = (await fast.store.budget(now.date(), 100)).entries
    assert [(e.attempt, e.cost_usd) for e in ledger] == [(1, 0.25)]


async def test_a_stopping_worker_gives_its_leases_up(cluster: Cluster) -> None:
    leaving = await cluster.node("leaving", lease_s=600)
    staying = await cluster.node("staying")
    leaving.worker.block = True
    task = await queue(leaving)
    await leaving.runner.fill()
    await asyncio.wait_for(leaving.worker.started.wait(), 5)
    await leaving.runner.stop()
    [back] = await staying.store.requeue_expired(SystemClock().now())
    assert back.id == task.id and back.attempt == 2  # no need to wait out 600 s


async def test_a_restarted_node_requeues_only_its_own_orphans(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")
    mine, theirs = await queue(a, 1), await queue(a, 2)
    now = SystemClock().now()
    claimed = (await a.store.claim_next(now, 100, "a", 600)).task
    assert claimed is not None and claimed.id == mine.id  # then "a" crashed
    await b.store.claim_next(now, 100, "b", 600)
    a.worker.block = True
    await a.runner.start()
    await asyncio.wait_for(a.worker.started.wait(), 5)
    assert (await state_of(a.store, mine.id)).attempt == 2
    kept = await state_of(a.store, theirs.id)
    assert kept.lease_owner == "b" and kept.attempt == 1


class CountingInbox(ClaimingInbox):
    """The claiming inbox with dispatch replaced by a record of what it handled."""

    def __init__(self, store: TaskStore, node: str) -> None:
        super().__init__(store, None, SystemClock(), node)  # type: ignore[arg-type]
        self.seen: list[str] = []

    async def _dispatch(self, delivery_id: str, event_name: str, body: bytes) -> str | None:
        self.seen.append(delivery_id)
        await asyncio.sleep(0)  # the other inbox gets its turn between deliveries
        return None


async def test_two_web_processes_never_handle_one_delivery_twice(open_store: StoreFactory) -> None:
    one, two = CountingInbox(await open_store(), "web1"), CountingInbox(await open_store(), "web2")
    now = SystemClock().now()
    ids = [f"d{i:03}" for i in range(DELIVERY_BATCH * 2 + 50)]  # more than one claim takes
    for delivery_id in ids:
        assert await one.store.add_delivery(delivery_id, "ping", delivery_id.encode(), now)
    handled = await asyncio.gather(one.process_pending(), two.process_pending())
    assert sum(handled) == len(ids) and one.seen and two.seen
    assert sorted(one.seen + two.seen) == ids
    assert await two.store.pending_deliveries() == []
