"""One attempt at a task: its lease, what stops it, what it has spent, and how it ended."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ghapp.core.context import Conversation
from ghapp.core.gate import RepoSettings, SettingsInvalid
from ghapp.core.model import Lease, LeaseLost, Repository, Task, TaskState
from ghapp.core.ports import AgentOutcome, Clock, Forge, StopReason, TaskStore, Workspace
from ghapp.core.verifying import Gate

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Ending:
    """What one attempt ended as, before it is written down."""

    state: TaskState
    reason: str | None = None
    notes: str = ""  # for the final tracking comment, e.g. hosts the egress proxy refused
    gate: str = ""  # the verify gate's outcome, for the final tracking comment
    tail: str = ""  # shown instead of the log's last lines (a failed check's output)


@dataclass(frozen=True)
class Job:
    """What an attempt works on once its checkout is ready."""

    task: Task
    repo: Repository
    ws: Workspace
    settings: RepoSettings
    convo: Conversation
    log_path: Path

    @property
    def base(self) -> str:
        """Where this attempt's commits start: a follow-up builds on its PR's commits."""
        return self.ws.start_sha if self.task.parent_task_id is not None else self.ws.base_sha


@dataclass(frozen=True)
class LeaseTimes:
    """How long a lease lasts, how often it is renewed, how often the row is looked at."""

    lease_s: float
    renew_s: float
    beat_s: float


@dataclass
class Attempt:
    """One claimed task as this process runs it; the heartbeat keeps its lease alive."""

    task: Task
    lease: Lease
    store: TaskStore
    clock: Clock
    forge: Forge
    times: LeaseTimes
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: StopReason | None = None  # why ghapp stopped it (cancel asked, lease lost)
    cost_usd: float = 0.0  # what its agent runs cost, as ghapp's proxy metered
    rescued: bool = False  # uncommitted work was committed for the agent
    gate: Gate | None = None  # the verify gate's result, when the repository has one

    @property
    def lost(self) -> bool:
        """True once another node may hold the task: this attempt may only book its cost."""
        return self.stopped is StopReason.LEASE_LOST

    def halt(self, reason: StopReason) -> None:
        """Stop the agent; a lost lease outranks a cancel, as it forbids pushing."""
        if self.stopped is None or reason is StopReason.LEASE_LOST:
            self.stopped = reason
        self.stop.set()

    def spent(self, outcome: AgentOutcome) -> AgentOutcome:
        """Add an agent run's metered cost to the attempt's."""
        self.cost_usd += outcome.cost_usd
        return outcome

    async def hold(self) -> None:
        """Confirm the lease right before a step only its holder may take (push, PR)."""
        if not self.lost:
            now, lease_s = self.clock.now(), self.times.lease_s
            if await self.store.renew(self.task.id, self.lease, now, lease_s) is None:
                self.halt(StopReason.LEASE_LOST)
        if self.lost:
            raise LeaseLost(self.task.id, self.lease)

    async def with_token(self, git_call: Callable[[str], Awaitable[T]]) -> T:
        """A git call with the installation token; once more with a fresh one if it fails."""
        installation = self.task.installation_id
        token = await self.forge.token(installation)
        try:
            return await git_call(token)
        except SettingsInvalid:
            raise
        except Exception:
            log.warning("git call for task %s failed; retrying with a fresh token", self.task.id)
            return await git_call(await self.forge.token(installation, refused=token))

    async def heartbeat(self) -> None:
        """Renew the lease and notice a cancel (asked on any node); a lost lease stops the agent.

        Runs for the whole attempt, publishing included, so a slow push keeps the task.
        A worker that cannot renew fences itself: it stops the agent a beat (or a sixth of the
        lease) before the lease it last renewed runs out, as another node may then take over.
        """
        renewed = time.monotonic()
        beat, lease_s = self.times.beat_s, self.times.lease_s
        while True:
            await asyncio.sleep(beat)
            # the next beat may come too late, and stopping the agent takes a moment too
            left = renewed + lease_s - max(beat, lease_s / 6) - time.monotonic()
            if left <= 0:
                if not self.lost:
                    log.error(
                        "task %s: lease not renewed for %.0f s; stopping its agent before "
                        "another node may take it over",
                        self.task.id,
                        time.monotonic() - renewed,
                    )
                self.halt(StopReason.LEASE_LOST)
                continue
            try:
                async with asyncio.timeout(left):
                    if time.monotonic() - renewed >= self.times.renew_s:
                        asked = time.monotonic()
                        now = self.clock.now()
                        current = await self.store.renew(self.task.id, self.lease, now, lease_s)
                        renewed = asked
                    else:
                        current = await self.store.get_task(self.task.id)
            except Exception:
                log.exception("task %s: could not reach the store to keep its lease", self.task.id)
                continue
            if not self._holds(current):
                if not self.lost:
                    log.warning("task %s: lease lost; stopping this attempt", self.task.id)
                self.halt(StopReason.LEASE_LOST)
            elif current is not None and current.cancel_requested:
                self.halt(StopReason.CANCELLED)

    def _holds(self, current: Task | None) -> bool:
        """Whether the row still says this attempt runs the task."""
        return (
            current is not None
            and current.lease_owner == self.lease.node
            and current.attempt == self.lease.attempt
            and current.state is TaskState.RUNNING
        )
