"""Push, then open or update the pull request: git decides whether there is work to land."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ghapp.core.attempt import Attempt, Ending, Job
from ghapp.core.gate import touched
from ghapp.core.model import GhappError, TaskState
from ghapp.core.ports import AgentOutcome, Forge, StopReason, TaskStore, Vcs
from ghapp.core.verifying import block_reason, pr_body, workflow_refusal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Landing:
    """The end of the pipeline for a run with commits: push, then the PR, as the gate allows."""

    store: TaskStore
    forge: Forge
    vcs: Vcs
    soft_timeout_s: float

    async def land(
        self, attempt: Attempt, job: Job, outcome: AgentOutcome, duration: float
    ) -> Ending:
        """Push, and open the PR only for a completed run with commits; the gate and the
        protected paths decide whether it is ready, a draft, or no PR at all."""
        task, repo, ws, settings, gate = job.task, job.repo, job.ws, job.settings, attempt.gate
        commits = await self.vcs.commits_since(ws, job.base)
        changed = await self.vcs.changed_files(ws, ws.base_sha) if commits else []
        refused = workflow_refusal(changed)
        if refused is not None:
            return Ending(TaskState.FAILED, refused)
        if commits:
            await attempt.hold()
            try:
                await attempt.with_token(lambda token: self.vcs.push(ws, token))
            except GhappError as exc:  # refused (workflows, protection, size): nothing landed
                return Ending(TaskState.FAILED, f"the push failed: {exc}")
        saved = f"; work so far is on branch {ws.branch}" if commits else ""
        if outcome.stopped is StopReason.CANCELLED:
            current = await self.store.get_task(task.id)
            why = (current.failure_reason if current else None) or "cancelled while running"
            return Ending(TaskState.CANCELLED, f"{why}{saved}")
        if not outcome.completed:
            reason = outcome.reason or "the agent did not complete"
            if outcome.stopped is StopReason.TIMEOUT:
                reason = f"stopped after {settings.timeout_s(self.soft_timeout_s):g} s"
            return Ending(TaskState.FAILED, f"{reason}{saved}")
        if not commits:
            return Ending(TaskState.FAILED, "the agent made no commits")
        if attempt.rescued:
            log.info("task %s: uncommitted work was rescued into a WIP commit", task.id)
        follow_up = task.parent_task_id is not None
        line = gate.report(section=follow_up) if gate is not None else ""
        red = gate is not None and not gate.green
        blocked = block_reason(gate, settings)
        if blocked is not None:
            reason, tail = blocked
            return Ending(TaskState.FAILED, f"{reason}{saved}", gate=line, tail=tail)
        protected = touched(changed, settings.protected_paths)
        body = pr_body(task, outcome, commits, duration, gate, protected)
        await attempt.hold()
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
        return Ending(TaskState.SUCCEEDED, gate=line)
