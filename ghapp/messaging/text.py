"""Plain-text formatting shared by the chat adapters; lengths count UTF-16 units (Telegram's rule,
and never less than Slack's character count)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ghapp.core.model import Task, TaskSource
from ghapp.core.ports import Notice

MAX_MESSAGE = 4096
TRIMMED = "\n[trimmed]"
ICONS = {
    "queued": "🕓",
    "started": "▶️",
    "pr_opened": "✅",
    "failed": "❌",
    "cancelled": "🚫",
    "merged": "🎉",
    "closed": "📕",
    "budget_80": "⚠️",
    "budget_exhausted": "🛑",
    "budget_wait": "⏸",
}


def units(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def cut(text: str, limit: int) -> str:
    """The longest prefix of text within limit units, never splitting a surrogate pair."""
    if units(text) <= limit:
        return text
    out, used = [], 0
    for ch in text:
        size = 2 if ord(ch) > 0xFFFF else 1
        if used + size > limit:
            break
        out.append(ch)
        used += size
    return "".join(out)


def trim(text: str, limit: int = MAX_MESSAGE) -> str:
    """One message: text cut to the limit with a visible mark when something was lost."""
    if units(text) <= limit:
        return text
    return cut(text, limit - units(TRIMMED)) + TRIMMED


def fit_tail(header: str, lines: Sequence[str], limit: int = MAX_MESSAGE) -> tuple[str, int]:
    """Header plus as many of the last lines as fit in one message; and how many fitted."""
    budget = limit - units(header) - 1
    kept: list[str] = []
    for line in reversed(lines):
        size = units(line) + 1
        if size > budget:
            break
        kept.append(line)
        budget -= size
    kept.reverse()
    return trim("\n".join([header, *kept]), limit), len(kept)


def money(value: float) -> str:
    """Dollars as the operator reads them."""
    return f"${value:.2f}"


def duration(seconds: float) -> str:
    """Compact human duration: 45s, 3m 07s, 2h 05m."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m {total % 60:02d}s"
    return f"{total // 3600}h {total % 3600 // 60:02d}m"


def elapsed(task: Task, now: datetime) -> str:
    """Run time of the current attempt so far, or in total once finished."""
    if task.started_at is None:
        return "-"
    return duration(((task.finished_at or now) - task.started_at).total_seconds())


CHATS = {TaskSource.TELEGRAM: "Telegram", TaskSource.SLACK: "Slack"}


def where(task: Task) -> str:
    """repo#issue, or the repository alone for a chat request that has no issue."""
    return f"{task.repo}#{task.issue_number}" if task.has_issue else task.repo


def describe(task: Task, width: int = 80) -> str:
    """`#7 owner/repo#12 Title` for listings."""
    title = " ".join((task.title or task.instructions).split())
    if len(title) > width:
        title = title[: width - 1] + "…"
    return f"#{task.id} {where(task)} {title}".rstrip()


def render_notice(notice: Notice) -> str:
    """A notice as the operator reads it: icon, the core's text, and timing where known."""
    text = notice.text
    task = notice.task
    if task is not None and not task.has_issue:
        chat = CHATS.get(task.source, "chat")
        text = text.replace(f"{task.repo}#{task.issue_number}", f"{task.repo} (from {chat})")
    lines = [f"{ICONS.get(notice.kind, 'ℹ️')} {text}"]
    if task is not None and notice.kind in ("pr_opened", "failed", "cancelled"):
        if task.started_at is not None and task.finished_at is not None:
            lines.append(f"Took {elapsed(task, task.finished_at)}, attempt {task.attempt}.")
        if task.title and notice.kind == "pr_opened":
            lines.append(describe(task))
    return "\n".join(lines)
