"""Turns queued tasks into pull requests; trusts git, not the agent, and always finishes a task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ghapp.core.attempt import Attempt, Ending, Job, LeaseTimes
from ghapp.core.context import DEFAULT_MAX_CHARS, ContextReader
from ghapp.core.ending import Finisher
from ghapp.core.gate import RepoSettings, SettingsInvalid
from ghapp.core.landing import Landing
from ghapp.core.model import (
    DEFAULT_LEASE_S,
    DEFAULT_MAX_ATTEMPTS,
    LOCAL_NODE,
    Lease,
    LeaseLost,
    Task,
    TaskState,
)
from ghapp.core.ports import (
    AgentOutcome,
    AgentRequest,
    Checks,
    Clock,
    Forge,
    LogReader,
    NoticeKind,
    SettingsSource,
    StopReason,
    TaskStore,
    Vcs,
    Worker,
)
from ghapp.core.prompt import build_prompt
from ghapp.core.publish import code
from ghapp.core.report import Reporter
from ghapp.core.tasks import requester_refusal
from ghapp.core.transitions import WAITING_FOR_BUDGET
from ghapp.core.verifying import run_setup, verify

log = logging.getLogger(__name__)
DEFAULT_MAX_TURNS = 200  # the agent's --max-turns backstop (MC_MAX_TURNS)


@dataclass(frozen=True)
class RunnerConfig:
    """Limits and places the runner needs; copied from Settings by bootstrap."""

    log_dir: Path
    concurrency: int = 1
    daily_budget_usd: float = 50.0
    soft_timeout_s: float = 1800.0
    kill_after_s: float = 60.0
    grace_s: float = 300.0
    max_turns: int | None = DEFAULT_MAX_TURNS
    poll_s: float = 5.0
    cancel_poll_s: float = 2.0
    progress_s: float = 60.0
    node: str = LOCAL_NODE
    lease_s: float = DEFAULT_LEASE_S
    context_max_chars: int = DEFAULT_MAX_CHARS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    @property
    def renew_s(self) -> float:
        """How often a held lease is renewed: three chances before it runs out."""
        return self.lease_s / 3

    @property
    def heartbeat_s(self) -> float:
        """How often a running task looks at its row (cancel asked, lease still held)."""
        return min(self.cancel_poll_s, self.renew_s)

    @property
    def lease_times(self) -> LeaseTimes:
        """What each attempt's heartbeat works to."""
        return LeaseTimes(self.lease_s, self.renew_s, self.heartbeat_s)


class TaskRunner:
    """Claims tasks up to the concurrency limit and runs each through the pipeline."""

    def __init__(
        self,
        store: TaskStore,
        forge: Forge,
        vcs: Vcs,
        worker: Worker,
        reporter: Reporter,
        clock: Clock,
        config: RunnerConfig,
        logs: LogReader | None = None,
        settings: SettingsSource | None = None,
        checks: Checks | None = None,
    ) -> None:
        self.store, self.forge, self.vcs, self.worker = store, forge, vcs, worker
        self.reporter, self.clock, self.config = reporter, clock, config
        self.settings, self.checks = settings, checks
        self.context = ContextReader(forge, store, config.context_max_chars)
        self.finisher = Finisher(store, reporter, clock, config.daily_budget_usd, logs)
        self.landing = Landing(store, forge, vcs, config.soft_timeout_s)
        self._wake = asyncio.Event()
        self._runs: dict[int, Attempt] = {}
        self._jobs: dict[int, asyncio.Task[None]] = {}
        self._swept_at = float("-inf")
        self._loop: asyncio.Task[None] | None = None
        self._stopping = False
        self._waiting_announced: set[int] = set()

    @property
    def running_ids(self) -> list[int]:
        """Tasks this process is running now."""
        return list(self._jobs)

    @property
    def alive(self) -> bool:
        """True while the claim loop runs; reported by /healthz."""
        return self._loop is not None and not self._loop.done()

    def wake(self) -> None:
        """Look for work now instead of at the next poll."""
        self._wake.set()

    def request_stop(self, task_id: int) -> bool:
        """Stop a running task as a cancel does; False if it does not run here."""
        attempt = self._runs.get(task_id)
        if attempt is None:
            return False
        attempt.halt(StopReason.CANCELLED)
        return True

    async def start(self) -> None:
        """Return this node's crash orphans and expired leases to the queue, then claim."""
        now, node = self.clock.now(), self.config.node
        await self._expired(await self.store.requeue_expired(now, node, self.config.max_attempts))
        self._swept_at = time.monotonic()
        self._stopping = False
        self._loop = asyncio.create_task(self._claim_loop(), name="ghapp-runner")

    async def stop(self) -> None:
        """Stop claiming and running agents; their leases end now, so any node resumes them."""
        if self._loop is not None:
            # The flag ends the loop even if a timeout swallows the cancel (seen on 3.11).
            self._stopping = True
            self._wake.set()
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        runs = list(self._runs.values())
        for job in list(self._jobs.values()):
            job.cancel()
        if self._jobs:
            await asyncio.gather(*self._jobs.values(), return_exceptions=True)
        for attempt in runs:
            with contextlib.suppress(Exception):
                await self.store.renew(attempt.task.id, attempt.lease, self.clock.now(), 0)

    async def drain(self) -> None:
        """Wait until nothing runs; for tests and benchmarks."""
        while self._jobs:
            await asyncio.gather(*list(self._jobs.values()), return_exceptions=True)

    async def _claim_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self.fill()
            except Exception:
                log.exception("claiming tasks failed; trying again shortly")
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancel of stop()
            # when a wake-up lands at the same moment; stop()'s flag ends the loop anyway.
            if self._stopping:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.poll_s):
                    await self._wake.wait()

    async def _expired(self, tasks: list[Task]) -> None:
        """Tasks whose worker died: queued again, or failed after MC_MAX_ATTEMPTS such deaths.

        What their attempts spent was booked by the metering proxy as it was spent.
        """
        for task in tasks:
            if task.state is TaskState.QUEUED:
                log.warning("task %s: its worker stopped or lost its lease; queued again", task.id)
            else:
                log.error("task %s failed: %s", task.id, task.failure_reason)
                done = await self.store.get_task(task.id) or task
                await self.finisher.report(done, done.cost_usd)

    async def sweep(self) -> None:
        """Requeue tasks whose worker stopped renewing its lease (it died or hung)."""
        self._swept_at = time.monotonic()
        now = self.clock.now()
        await self._expired(await self.store.requeue_expired(now, None, self.config.max_attempts))

    async def fill(self) -> None:
        """Start queued tasks until the concurrency limit or the budget says stop."""
        if time.monotonic() - self._swept_at >= self.config.renew_s:
            await self.sweep()
        while len(self._jobs) < self.config.concurrency:
            claim = await self.store.claim_next(
                self.clock.now(),
                self.config.daily_budget_usd,
                self.config.node,
                self.config.lease_s,
            )
            for refused in claim.refused:
                log.warning("task %s failed at claim: %s", refused.id, refused.failure_reason)
                await self.finisher.report(refused)
            if claim.task is None:
                waiting = claim.waiting_for_budget
                if waiting is not None and waiting.id not in self._waiting_announced:
                    self._waiting_announced.add(waiting.id)
                    await self.finisher.track(waiting, position=1)
                    text = f"Task #{waiting.id} is {WAITING_FOR_BUDGET}"
                    await self.reporter.notify(NoticeKind.BUDGET_WAIT, text, waiting)
                return
            task = claim.task
            self._waiting_announced.discard(task.id)
            lease = Lease(self.config.node, task.attempt)
            times = self.config.lease_times
            attempt = Attempt(task, lease, self.store, self.clock, self.forge, times)
            self._runs[task.id] = attempt
            job = asyncio.create_task(self._run(attempt), name=f"ghapp-task-{task.id}")
            self._jobs[task.id] = job

    async def _run(self, attempt: Attempt) -> None:
        """One attempt from claim to a terminal state; a shutdown leaves it to crash recovery."""
        task = attempt.task
        heartbeat = asyncio.create_task(attempt.heartbeat())
        try:
            try:
                ending = await self._attempt(attempt)
            except LeaseLost:
                ending = Ending(TaskState.FAILED, "this worker lost its lease on the task")
            except Exception as exc:
                log.exception("task %s failed inside ghapp", task.id)
                ending = Ending(TaskState.FAILED, f"internal error: {type(exc).__name__}: {exc}")
            heartbeat.cancel()  # the outcome is settled: its (paced) reports need no lease
            await self.finisher.finish(attempt, ending)
        finally:
            heartbeat.cancel()
            self._runs.pop(task.id, None)
            self._jobs.pop(task.id, None)
            self.wake()

    async def _attempt(self, attempt: Attempt) -> Ending:
        """DESIGN §1: permission, settings, checkout, setup, agent, salvage, gate, push, PR."""
        task = attempt.task
        refusal = await requester_refusal(self.forge, task)
        if refusal is not None:
            return Ending(TaskState.FAILED, refusal)
        log_path = self.config.log_dir / f"task-{task.id}-attempt-{task.attempt}.log"
        convo = await self.context.read(task)  # the conversation up to the trigger
        task = await self.store.update(
            task.id, log_path=str(log_path), wait_reason=None, context_note=convo.note or None
        )
        task = await self.finisher.track(task)
        text = f"Task #{task.id} started: {task.repo}#{task.issue_number}"
        await self.reporter.notify(NoticeKind.STARTED, text, task)
        repo = await self.forge.repository(task.installation_id, task.repo)
        settings = RepoSettings()
        if self.settings is not None:
            source = self.settings
            try:
                settings = await attempt.with_token(lambda token: source.load(repo, token))
            except SettingsInvalid as exc:  # before the agent: nothing was spent
                return Ending(TaskState.FAILED, str(exc))
        if settings.base_branch:
            repo = replace(repo, default_branch=settings.base_branch)
        fetch = self.settings is None  # loading the settings has just fetched the mirror
        ws = await attempt.with_token(
            lambda token: self.vcs.prepare(task, repo, token, fetch=fetch)
        )
        try:
            task = await self.store.update(task.id, branch=ws.branch, base_sha=ws.base_sha)
            if attempt.stop.is_set():
                await attempt.hold()
                return Ending(TaskState.CANCELLED, "cancelled before the agent started")
            job = Job(task, repo, ws, settings, convo, log_path)
            refused = await self._setup(attempt, job)
            if refused is not None:
                return refused
            started = self.clock.now()
            outcome = attempt.spent(await self._agent(attempt, job))
            attempt.rescued = await self.vcs.rescue(ws)
            outcome = await self._gate(attempt, job, outcome)
            duration = (self.clock.now() - started).total_seconds()
            async with asyncio.timeout(self.config.grace_s):
                ending = await self.landing.land(attempt, job, outcome, duration)
            return replace(ending, notes=outcome.egress_blocked)
        finally:
            with contextlib.suppress(Exception):
                await self.vcs.cleanup(ws)

    async def _setup(self, attempt: Attempt, job: Job) -> Ending | None:
        """The repository's setup commands before the agent; a failure ends the attempt."""
        if self.checks is None:
            return None
        track = self._tracker(job.task)
        failed = await run_setup(self.checks, job.ws, job.settings, attempt.stop, track)
        if failed is None:
            return None
        reason = f"setup command {code(failed.command)} failed; the agent did not run"
        return Ending(TaskState.FAILED, reason, tail=failed.tail)

    async def _agent(
        self, attempt: Attempt, job: Job, failure: str = "", budget_usd: float | None = None
    ) -> AgentOutcome:
        """Run the worker; an exception from it is a failed run that cost nothing known."""
        task, ws, settings = job.task, job.ws, job.settings
        request = AgentRequest(
            task_id=task.id,
            prompt=build_prompt(
                task,
                ws,
                job.convo,
                guidance=settings.instructions,
                guidance_path=settings.instructions_path,
                failure=failure,
            ),
            cwd=ws.path,
            home=ws.home,
            budget_usd=settings.budget(task.budget_usd) if budget_usd is None else budget_usd,
            log_path=job.log_path,
            soft_timeout_s=settings.timeout_s(self.config.soft_timeout_s),
            kill_after_s=self.config.kill_after_s,
            max_turns=settings.max_turns or self.config.max_turns,
            attempt=task.attempt,
            model=settings.model,
        )
        ticker = asyncio.create_task(self._progress(task))
        try:
            return await self.worker.run(request, attempt.stop)
        except Exception as exc:
            log.exception("agent of task %s crashed", task.id)
            return AgentOutcome(completed=False, cost_usd=0.0, reason=f"agent crashed: {exc}")
        finally:
            ticker.cancel()

    async def _progress(self, task: Task) -> None:
        """Refresh the tracking comment while the agent runs: elapsed time, metered cost."""
        while True:
            await asyncio.sleep(self.config.progress_s)
            with contextlib.suppress(Exception):
                await self.finisher.track(await self.store.get_task(task.id) or task)

    async def _gate(self, attempt: Attempt, job: Job, outcome: AgentOutcome) -> AgentOutcome:
        """The verify gate, for a completed run with commits and a repository that has one."""
        if self.checks is None:
            return outcome
        task, settings = job.task, job.settings

        async def fix(failure: str, budget: float) -> AgentOutcome:
            return attempt.spent(await self._agent(attempt, job, failure, budget))

        outcome, attempt.gate = await verify(
            self.vcs,
            self.checks,
            job.ws,
            settings,
            outcome,
            base=job.base,
            stop=attempt.stop,
            budget_left=lambda: settings.budget(task.budget_usd) - attempt.cost_usd,
            track=self._tracker(task),
            fix=fix,
        )
        return outcome

    def _tracker(self, task: Task) -> Callable[[str], Awaitable[object]]:
        """Shows the gate's state on the task's tracking comment."""

        async def track(state: str) -> None:
            await self.finisher.track(task, gate=state)

        return track
