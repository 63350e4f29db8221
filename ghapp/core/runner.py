"""Turns queued tasks into pull requests; trusts git, not the agent, and always finishes a task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import TypeVar

from ghapp.core.context import DEFAULT_MAX_CHARS, ContextReader, Conversation
from ghapp.core.gate import RepoSettings, SettingsInvalid, touched
from ghapp.core.model import (
    DEFAULT_LEASE_S,
    DEFAULT_MAX_ATTEMPTS,
    LOCAL_NODE,
    Lease,
    LeaseLost,
    PullRequest,
    Repository,
    Task,
    TaskState,
    utc_day,
)
from ghapp.core.ports import (
    AgentOutcome,
    AgentRequest,
    Checks,
    Clock,
    Forge,
    LogReader,
    SettingsSource,
    StopReason,
    TaskStore,
    Vcs,
    Worker,
    Workspace,
)
from ghapp.core.prompt import build_prompt
from ghapp.core.publish import code
from ghapp.core.report import Reporter
from ghapp.core.tasks import requester_refusal
from ghapp.core.transitions import WAITING_FOR_BUDGET
from ghapp.core.verifying import (
    Gate,
    block_reason,
    pr_body,
    run_setup,
    verify,
    workflow_refusal,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
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


@dataclass
class _Run:
    """One attempt this process runs: its lease, and what ends it early."""

    task: Task
    lease: Lease
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    lost: bool = False


@dataclass
class _Result:
    """What one attempt ended as, before it is written down."""

    state: TaskState
    reason: str | None = None
    pr: PullRequest | None = None
    notes: str = ""  # for the final tracking comment, e.g. hosts the egress proxy refused
    gate: str = ""  # the verify gate's outcome, for the final tracking comment
    tail: str = ""  # shown instead of the log's last lines (a failed check's output)


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
        self.logs = logs
        self.settings, self.checks = settings, checks
        self.context = ContextReader(forge, store, config.context_max_chars)
        self._wake = asyncio.Event()
        self._runs: dict[int, _Run] = {}
        self._jobs: dict[int, asyncio.Task[None]] = {}
        self._swept_at = float("-inf")
        self._loop: asyncio.Task[None] | None = None
        self._stopping = False
        self._waiting_announced: set[int] = set()
        self._budget_alerts: set[tuple[date, str]] = set()

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
        run = self._runs.get(task_id)
        if run is None:
            return False
        run.stop.set()
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
        for run in runs:
            with contextlib.suppress(Exception):
                await self.store.renew(run.task.id, run.lease, self.clock.now(), 0)

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
                await self._report_end(done, done.cost_usd)

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
                await self._report_end(refused)
            if claim.task is None:
                waiting = claim.waiting_for_budget
                if waiting is not None and waiting.id not in self._waiting_announced:
                    self._waiting_announced.add(waiting.id)
                    await self._track(waiting, position=1)
                    await self.reporter.notify(
                        "budget_wait", f"Task #{waiting.id} is {WAITING_FOR_BUDGET}", waiting
                    )
                return
            task = claim.task
            self._waiting_announced.discard(task.id)
            run = _Run(task, Lease(self.config.node, task.attempt))
            self._runs[task.id] = run
            job = asyncio.create_task(self._run(run), name=f"ghapp-task-{task.id}")
            self._jobs[task.id] = job

    async def _run(self, run: _Run) -> None:
        """One attempt from claim to a terminal state; a shutdown leaves it to crash recovery."""
        task = run.task
        heartbeat = asyncio.create_task(self._heartbeat(run))
        cost_box = [0.0]
        try:
            try:
                result = await self._attempt(task, run, cost_box)
            except LeaseLost:
                result = _Result(TaskState.FAILED, "this worker lost its lease on the task")
            except Exception as exc:
                log.exception("task %s failed inside ghapp", task.id)
                result = _Result(TaskState.FAILED, f"internal error: {type(exc).__name__}: {exc}")
            await self._finish(run, result, cost_box[0])
        finally:
            heartbeat.cancel()
            self._runs.pop(task.id, None)
            self._jobs.pop(task.id, None)
            self.wake()

    async def _heartbeat(self, run: _Run) -> None:
        """Renew the lease and notice a cancel (asked on any node); a lost lease stops the agent.

        Runs for the whole attempt, publishing included, so a slow push keeps the task.
        A worker that cannot renew fences itself: it stops the agent a beat (or a sixth of the
        lease) before the lease it last renewed runs out, as another node may then take over.
        """
        renewed = time.monotonic()
        beat, lease_s = self.config.heartbeat_s, self.config.lease_s
        while True:
            await asyncio.sleep(beat)
            # the next beat may come too late, and stopping the agent takes a moment too
            left = renewed + lease_s - max(beat, lease_s / 6) - time.monotonic()
            if left <= 0:
                if not run.lost:
                    log.error(
                        "task %s: lease not renewed for %.0f s; stopping its agent before "
                        "another node may take it over",
                        run.task.id,
                        time.monotonic() - renewed,
                    )
                run.lost = True
                run.stop.set()
                continue
            try:
                async with asyncio.timeout(left):
                    if time.monotonic() - renewed >= self.config.renew_s:
                        asked = time.monotonic()
                        now = self.clock.now()
                        current = await self.store.renew(run.task.id, run.lease, now, lease_s)
                        renewed = asked
                    else:
                        current = await self.store.get_task(run.task.id)
            except Exception:
                log.exception("task %s: could not reach the store to keep its lease", run.task.id)
                continue
            if (
                current is None
                or current.lease_owner != run.lease.node
                or (current.attempt != run.lease.attempt or current.state is not TaskState.RUNNING)
            ):
                if not run.lost:
                    log.warning("task %s: lease lost; stopping this attempt", run.task.id)
                run.lost = True
                run.stop.set()
            elif current.cancel_requested:
                run.stop.set()

    async def _hold(self, run: _Run) -> None:
        """Confirm the lease right before a step only its holder may take (push, PR)."""
        if not run.lost:
            now = self.clock.now()
            held = await self.store.renew(run.task.id, run.lease, now, self.config.lease_s)
            run.lost = held is None
        if run.lost:
            raise LeaseLost(run.task.id, run.lease)

    async def _attempt(self, task: Task, run: _Run, cost_box: list[float]) -> _Result:
        """Read the repository's settings, prepare, run the agent, verify, then let git decide."""
        refusal = await requester_refusal(self.forge, task)
        if refusal is not None:
            return _Result(TaskState.FAILED, refusal)
        log_path = self.config.log_dir / f"task-{task.id}-attempt-{task.attempt}.log"
        convo = await self.context.read(task)  # the conversation up to the trigger
        task = await self.store.update(
            task.id, log_path=str(log_path), wait_reason=None, context_note=convo.note or None
        )
        task = await self._track(task)
        await self.reporter.notify(
            "started", f"Task #{task.id} started: {task.repo}#{task.issue_number}", task
        )
        repo = await self.forge.repository(task.installation_id, task.repo)
        settings = RepoSettings()
        if self.settings is not None:
            source = self.settings
            try:
                settings = await self._with_token(task, lambda token: source.load(repo, token))
            except SettingsInvalid as exc:  # before the agent: nothing was spent
                return _Result(TaskState.FAILED, str(exc))
        if settings.base_branch:
            repo = replace(repo, default_branch=settings.base_branch)
        fetch = self.settings is None  # loading the settings has just fetched the mirror
        ws = await self._with_token(
            task, lambda token: self.vcs.prepare(task, repo, token, fetch=fetch)
        )
        try:
            task = await self.store.update(task.id, branch=ws.branch, base_sha=ws.base_sha)
            if run.stop.is_set():
                await self._hold(run)
                return _Result(TaskState.CANCELLED, "cancelled before the agent started")
            refused = await self._setup(task, run, ws, settings)
            if refused is not None:
                return refused
            started = self.clock.now()
            outcome = await self._run_agent(task, ws, log_path, run.stop, convo, settings)
            cost_box[0] = outcome.cost_usd
            rescued = await self.vcs.rescue(ws)
            outcome, gate = await self._gate(
                task, run, ws, settings, outcome, convo, log_path, cost_box
            )
            duration = (self.clock.now() - started).total_seconds()
            async with asyncio.timeout(self.config.grace_s):
                result = await self._publish(
                    task, run, repo, ws, outcome, duration, settings, gate, rescued
                )
            return replace(result, notes=outcome.egress_blocked)
        finally:
            with contextlib.suppress(Exception):
                await self.vcs.cleanup(ws)

    async def _setup(
        self, task: Task, run: _Run, ws: Workspace, settings: RepoSettings
    ) -> _Result | None:
        """The repository's setup commands before the agent; a failure ends the attempt."""
        if self.checks is None:
            return None
        failed = await run_setup(self.checks, ws, settings, run.stop, self._tracker(task))
        if failed is None:
            return None
        reason = f"setup command {code(failed.command)} failed; the agent did not run"
        return _Result(TaskState.FAILED, reason, tail=failed.tail)

    async def _gate(
        self,
        task: Task,
        run: _Run,
        ws: Workspace,
        settings: RepoSettings,
        outcome: AgentOutcome,
        convo: Conversation,
        log_path: Path,
        cost_box: list[float],
    ) -> tuple[AgentOutcome, Gate | None]:
        """The verify gate, for a completed run with commits and a repository that has one."""
        if self.checks is None:
            return outcome, None

        async def fix(failure: str, budget: float) -> AgentOutcome:
            again = await self._run_agent(
                task, ws, log_path, run.stop, convo, settings, failure, budget
            )
            cost_box[0] += again.cost_usd
            return again

        return await verify(
            self.vcs,
            self.checks,
            ws,
            settings,
            outcome,
            base=ws.start_sha if task.parent_task_id is not None else ws.base_sha,
            stop=run.stop,
            budget_left=lambda: settings.budget(task.budget_usd) - cost_box[0],
            track=self._tracker(task),
            fix=fix,
        )

    def _tracker(self, task: Task) -> Callable[[str], Awaitable[object]]:
        """Shows the gate's state on the task's tracking comment."""

        async def track(state: str) -> None:
            await self._track(task, gate=state)

        return track

    async def _track(
        self,
        task: Task,
        log_tail: str = "",
        position: int | None = None,
        notes: str = "",
        gate: str = "",
    ) -> Task:
        """Write the tracking comment; remember its id if this call had to create it."""
        comment_id = await self.reporter.track(
            task, log_tail=log_tail, position=position, notes=notes, gate=gate
        )
        if comment_id is None or task.tracking_comment_id is not None:
            return task
        with contextlib.suppress(Exception):
            await self.store.update(task.id, tracking_comment_id=comment_id)
        return replace(task, tracking_comment_id=comment_id)

    async def _with_token(self, task: Task, git_call: Callable[[str], Awaitable[T]]) -> T:
        """A git call with the installation token; once more with a fresh one if it fails."""
        token = await self.forge.token(task.installation_id)
        try:
            return await git_call(token)
        except SettingsInvalid:
            raise
        except Exception:
            log.warning("git call for task %s failed; retrying with a fresh token", task.id)
            return await git_call(await self.forge.token(task.installation_id, refused=token))

    async def _run_agent(
        self,
        task: Task,
        ws: Workspace,
        log_path: Path,
        stop: asyncio.Event,
        convo: Conversation,
        settings: RepoSettings,
        failure: str = "",
        budget_usd: float | None = None,
    ) -> AgentOutcome:
        """Run the worker; an exception from it is a failed run that cost nothing known."""
        request = AgentRequest(
            task_id=task.id,
            prompt=build_prompt(
                task,
                ws,
                convo,
                guidance=settings.instructions,
                guidance_path=settings.instructions_path,
                failure=failure,
            ),
            cwd=ws.path,
            home=ws.home,
            budget_usd=settings.budget(task.budget_usd) if budget_usd is None else budget_usd,
            log_path=log_path,
            soft_timeout_s=settings.timeout_s(self.config.soft_timeout_s),
            kill_after_s=self.config.kill_after_s,
            max_turns=settings.max_turns or self.config.max_turns,
            attempt=task.attempt,
            model=settings.model,
        )
        ticker = asyncio.create_task(self._progress(task))
        try:
            return await self.worker.run(request, stop)
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
                await self._track(await self.store.get_task(task.id) or task)

    async def _publish(
        self,
        task: Task,
        run: _Run,
        repo: Repository,
        ws: Workspace,
        outcome: AgentOutcome,
        duration: float,
        settings: RepoSettings,
        gate: Gate | None,
        rescued: bool,
    ) -> _Result:
        """Push, and open the PR only for a completed run with commits; the gate and the
        protected paths decide whether it is ready, a draft, or no PR at all."""
        base = ws.start_sha if task.parent_task_id is not None else ws.base_sha
        commits = await self.vcs.commits_since(ws, base)
        changed = await self.vcs.changed_files(ws, ws.base_sha) if commits else []
        refused = workflow_refusal(changed)
        if refused is not None:
            return _Result(TaskState.FAILED, refused)
        if commits:
            await self._hold(run)
            await self._with_token(task, lambda token: self.vcs.push(ws, token))
        saved = f"; work so far is on branch {ws.branch}" if commits else ""
        if outcome.stopped is StopReason.CANCELLED:
            current = await self.store.get_task(task.id)
            why = (current.failure_reason if current else None) or "cancelled while running"
            return _Result(TaskState.CANCELLED, f"{why}{saved}")
        if not outcome.completed:
            reason = outcome.reason or "the agent did not complete"
            if outcome.stopped is StopReason.TIMEOUT:
                reason = f"stopped after {settings.timeout_s(self.config.soft_timeout_s):g} s"
            return _Result(TaskState.FAILED, f"{reason}{saved}")
        if not commits:
            return _Result(TaskState.FAILED, "the agent made no commits")
        if rescued:
            log.info("task %s: uncommitted work was rescued into a WIP commit", task.id)
        follow_up = task.parent_task_id is not None
        line = gate.report(section=follow_up) if gate is not None else ""
        red = gate is not None and not gate.green
        blocked = block_reason(gate, settings)
        if blocked is not None:
            reason, tail = blocked
            return _Result(TaskState.FAILED, f"{reason}{saved}", gate=line, tail=tail)
        protected = touched(changed, settings.protected_paths)
        body = pr_body(task, outcome, commits, duration, gate, protected)
        await self._hold(run)
        pr = await self.forge.find_pr(task.installation_id, task.repo, ws.branch)
        if pr is None:
            title = task.title.strip() or task.instructions.strip()[:80] or ws.branch
            pr = await self.forge.open_pr(
                task.installation_id,
                task.repo,
                head=ws.branch,
                base=repo.default_branch,
                title=title,
                body=body,
                draft=red or bool(protected),
            )
        elif not follow_up:
            await self.forge.update_pr(task.installation_id, task.repo, pr.number, body=body)
        await self.store.update(
            task.id, pr_number=pr.number, pr_url=pr.url, summary=outcome.summary[:4000]
        )
        return _Result(TaskState.SUCCEEDED, pr=pr, gate=line)

    async def _finish(self, run: _Run, result: _Result, cost: float) -> None:
        """Write the terminal state and cost, then tell everyone; a lost lease only books."""
        task, now = run.task, self.clock.now()
        fields: dict[str, object] = {"failure_reason": result.reason}
        try:
            done = await self.store.finish(
                task.id, result.state, now, cost, lease=run.lease, **fields
            )
        except LeaseLost:
            log.warning(
                "task %s: attempt %s lost its lease to another worker; booked its cost $%.2f",
                task.id,
                run.lease.attempt,
                cost,
            )
            return
        except Exception:
            log.exception("could not record the end of task %s", task.id)
            return
        await self._report_end(done, cost, result.notes, gate=result.gate, tail=result.tail)

    async def _report_end(
        self, done: Task, cost: float = 0.0, notes: str = "", gate: str = "", tail: str = ""
    ) -> None:
        """Tell the issue and the operator how a task ended, then check the day's budget.

        A failed task shows the tail given (a failed check's output) or its log's last lines.
        """
        if not tail and done.state is TaskState.FAILED and done.log_path and self.logs:
            with contextlib.suppress(Exception):
                tail = "\n".join((await self.logs.tail(Path(done.log_path)))[-15:])[-3000:]
        await self._track(done, log_tail=tail, notes=notes, gate=gate)
        if done.state is TaskState.SUCCEEDED:
            await self.reporter.react(done, "rocket")
            await self.reporter.notify(
                "pr_opened", f"Task #{done.id}: pull request {done.pr_url} (cost ${cost:.2f})", done
            )
        elif done.state is TaskState.FAILED:
            await self.reporter.react(done, "confused")
            await self.reporter.notify(
                "failed", f"Task #{done.id} failed: {done.failure_reason} (cost ${cost:.2f})", done
            )
        else:
            await self.reporter.notify(
                "cancelled", f"Task #{done.id} cancelled: {done.failure_reason}", done
            )
        await self._budget_alert()

    async def _budget_alert(self) -> None:
        """Warn the operator once a day at 80% and when the budget is used up."""
        day = utc_day(self.clock.now())
        view = await self.store.budget(day, self.config.daily_budget_usd)
        daily = self.config.daily_budget_usd
        if daily <= 0:
            return
        for level, threshold in (("budget_80", 0.8), ("budget_exhausted", 1.0)):
            if (
                view.spent_usd >= daily * threshold - 1e-9
                and (day, level) not in self._budget_alerts
            ):
                self._budget_alerts.add((day, level))
                await self.reporter.notify(
                    level, f"Daily budget: ${view.spent_usd:.2f} of ${daily:.2f} spent ({day})"
                )
