"""The operator's commands as plain text in, plain text out, shared by every chat adapter."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ghapp.core.commands import parse_budget, task_cap
from ghapp.core.model import (
    BadCommand,
    GhappError,
    NewTask,
    Project,
    Task,
    TaskSource,
    TaskState,
    utc_day,
)
from ghapp.core.ports import LogReader, RepoAdmin
from ghapp.core.tasks import TaskService
from ghapp.messaging.projects import ProjectCommands
from ghapp.messaging.text import MAX_MESSAGE, describe, elapsed, fit_tail, money

ARGS = {
    "task": "[<project>:] <description> [budget=<usd>]",
    "status": "",
    "cancel": "<task id>",
    "retry": "<task id>",
    "logs": "<task id>",
    "budget": "",
    "projects": "",
    "addproject": "<slug> <owner/repo> [--default]",
    "rmproject": "<slug>",
    "create": "[<organization>/]<slug>",
    "help": "",
}
DESCRIPTIONS = {
    "task": "queue a task on a project",
    "status": "running task, queue, last five finished",
    "cancel": "cancel a queued or running task",
    "retry": "run a failed or cancelled task again",
    "logs": "last lines of a task's log",
    "budget": "today's spend, remaining budget, caps",
    "projects": "list projects and installed repositories",
    "addproject": "add or change a project",
    "rmproject": "remove a project",
    "create": "start a project in a new repository",
    "help": "this list",
}
_PROJECT_PREFIX = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]*):(?=\s|$)")
_NO_ARGS = frozenset({"status", "budget", "projects"})
SYNTHETIC_TRIES = 50
Handler = Callable[[str, str], Awaitable[str]]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Channel:
    """What differs between chat adapters: how a command is written and how tasks are tagged."""

    name: str
    source: TaskSource
    prefix: str = "/"
    branch_tag: str = "tg"
    max_message: int = MAX_MESSAGE

    def cmd(self, name: str) -> str:
        """A command as the operator types it: `/task` on Telegram, `/mc task` on Slack."""
        return f"{self.prefix}{name}"

    def usage(self, name: str) -> str:
        """The command with its arguments."""
        return f"{self.cmd(name)} {ARGS.get(name, '')}".rstrip()


TELEGRAM = Channel("Telegram", TaskSource.TELEGRAM)


@dataclass(frozen=True)
class Reply:
    """A command's answer; `ok` is False for errors and refusals (Slack shows those privately)."""

    text: str
    ok: bool = True


def _task_id(args: str) -> int:
    """Exactly one positive task id, `12` or `#12`."""
    words = args.split()
    if len(words) != 1 or not words[0].removeprefix("#").isdigit():
        raise BadCommand("give exactly one task id, a number such as 12")
    value = int(words[0].removeprefix("#"))
    if value <= 0:
        raise BadCommand("a task id is a positive number")
    return value


def _branch_slug(text: str) -> str:
    """A short ref-safe slug of a description for the task branch."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower().encode("ascii", "ignore").decode())
    return slug.strip("-")[:40].strip("-") or "task"


class Console:
    """Executes operator commands through TaskService and the store; never raises."""

    def __init__(
        self,
        service: TaskService,
        log_reader: LogReader,
        *,
        channel: Channel = TELEGRAM,
        repos: RepoAdmin | None = None,
        log_lines: int = 50,
    ) -> None:
        self.log_reader = log_reader
        self.service = service
        self.store = service.store
        self.channel = channel
        self.log_lines = log_lines
        projects = ProjectCommands(service.store, channel.cmd, repos)
        self._handlers: dict[str, Handler] = {
            "task": self.task,
            "status": self.status,
            "cancel": self.cancel,
            "retry": self.retry,
            "logs": self.logs,
            "budget": self.budget,
            "projects": projects.show,
            "addproject": projects.add,
            "rmproject": projects.remove,
            "create": projects.create,
            "help": self.help,
            "start": self.help,
        }

    async def handle(self, command: str, args: str, requester: str) -> str:
        """Run one command and return its answer's text."""
        return (await self.run(command, args, requester)).text

    async def run(self, command: str, args: str, requester: str) -> Reply:
        """Run one command; a bad argument gives its usage line, an unknown command the help."""
        name = command.lower()
        handler = self._handlers.get(name)
        if handler is None:
            help_text = await self.help("", requester)
            return Reply(f"Unknown command {self.channel.cmd(command)}.\n\n{help_text}", False)
        usage = self.channel.usage(name if name in ARGS else "help")
        if name in _NO_ARGS and args.strip():
            return Reply(f"{self.channel.cmd(command)} takes no arguments.\nUsage: {usage}", False)
        try:
            return Reply(await handler(args.strip(), requester))
        except BadCommand as exc:
            text = str(exc)
            return Reply(f"{text[:1].upper()}{text[1:]}.\nUsage: {usage}", False)
        except GhappError as exc:  # a refusal: the message says why
            return Reply(str(exc), False)
        except Exception:
            log.exception("operator command %s failed", command)
            return Reply(
                f"Something went wrong running {self.channel.cmd(command)}; "
                "the ghapp log has the details.",
                False,
            )

    # -- tasks ----------------------------------------------------------------------------
    async def task(self, args: str, requester: str) -> str:
        """Queue a task on the named or default project with a synthetic issue number."""
        if not args:
            raise BadCommand("say what to do")
        projects = await self.store.projects()
        match = _PROJECT_PREFIX.match(args)
        if match:
            slug = match.group(1).lower()
            project = next((p for p in projects if p.slug == slug), None)
            if project is None:
                known = ", ".join(p.slug for p in projects) or "none yet"
                raise BadCommand(f"there is no project {slug!r} (projects: {known})")
            args = args[match.end() :].strip()
        else:
            project = next((p for p in projects if p.is_default), None)
            if project is None:
                raise BadCommand(
                    "there is no default project: start with <project>: or set a default "
                    f"with {self.channel.cmd('addproject')} <slug> <owner/repo> --default"
                )
        limits = self.service.limits
        description, budget = parse_budget(args, limits.task_budget_max_usd)
        if not description:
            raise BadCommand("say what to do, not only the budget")
        installation = await self.store.installation_for_repo(project.repo)
        if installation is None:
            raise GhappError(
                f"MissionControl is no longer installed on {project.repo} (project "
                f"{project.slug}); install it there again, or point the project elsewhere."
            )
        cap = task_cap(budget, limits.task_budget_usd, limits.task_budget_max_usd)
        task = await self._submit(project, installation, description, cap, requester)
        if task is None:
            raise GhappError("Could not find a free task number; try again in a minute.")
        position = await self.store.queue_position(task.id)
        where = f", position {position} in the queue" if position else ""
        return (
            f"Queued task #{task.id} on {project.repo} ({project.slug}){where}, cap {money(cap)}."
        )

    async def _submit(
        self, project: Project, installation: int, description: str, cap: float, requester: str
    ) -> Task | None:
        """Submit under a negative synthetic issue number no GitHub issue can collide with
        (`Task.has_issue` is the one place that reads it)."""
        first_line = description.strip().splitlines()[0].strip()
        title = first_line if len(first_line) <= 100 else first_line[:99] + "…"
        base = int(self.service.clock.now().timestamp())
        for k in range(SYNTHETIC_TRIES):
            number = base + k
            if await self.store.latest_task_for(project.repo, -number) is not None:
                continue  # used before: its branch and PR belong to that task
            new = NewTask(
                source=self.channel.source,
                repo=project.repo,
                installation_id=installation,
                issue_number=-number,
                requester=requester,
                instructions=description,
                budget_usd=cap,
                title=title,
                branch=f"mc/{self.channel.branch_tag}-{number}-{_branch_slug(title)}",
            )
            task = await self.service.submit(new)
            if task is not None:
                return task
        return None

    async def cancel(self, args: str, requester: str) -> str:
        """Cancel now when queued, ask the runner to stop when running."""
        task_id = _task_id(args)
        task = await self.store.get_task(task_id)
        if task is None:
            raise GhappError(f"There is no task #{task_id}.")
        if task.state.terminal:
            raise GhappError(f"Task #{task.id} already {task.state.value}; nothing to cancel.")
        reason = f"cancelled from {self.channel.name} by {requester}"
        done = await self.service.cancel(task.id, reason)
        if done is None:
            raise GhappError(f"Task #{task.id} finished before it could be cancelled.")
        if done.state is TaskState.RUNNING:
            return (
                f"Stopping task #{task.id}; it ends as cancelled and keeps its work on its branch."
            )
        return f"Task #{task.id} cancelled."

    async def retry(self, args: str, requester: str) -> str:
        """Re-queue a failed or cancelled task as its next attempt."""
        task_id = _task_id(args)
        task = await self.store.get_task(task_id)
        if task is None:
            raise GhappError(f"There is no task #{task_id}.")
        if task.state not in (TaskState.FAILED, TaskState.CANCELLED):
            raise GhappError(
                f"Task #{task.id} is {task.state.value}; only failed or cancelled tasks "
                "can be retried."
            )
        done = await self.service.retry(task.id)
        if done is None:
            active = await self.store.active_task_for(task.repo, task.issue_number)
            other = f" while task #{active.id} is active on the same issue" if active else " now"
            raise GhappError(f"Task #{task.id} cannot be retried{other}.")
        if done.state is not TaskState.QUEUED:
            raise GhappError(f"Task #{task.id} was not run again: {done.failure_reason}.")
        position = await self.store.queue_position(done.id)
        where = f", position {position} in the queue" if position else ""
        return f"Task #{done.id} queued again as attempt {done.attempt}{where}."

    async def logs(self, args: str, requester: str) -> str:
        """The last readable lines of a task's current log, in one message."""
        task_id = _task_id(args)
        task = await self.store.get_task(task_id)
        if task is None:
            raise GhappError(f"There is no task #{task_id}.")
        if not task.log_path:
            raise GhappError(f"Task #{task.id} has not started yet, so it has no log.")
        try:
            lines = await self.log_reader.tail(task)
        except OSError as exc:
            why = exc.strerror or exc
            raise GhappError(f"The log of task #{task.id} cannot be read: {why}.") from None
        if not lines:
            return f"The log of task #{task.id} has no readable lines yet."
        lines = lines[-self.log_lines :]
        head = f"Task #{task.id} log, attempt {task.attempt} ({task.state.value}), last {{}} lines:"
        limit = self.channel.max_message
        _, kept = fit_tail(head.format(len(lines)), lines, limit)
        text, _ = fit_tail(head.format(kept), lines[len(lines) - kept :], limit)
        return text

    # -- overview ---------------------------------------------------------------------------
    async def status(self, args: str, requester: str) -> str:
        """Running tasks, the queue in order, the last five finished, today's spend."""
        now = self.service.clock.now()
        out: list[str] = []
        running = await self.store.list_tasks([TaskState.RUNNING], limit=20)
        if not running:
            out.append("Nothing is running.")
        for task in running:
            spent = task.cost_usd  # metered as each model response ends
            stopping = ", stopping" if task.cancel_requested else ""
            out += [
                f"Running {describe(task)}",
                f"  {elapsed(task, now)} so far, about {money(spent)} of a "
                f"{money(task.budget_usd)} cap, attempt {task.attempt}{stopping}",
            ]
        depth = await self.store.count(TaskState.QUEUED)
        queued = await self.store.list_tasks([TaskState.QUEUED], limit=10)
        out.append(f"\nQueue: {depth} task{'s' if depth != 1 else ''}")
        for place, task in enumerate(queued, 1):
            wait = f" ({task.wait_reason})" if task.wait_reason else ""
            out.append(f"{place}. {describe(task, 60)}, cap {money(task.budget_usd)}{wait}")
        if depth > len(queued):
            out.append(f"… and {depth - len(queued)} more")
        finished = await self.store.list_tasks(
            [TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED], limit=50
        )
        finished.sort(key=lambda t: (t.finished_at or t.updated_at, t.id), reverse=True)
        if finished:
            out.append("\nLast finished:")
        for task in finished[:5]:
            line = f"{describe(task, 50)}: {task.state.value}, {money(task.cost_usd)}"
            if task.pr_url:
                line += f", {task.pr_url}" + (f" ({task.pr_fate})" if task.pr_fate else "")
            elif task.failure_reason:
                reason = " ".join(task.failure_reason.split())
                line += f", {reason[:120]}"
            out.append(line)
        view = await self.store.budget(utc_day(now), self.service.limits.daily_budget_usd)
        out.append(
            f"\nToday: {money(view.spent_usd)} of {money(view.daily_budget_usd)} spent, "
            f"{money(view.remaining_usd)} left."
        )
        return "\n".join(out)

    async def budget(self, args: str, requester: str) -> str:
        """Today's spend, what is left, the per-task breakdown and the caps."""
        limits = self.service.limits
        view = await self.store.budget(utc_day(self.service.clock.now()), limits.daily_budget_usd)
        out = [
            f"Budget for {view.day} (UTC)",
            f"Spent {money(view.spent_usd)} of {money(view.daily_budget_usd)}; "
            f"{money(view.reserved_usd)} held by running tasks; "
            f"{money(view.remaining_usd)} left.",
            f"Caps: {money(limits.daily_budget_usd)} a day; {money(limits.task_budget_usd)} a "
            f"task by default, at most {money(limits.task_budget_max_usd)} with budget=<usd>.",
        ]
        per_task: dict[int, list[float]] = {}
        for entry in view.entries:
            per_task.setdefault(entry.task_id, []).append(entry.cost_usd)
        if not per_task:
            out.append("No spend today.")
            return "\n".join(out)
        out.append("Per task today:")
        ranked = sorted(per_task.items(), key=lambda item: -sum(item[1]))
        for task_id, costs in ranked[:30]:
            task = await self.store.get_task(task_id)
            name = describe(task, 50) if task else f"#{task_id}"
            runs = f" ({len(costs)} runs)" if len(costs) > 1 else ""
            out.append(f"{name}: {money(sum(costs))}{runs}")
        if len(ranked) > 30:
            out.append(f"… and {len(ranked) - 30} more")
        return "\n".join(out)

    async def help(self, args: str, requester: str) -> str:
        """Every command with its usage."""
        limits = self.service.limits
        lines = [f"{self.channel.usage(name)} — {text}" for name, text in DESCRIPTIONS.items()]
        lines += [
            "",
            "Without <project>: a task goes to the default project. "
            f"budget=<usd> raises the task's cap (default {money(limits.task_budget_usd)}, "
            f"at most {money(limits.task_budget_max_usd)}).",
        ]
        return "\n".join(lines)
