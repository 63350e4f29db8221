"""Operator notices: what they are about, and the messengers that deliver them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from ghapp.core.model import (
    Task,
)


class NoticeKind(StrEnum):
    """What a notice is about; messengers pick icons and threads by it."""

    QUEUED = "queued"
    STARTED = "started"
    BUDGET_WAIT = "budget_wait"
    PR_OPENED = "pr_opened"
    FAILED = "failed"
    CANCELLED = "cancelled"
    MERGED = "merged"
    CLOSED = "closed"
    BUDGET_80 = "budget_80"
    BUDGET_EXHAUSTED = "budget_exhausted"
    DELIVERY_FAILED = "delivery_failed"


@dataclass(frozen=True)
class Notice:
    """Something the operator wants to hear about."""

    kind: NoticeKind
    text: str
    task: Task | None = None


class Messenger(Protocol):
    """Operator notifications; must return at once and never raise."""

    async def notify(self, notice: Notice) -> None: ...
