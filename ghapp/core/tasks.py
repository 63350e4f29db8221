"""Use cases behind every trigger: who may ask, what gets queued, cancel, retry, status."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ghapp.core.commands import Command, NewTaskCommand, SimpleCommand, help_text, task_cap
from ghapp.core.gate import SettingsInvalid
from ghapp.core.model import (
    WRITERS,
    GhappError,
    Installation,
    NewTask,
    Task,
    TaskSource,
    TaskState,
)
from ghapp.core.ports import Clock, Forge, NoticeKind, SettingsSource, TaskStore
from ghapp.core.publish import inert
from ghapp.core.report import Reporter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """Money limits and the command prefix the service enforces."""

    daily_budget_usd: float
    task_budget_usd: float
    task_budget_max_usd: float
    prefix: str = "/mc"


@dataclass(frozen=True)
class Trigger:
    """A request from GitHub, already translated from its payload."""

    repo: str
    installation_id: int
    number: int
    sender: str
    sender_is_bot: bool
    source: TaskSource
    command: Command | None
    error: str | None = None
    title: str = ""
    body: str = ""
    comment_id: int | None = None
    is_pull_request: bool = False
    review_path: str | None = None
    review_line: int | None = None
    delivery_id: str | None = None
    triggered_at: datetime | None = None  # the comment's or label's time, from the payload


async def requester_refusal(forge: Forge | None, task: Task) -> str | None:
    """Why the person who asked for a GitHub task may no longer spend on it, asked afresh.

    None when they still may write, or when no person asked now: the operator's chat, or a
    red-CI follow-up ghapp queued itself (bounded by MC_CI_FIX_MAX, stopped by autofix off).
    """
    if task.source.from_chat or task.source is TaskSource.CI:
        return None
    role = (
        "none"
        if forge is None
        else await forge.permission(task.installation_id, task.repo, task.requester, fresh=True)
    )
    if role in WRITERS:
        return None
    return (
        f"{task.requester}, who asked for this task, no longer has write access to "
        f"{task.repo} (their role is now {role}); nothing was spent"
    )


class RunnerControl(Protocol):
    """What the service needs from the runner: start looking, or stop a task."""

    def wake(self) -> None: ...

    def request_stop(self, task_id: int) -> bool: ...


class TaskService:
    """The one place that decides what a trigger does; adapters only translate."""

    def __init__(
        self,
        store: TaskStore,
        forge: Forge | None,
        reporter: Reporter,
        clock: Clock,
        limits: Limits,
        settings: SettingsSource | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.forge = forge
        self.reporter = reporter
        self.clock = clock
        self.limits = limits
        self.runner: RunnerControl | None = None

    async def may_write(self, installation_id: int, repo: str, user: str) -> bool:
        """Write, maintain or admin on the repository; anything else may not spend."""
        if self.forge is None:
            return False
        return await self.forge.permission(installation_id, repo, user) in WRITERS

    async def handle(self, trig: Trigger) -> str:
        """Act on a trigger; returns a short word of what happened, for logs and tests."""
        if trig.sender_is_bot:
            return "ignored: bot"
        if trig.command is None:
            help_ = help_text(self.limits.prefix, self.limits.task_budget_max_usd)
            text = f"{inert(trig.error or '')}\n\n{help_}"
            await self.reporter.reply(trig.installation_id, trig.repo, trig.number, text)
            return "bad command"
        if isinstance(trig.command, SimpleCommand) and not trig.command.changes_state:
            return await self._answer(trig, trig.command.name)
        if not await self.may_write(trig.installation_id, trig.repo, trig.sender):
            await self.reporter.reply(
                trig.installation_id,
                trig.repo,
                trig.number,
                f"{trig.sender}: only people with write access to {trig.repo} can ask "
                "MissionControl to work or change its tasks.",
            )
            return "refused"
        if isinstance(trig.command, NewTaskCommand):
            return await self._queue(trig, trig.command)
        if trig.command.name == "autofix":
            if (
                not trig.is_pull_request
                or await self.store.task_for_pr(trig.repo, trig.number) is None
            ):
                await self._say(trig, "Autofix applies to MissionControl's pull requests.")
                return "ignored: not a MissionControl pull request"
            state = (
                "on: red CI on a head MissionControl pushed gets a follow-up"
                if trig.command.arg == "on"
                else "off: red CI gets no follow-up"
            )
            await self._say(trig, f"Autofix is {state} for this pull request.")
            return f"autofix {trig.command.arg}"
        if trig.command.name == "config":
            await self._say(trig, await self.describe_settings(trig.installation_id, trig.repo))
            return "config"
        if trig.command.name == "cancel":
            task = await self.store.active_task_for(trig.repo, trig.number)
            if task is None:
                await self._say(trig, "There is no queued or running task here to cancel.")
                return "nothing to cancel"
            await self.cancel(task.id, f"cancelled by @{trig.sender}")
            return "cancelled"
        task = await self.store.latest_task_for(trig.repo, trig.number)
        again = None if task is None else await self.retry(task.id)
        if again is None:
            await self._say(trig, "There is no failed or cancelled task here to retry.")
            return "nothing to retry"
        if again.state is not TaskState.QUEUED:
            await self._say(trig, f"Task #{again.id} was not run again: {again.failure_reason}.")
            return "refused retry"
        return "retried"

    async def describe_settings(self, installation_id: int, repo: str) -> str:
        """`/mc config`: the settings a task would run with now, or why it would be refused."""
        if self.settings is None or self.forge is None:
            return "This MissionControl reads no repository settings."
        try:
            found = await self.forge.repository(installation_id, repo)
            token = await self.forge.token(installation_id)
            return (await self.settings.load(found, token)).describe()
        except SettingsInvalid as exc:
            return f"A task here would be refused: {exc}"
        except GhappError as exc:
            return f"MissionControl could not read the settings: {exc}"

    async def _say(self, trig: Trigger, text: str) -> None:
        await self.reporter.reply(trig.installation_id, trig.repo, trig.number, text)

    async def _answer(self, trig: Trigger, name: str) -> str:
        """status and help: open to anyone who can comment."""
        if name == "help":
            await self._say(trig, help_text(self.limits.prefix, self.limits.task_budget_max_usd))
            return "help"
        task = await self.store.latest_task_for(trig.repo, trig.number)
        if task is None:
            await self._say(trig, "MissionControl has no task for this yet.")
        else:
            position = await self.store.queue_position(task.id)
            where = f", position {position} in the queue" if position else ""
            pr = f", pull request {task.pr_url}" if task.pr_url else ""
            await self._say(
                trig,
                f"Task #{task.id} is {task.state.value}{where}; cost ${task.cost_usd:.2f}{pr}.",
            )
        return "status"

    async def _queue(self, trig: Trigger, cmd: NewTaskCommand) -> str:
        """Create the task, or a follow-up on a PR that ghapp opened."""
        branch = pr_number = parent_id = None
        title, body, pr_description = trig.title, trig.body, ""
        if trig.is_pull_request:
            parent = await self.store.task_for_pr(trig.repo, trig.number)
            if parent is None:
                await self._say(
                    trig,
                    "MissionControl only takes feedback on pull requests it opened; "
                    f"this one is not. To start a task, use `{self.limits.prefix} <instructions>` "
                    "on an issue.",
                )
                return "ignored: not a MissionControl pull request"
            branch, pr_number, parent_id = parent.branch, parent.pr_number, parent.id
            title, body, pr_description = parent.title, parent.body, trig.body
        new = NewTask(
            source=trig.source,
            repo=trig.repo,
            installation_id=trig.installation_id,
            issue_number=trig.number,
            requester=trig.sender,
            instructions=cmd.instructions,
            budget_usd=task_cap(
                cmd.budget_usd, self.limits.task_budget_usd, self.limits.task_budget_max_usd
            ),
            title=title,
            body=body,
            delivery_id=trig.delivery_id,
            trigger_comment_id=trig.comment_id,
            is_pull_request=trig.is_pull_request,
            branch=branch,
            pr_number=pr_number,
            review_path=trig.review_path,
            review_line=trig.review_line,
            parent_task_id=parent_id,
            # The conversation the agent reads ends here; a payload without a time: now.
            triggered_at=trig.triggered_at or self.clock.now(),
            pr_description=pr_description,
        )
        task = await self.submit(new)
        if task is not None:
            return "queued"
        active = await self.store.active_task_for(trig.repo, trig.number)
        which = f"Task #{active.id} is" if active is not None else "A task is"
        await self._say(
            trig,
            f"{which} already queued or running here, so this request was not queued. Use "
            f"`{self.limits.prefix} cancel` first, or ask again once it has finished.",
        )
        return "ignored: already active"

    async def label_removed(self, repo: str, number: int, label: str) -> str:
        """Removing the trigger label stops the issue's active task, whoever removed it
        (GitHub lets only triage and above change labels)."""
        task = await self.store.active_task_for(repo, number)
        if task is None:
            return "nothing active"
        await self.cancel(task.id, f"the {label} label was removed")
        return "cancelled"

    async def issue_closed(self, repo: str, installation_id: int, number: int, closer: str) -> str:
        """Closing stops the issue's task only when the closer may write or asked for it.

        Anyone else (an issue's author may close it) cannot stop what a maintainer started:
        the task goes on and its tracking comment says why.
        """
        task = await self.store.active_task_for(repo, number)
        if task is None:
            return "nothing active"
        if closer.lower() == task.requester.lower() or await self.may_write(
            installation_id, repo, closer
        ):
            await self.cancel(task.id, f"the issue was closed by {closer}")
            return "cancelled"
        note = (
            f"{closer} closed the issue but may not stop this task (only the requester or "
            "someone with write access can), so it goes on"
        )
        noted = await self.store.update(task.id, note=note)
        await self.reporter.track(noted, position=await self.store.queue_position(task.id))
        return "kept"

    async def pr_closed(self, repo: str, number: int, outcome: str) -> str:
        """ghapp's pull request was merged or closed: tell the operator, and record its fate
        on the task that opened it and on each follow-up that succeeded."""
        task = await self.store.task_for_pr(repo, number)
        if task is None:
            return "not ours"
        await self.reporter.notify(
            NoticeKind(outcome), f"Task #{task.id}: pull request {outcome}", task
        )
        while task is not None:  # the follow-ups and the task that opened the PR
            if task.state is TaskState.SUCCEEDED:
                await self.reporter.track(await self.store.update(task.id, pr_fate=outcome))
            parent = task.parent_task_id
            task = await self.store.get_task(parent) if parent is not None else None
        return outcome

    async def installation_changed(self, action: str, installation: Installation) -> str:
        """The app was installed, removed, unsuspended or given new permissions."""
        if action == "deleted":
            await self.store.remove_installation(installation.id)
            return "removed"
        if action in ("created", "new_permissions_accepted", "unsuspend"):
            await self.store.upsert_installation(installation)
            return "saved"
        return "ignored"

    async def repositories_changed(
        self, installation: Installation, added: list[str], removed: list[str]
    ) -> None:
        """Repositories were added to or removed from an installation, known yet or not."""
        if installation.id not in {i.id for i in await self.store.installations()}:
            await self.store.upsert_installation(installation)
        await self.store.set_installation_repos(installation.id, added, removed)

    async def submit(self, new: NewTask) -> Task | None:
        """Queue a task and announce it; None when its issue already has an active task."""
        task = await self.store.create_task(new, self.clock.now())
        if task is None:
            return None
        await self.reporter.react(task, "eyes")
        comment_id = await self.reporter.track(
            task, position=await self.store.queue_position(task.id)
        )
        if comment_id is not None:
            task = await self.store.update(task.id, tracking_comment_id=comment_id)
        text = f"Task #{task.id} queued: {task.repo}#{task.issue_number} {task.title}"
        await self.reporter.notify(NoticeKind.QUEUED, text, task)
        if self.runner is not None:
            self.runner.wake()
        return task

    async def cancel(self, task_id: int, reason: str) -> Task | None:
        """Cancel a queued task now, or ask the runner to stop a running one."""
        task = await self.store.cancel(task_id, self.clock.now(), reason)
        if task is None:
            return None
        if task.state is TaskState.RUNNING:
            await self.store.update(task.id, failure_reason=reason)
            if self.runner is not None:
                self.runner.request_stop(task.id)
            return task
        await self.reporter.track(task)
        text = f"Task #{task.id} cancelled: {reason}"
        await self.reporter.notify(NoticeKind.CANCELLED, text, task)
        return task

    async def retry(self, task_id: int) -> Task | None:
        """Re-queue a failed or cancelled task as its next attempt.

        The requester's permission is asked afresh first: if they lost write access the
        task stays where it is with that reason (returned, not queued). None when there
        is nothing to retry.
        """
        old = await self.store.get_task(task_id)
        if old is None or old.state not in (TaskState.FAILED, TaskState.CANCELLED):
            return None
        refusal = await requester_refusal(self.forge, old)
        if refusal is not None:
            refused = await self.store.update(task_id, failure_reason=refusal)
            await self.reporter.track(refused)
            return refused
        task = await self.store.retry(task_id, self.clock.now())
        if task is None:
            return None
        await self.reporter.track(task, position=await self.store.queue_position(task.id))
        await self.reporter.notify(
            NoticeKind.QUEUED, f"Task #{task.id} re-queued (attempt {task.attempt})", task
        )
        if self.runner is not None:
            self.runner.wake()
        return task
