"""Red CI on ghapp's own pull requests: once every check of a head ghapp pushed has ended
and one failed, queue one follow-up that gives the agent the failing checks' output."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ghapp.core.commands import SimpleCommand, parse_command
from ghapp.core.gate import SettingsInvalid, tail_lines
from ghapp.core.model import (
    WRITERS,
    BadCommand,
    CheckRun,
    GhappError,
    NewTask,
    PullHead,
    Task,
    TaskSource,
)
from ghapp.core.ports import CiForge, Clock, Forge, SettingsSource, TaskStore
from ghapp.core.sanitize import one_line

log = logging.getLogger(__name__)
SubmitTask = Callable[[NewTask], Awaitable[Task | None]]  # TaskService.submit
FAILED = frozenset({"failure", "timed_out"})  # cancelled, stale, action_required: not the code
LOG_LINES = 200
MAX_OUTPUT_CHARS = 4000  # per check run
MAX_TEXT_CHARS = 16_000  # all of them, within the prompt's field
HEAD_MARK = "CI failed on head "


@dataclass(frozen=True)
class CiSignal:
    """A check suite or check run that completed on some commit of a repository."""

    repo: str
    installation_id: int
    head_sha: str
    pr_numbers: tuple[int, ...]
    delivery_id: str | None = None


@dataclass(frozen=True)
class CiPolicy:
    """The operator's limits on CI follow-ups."""

    max_per_pr: int = 2  # MC_CI_FIX_MAX
    budget_usd: float = 5.0  # each follow-up's cap (MC_TASK_BUDGET_USD)
    author_email: str = "mc@users.noreply.github.com"  # ghapp's commits say this
    prefix: str = "/mc"
    max_budget_usd: float = 10.0


def ci_tasks(chain: list[Task]) -> list[Task]:
    """The CI follow-ups among a pull request's tasks."""
    return [t for t in chain if t.source is TaskSource.CI]


class CiWatcher:
    """Decides, per completed check event, whether ghapp's PR gets a CI follow-up."""

    def __init__(
        self,
        store: TaskStore,
        forge: Forge,
        ci: CiForge,
        settings: SettingsSource | None,
        submit: SubmitTask,
        clock: Clock,
        policy: CiPolicy,
    ) -> None:
        self.store, self.forge, self.ci, self.settings = store, forge, ci, settings
        self.submit, self.clock, self.policy = submit, clock, policy

    async def on_check(self, signal: CiSignal) -> str:
        """Act on one event; returns a short word of what happened, for logs and tests."""
        outcome = "ignored: no pull request"
        for number in signal.pr_numbers:
            outcome = await self._one(signal, number)
        return outcome

    async def _one(self, signal: CiSignal, number: int) -> str:
        repo, inst = signal.repo, signal.installation_id
        last = await self.store.task_for_pr(repo, number)
        if last is None:
            return "ignored: not a MissionControl pull request"
        if await self.store.active_task_for(repo, number) is not None:
            return "ignored: a task is already queued or running"
        head = await self.ci.pull_head(inst, repo, number)
        if head is None or not head.open or head.sha != signal.head_sha:
            return "ignored: not the pull request's current head"
        runs = await self.ci.check_runs(inst, repo, head.sha)
        if not runs or any(r.status != "completed" for r in runs):
            return "waiting: checks still running"
        failed = [r for r in runs if r.conclusion in FAILED]
        if not failed:
            return "ignored: no check failed"
        if await self.ci.committer_email(inst, repo, head.sha) != self.policy.author_email:
            return "ignored: someone else pushed the head"
        chain = await self._chain(last)
        done = ci_tasks(chain)
        if any(HEAD_MARK + head.sha in t.instructions for t in done):
            return "ignored: this head had its follow-up"
        if len(done) >= self.policy.max_per_pr:
            return f"ignored: {len(done)} CI follow-ups already (MC_CI_FIX_MAX)"
        if not await self._autofix_on(inst, repo, number):
            return "ignored: autofix is off on this pull request"
        if not await self._ci_fix_on(inst, repo):
            return "ignored: ci_fix is off in .github/ghapp.yml"
        text = await self._failure_text(inst, repo, head, failed)
        root = chain[-1]
        new = NewTask(
            source=TaskSource.CI,
            repo=repo,
            installation_id=inst,
            issue_number=number,
            requester=root.requester,  # spends on behalf of whoever asked for the PR
            instructions=text,
            budget_usd=min(self.policy.budget_usd, self.policy.max_budget_usd),
            title=root.title,
            body=root.body,
            delivery_id=signal.delivery_id,
            is_pull_request=True,
            branch=last.branch,
            pr_number=number,
            parent_task_id=last.id,
            triggered_at=self.clock.now(),
        )
        task = await self.submit(new)
        return "queued" if task is not None else "ignored: already active"

    async def _chain(self, last: Task) -> list[Task]:
        """The pull request's tasks, newest first, back to the one that opened it."""
        chain, task = [last], last
        while task.parent_task_id is not None and len(chain) < 1000:
            parent = await self.store.get_task(task.parent_task_id)
            if parent is None:
                break
            chain.append(parent)
            task = parent
        return chain

    async def _autofix_on(self, inst: int, repo: str, number: int) -> bool:
        """The newest `autofix on|off` command of someone with write access decides; on."""
        thread = await self.forge.thread(inst, repo, number)
        for remark in reversed(thread.remarks):
            if remark.ours or remark.by_bot:
                continue
            try:
                command = parse_command(remark.body, self.policy.prefix, 1e9)
            except BadCommand:
                continue
            if not isinstance(command, SimpleCommand) or command.name != "autofix":
                continue
            role = await self.forge.permission(inst, repo, remark.author)
            if role in WRITERS:
                return command.arg == "on"
        return True

    async def _ci_fix_on(self, inst: int, repo: str) -> bool:
        """The base branch's `ci_fix`; an invalid file stops follow-ups too."""
        if self.settings is None:
            return True
        try:
            found = await self.forge.repository(inst, repo)
            token = await self.forge.token(inst)
            return (await self.settings.load(found, token)).ci_fix
        except SettingsInvalid:
            return False
        except GhappError:
            log.exception("could not read the settings of %s", repo)
            return False

    async def _failure_text(
        self, inst: int, repo: str, head: PullHead, failed: list[CheckRun]
    ) -> str:
        """What the agent reads: which checks failed, their output and job log tails."""
        parts = [f"{HEAD_MARK}{head.sha} of branch {head.branch}."]
        for run in failed:
            piece = [f"## {one_line(run.name, 200)}: {run.conclusion}"]
            if run.output.strip():
                piece.append(run.output.strip()[:MAX_OUTPUT_CHARS])
            if run.app == "github-actions":
                try:
                    job = await self.ci.job_log(inst, repo, run.id)
                except Exception:
                    log.exception("could not read the job log of check run %s", run.id)
                    job = None
                if job:
                    tail = tail_lines(job, LOG_LINES)[-MAX_OUTPUT_CHARS:]
                    piece.append(f"Last lines of the job's log:\n{tail}")
            parts.append("\n\n".join(piece))
        return "\n\n".join(parts)[:MAX_TEXT_CHARS]
