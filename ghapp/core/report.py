"""Tells people where a task stands: one tracking comment per task, reactions, notices."""

from __future__ import annotations

import logging
from datetime import datetime

from ghapp.core.model import Task, TaskSource, TaskState, utcnow
from ghapp.core.ports import Forge, Messenger, Notice, NoticeKind
from ghapp.core.publish import fenced, one_line

log = logging.getLogger(__name__)
MARKER = "<!-- ghapp:tracking -->"


def task_marker(task: Task) -> str:
    """Hidden text that finds a task's own tracking comment again, even if its id was lost."""
    return f"<!-- ghapp:task {task.id} {task.created_at:%Y%m%dT%H%M%S} -->"


def _elapsed(task: Task, now: datetime) -> str:
    """Human run time of a task."""
    if task.started_at is None:
        return "-"
    end = task.finished_at or now
    seconds = max(0, int((end - task.started_at).total_seconds()))
    return f"{seconds // 60}m {seconds % 60:02d}s"


def render_tracking(
    task: Task,
    prefix: str,
    *,
    position: int | None = None,
    log_tail: str = "",
    notes: str = "",
    gate: str = "",
    now: datetime | None = None,
) -> str:
    """The body of the tracking comment for the task's current state."""
    now = now or utcnow()
    lines = [
        MARKER + task_marker(task),
        f"**MissionControl task #{task.id}** (attempt {task.attempt})",
        "",
    ]
    state = task.state.value
    if task.state is TaskState.QUEUED:
        where = f", position {position} in the queue" if position else ""
        lines.append(f"State: queued{where}")
        if task.wait_reason:
            lines.append(f"Waiting: {task.wait_reason} (cap ${task.budget_usd:.2f})")
    else:
        lines.append(f"State: {state}")
    if task.started_at is not None:
        lines.append(
            f"Started: {task.started_at:%Y-%m-%d %H:%M:%S} UTC, elapsed {_elapsed(task, now)}"
        )
    cost_kind = "so far" if task.state is TaskState.RUNNING else "total"
    lines.append(f"Cost ({cost_kind}): ${task.cost_usd:.2f} of a ${task.budget_usd:.2f} cap")
    if task.context_note:
        lines.append(f"Context: {task.context_note}")
    if task.note:
        lines.append(f"Note: {one_line(task.note)}")
    if task.pr_url:
        fate = f" ({task.pr_fate})" if task.pr_fate else ""
        lines.append(f"Pull request: {task.pr_url}{fate}")
    if task.state in (TaskState.FAILED, TaskState.CANCELLED) and task.failure_reason:
        lines.append(f"Reason: {one_line(task.failure_reason)}")
        if task.state is TaskState.FAILED:
            lines.append(f"Comment `{prefix} retry` to run it again.")
    if gate:  # one line, and at the end of a follow-up its Checks section below it
        line, _, section = gate.partition("\n")
        lines.append(f"Checks: {line}")
        if section:
            lines += ["", section]
    if notes:
        lines.append(f"Network: {notes} (the operator may allow hosts with MC_AGENT_ALLOW_HOSTS)")
    if log_tail and task.state is TaskState.FAILED:
        lines += [
            "",
            "<details><summary>Last lines of the log</summary>",
            "",
            fenced(log_tail),
            "</details>",
        ]
    return "\n".join(lines)


class Reporter:
    """Writes progress to the issue and the operator; a failed report never fails a task."""

    def __init__(self, forge: Forge | None, messenger: Messenger, prefix: str) -> None:
        self.forge = forge
        self.messenger = messenger
        self.prefix = prefix

    async def track(
        self,
        task: Task,
        *,
        position: int | None = None,
        log_tail: str = "",
        notes: str = "",
        gate: str = "",
    ) -> int | None:
        """Create or edit the task's tracking comment; returns the comment id.

        A task that knows no comment first looks for one with its hidden marker: ghapp
        may have died between GitHub creating the comment and the store saving its id.
        """
        if self.forge is None or not task.has_issue:
            return task.tracking_comment_id
        body = render_tracking(
            task, self.prefix, position=position, log_tail=log_tail, notes=notes, gate=gate
        )
        comment_id = task.tracking_comment_id
        try:
            if comment_id is None:
                comment_id = await self.forge.find_comment(
                    task.installation_id,
                    task.repo,
                    task.issue_number,
                    task_marker(task),
                    task.created_at,
                )
            if comment_id is None:
                return await self.forge.comment(
                    task.installation_id, task.repo, task.issue_number, body
                )
            await self.forge.edit_comment(task.installation_id, task.repo, comment_id, body)
        except Exception:
            log.exception("could not write the tracking comment of task %s", task.id)
        return comment_id

    async def react(self, task: Task, content: str) -> None:
        """React on what triggered the task: its comment, or the issue for a label."""
        if self.forge is None or not task.has_issue:
            return
        try:
            if task.trigger_comment_id is not None:
                await self.forge.react(
                    task.installation_id,
                    task.repo,
                    content,
                    comment_id=task.trigger_comment_id,
                    review_comment=task.source is TaskSource.REVIEW,
                )
            else:
                await self.forge.react(
                    task.installation_id, task.repo, content, issue_number=task.issue_number
                )
        except Exception:
            log.exception("could not react %s on task %s", content, task.id)

    async def reply(self, installation_id: int, repo: str, number: int, text: str) -> None:
        """A one-off comment, such as a refusal or the help text."""
        if self.forge is None:
            return
        try:
            await self.forge.comment(installation_id, repo, number, text)
        except Exception:
            log.exception("could not reply on %s#%s", repo, number)

    async def notify(self, kind: NoticeKind, text: str, task: Task | None = None) -> None:
        """Tell the operator; messengers queue and never raise, but guard anyway."""
        try:
            await self.messenger.notify(Notice(kind, text, task))
        except Exception:
            log.exception("messenger failed for %s", kind)


class NullMessenger:
    """Used when no operator channel is configured."""

    async def notify(self, notice: Notice) -> None:
        log.info("notice %s: %s", notice.kind, notice.text)
