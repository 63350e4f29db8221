"""The one command grammar shared by GitHub comments and Telegram, so both speak alike."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ghapp.core.model import BadCommand

# Only its own token: "budget=3" is the option, "budget = 3 in config" is instructions.
_BUDGET = re.compile(r"(?:^|(?<=\s))budget=(\S+)(?=\s|$)", re.IGNORECASE)
_WORDS = ("status", "cancel", "retry", "help", "config")


@dataclass(frozen=True)
class NewTaskCommand:
    """Queue work with these instructions, optionally with a larger per-task cap."""

    instructions: str
    budget_usd: float | None = None


@dataclass(frozen=True)
class SimpleCommand:
    """status, cancel, retry, help or config; autofix takes `on` or `off`."""

    name: str
    arg: str = ""

    @property
    def changes_state(self) -> bool:
        """Only writers may cancel, retry, switch autofix, or make ghapp fetch for config."""
        return self.name in ("cancel", "retry", "config", "autofix")


Command = NewTaskCommand | SimpleCommand


def help_text(prefix: str, max_budget_usd: float) -> str:
    """The reply to help and to anything that does not parse."""
    return (
        f"`{prefix} <instructions>` queue a task (optional `budget=<usd>`, "
        f"at most ${max_budget_usd:g})\n"
        f"`{prefix} status` where this task stands\n"
        f"`{prefix} cancel` stop the queued or running task\n"
        f"`{prefix} retry` run the failed or cancelled task again\n"
        f"`{prefix} config` the effective settings (`.github/ghapp.yml` over the operator's)\n"
        f"`{prefix} autofix off` (or `on`) on a pull request: whether red CI gets a follow-up\n"
        f"`{prefix} help` this text"
    )


def parse_budget(text: str, max_budget_usd: float) -> tuple[str, float | None]:
    """Split a `budget=<usd>` option off instructions; BadCommand when it is invalid."""
    matches = list(_BUDGET.finditer(text))
    if not matches:
        return text.strip(), None
    if len(matches) > 1:
        raise BadCommand("give budget=<usd> at most once")
    raw = matches[0].group(1)
    try:
        value = float(raw.removeprefix("$"))
    except ValueError:
        raise BadCommand(f"budget must be a number of US dollars, got {raw[:40]!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise BadCommand(f"budget must be more than $0, got {raw[:40]!r}")
    if value > max_budget_usd:
        raise BadCommand(f"budget ${value:g} is above the limit of ${max_budget_usd:g}")
    rest = (text[: matches[0].start()] + " " + text[matches[0].end() :]).strip()
    return rest, value


def parse_command(text: str, prefix: str, max_budget_usd: float) -> Command | None:
    """Read a comment; None when it is not addressed to ghapp, BadCommand when malformed.

    Only the first line is the command word; instructions may span every line.
    """
    stripped = text.lstrip()
    if not stripped.startswith(prefix):
        return None
    rest = stripped[len(prefix) :]
    if rest and not rest[0].isspace():
        return None  # "/mcfoo" is someone else's command
    rest = rest.strip()
    if not rest:
        raise BadCommand("say what to do after the command")
    first, _, tail = rest.partition("\n")
    word = first.strip().lower()
    if word in _WORDS and not tail.strip():
        return SimpleCommand(word)
    name, _, arg = word.partition(" ")
    if name == "autofix" and arg.strip() in ("on", "off") and not tail.strip():
        return SimpleCommand(name, arg.strip())
    lead = first.split(maxsplit=1)[0].lower()
    if lead == "cancel":  # "/mc cancel this": stopping must never start paid work
        return SimpleCommand("cancel")
    if lead == "retry":
        raise BadCommand(
            f"`{prefix} retry` takes nothing after it (it reruns the task as it was); "
            "for new work, describe it without starting with retry"
        )
    instructions, budget = parse_budget(rest, max_budget_usd)
    if not instructions:
        raise BadCommand("say what to do, not only the budget")
    return NewTaskCommand(instructions, budget)


def task_cap(requested: float | None, default_usd: float, max_usd: float) -> float:
    """The per-task cap: what the command asked for, else the default, never above the max."""
    return min(requested if requested is not None else default_usd, max_usd)
