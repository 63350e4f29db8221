"""What one process of a ghapp cluster does: its role."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What one process does: everything, or one half of a scaled-out cluster."""

    ALL = "all"
    WEB = "web"  # webhooks (and the inbox behind them)
    WORKER = "worker"  # the task runner

    @property
    def serves_webhooks(self) -> bool:
        return self is not Role.WORKER

    @property
    def runs_tasks(self) -> bool:
        return self is not Role.WEB
