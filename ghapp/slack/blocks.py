"""Block Kit for Slack: a task's parent message with its buttons, and plain-text answers."""

from __future__ import annotations

from typing import Any

from ghapp.core.model import Task, TaskState
from ghapp.core.ports import Notice
from ghapp.messaging.text import ICONS, describe, elapsed, money, render_notice

MAX_TEXT = 3000  # a section's text; the message `text` fallback stays within it too
Block = dict[str, Any]


def escape(text: str) -> str:
    """Slack's three control characters, so task titles and logs cannot mention or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """At most `limit` characters, marking a cut."""
    return text if len(text) <= limit else text[: limit - 10] + "\n[trimmed]"


def button(name: str, task: Task, style: str | None = None) -> Block:
    """A task button; its value is the task id, re-checked on every press."""
    element: Block = {
        "type": "button",
        "action_id": f"mc_{name}",
        "text": {"type": "plain_text", "text": name.capitalize()},
        "value": str(task.id),
    }
    if style:
        element["style"] = style
    return element


def buttons(task: Task) -> list[Block]:
    """Cancel while it may still run, Retry once it failed or was cancelled, Logs once started."""
    out: list[Block] = []
    if not task.state.terminal:
        out.append(button("cancel", task, "danger"))
    if task.state in (TaskState.FAILED, TaskState.CANCELLED):
        out.append(button("retry", task, "primary"))
    if task.log_path:
        out.append(button("logs", task))
    return out


def task_summary(task: Task) -> str:
    """One parent message's text: what, where, state, cost, PR."""
    state = task.state.value + (", stopping" if task.cancel_requested else "")
    lines = [f"*{escape(describe(task))}*", f"State: {state}, attempt {task.attempt}"]
    if task.started_at is not None:
        lines.append(f"Time: {elapsed(task, task.finished_at or task.updated_at)}")
    lines.append(f"Cost: {money(task.cost_usd)} of a {money(task.budget_usd)} cap")
    if task.pr_url:
        fate = f" ({task.pr_fate})" if task.pr_fate else ""
        lines.append(f"Pull request: <{task.pr_url}|#{task.pr_number}>{fate}")
    elif task.failure_reason and task.state.terminal:
        lines.append(f"Reason: {escape(' '.join(task.failure_reason.split()))[:500]}")
    return clip("\n".join(lines))


def task_message(task: Task, kind: str) -> tuple[str, list[Block]]:
    """The parent message of a task (fallback text, blocks), rebuilt for its current state."""
    icon = ICONS.get(kind, "ℹ️")
    summary = task_summary(task)
    blocks: list[Block] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} {summary}"}},
    ]
    actions = buttons(task)
    if actions:
        # a new block_id per state, so Slack redraws the buttons when the message is updated
        block_id = f"task-{task.id}-{task.attempt}-{task.state.value}"
        blocks.append({"type": "actions", "block_id": block_id, "elements": actions})
    fallback = f"{icon} Task #{task.id} {task.state.value}: {describe(task, 60)}"
    return fallback, blocks


def notice_text(notice: Notice) -> str:
    """A thread reply or channel message: the same words the Telegram chat gets, escaped."""
    return clip(escape(render_notice(notice)))


def answer(text: str, command: str, ok: bool) -> str:
    """A command's answer; a log goes in a code block so its lines keep their shape."""
    body = escape(text)
    if command == "logs" and ok:
        head, _, rest = body.partition("\n")
        return clip(f"{head}\n```\n{rest}\n```")
    return clip(body)
