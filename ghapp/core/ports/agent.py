"""The coding agent: what one run is asked, what it reports, and its log."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from ghapp.core.model import Task


@dataclass(frozen=True)
class AgentRequest:
    """One agent run: what to tell it, where, and its limits."""

    task_id: int
    prompt: str
    cwd: Path
    home: Path
    budget_usd: float
    log_path: Path
    soft_timeout_s: float
    kill_after_s: float
    max_turns: int | None = None
    attempt: int = 1
    model: str | None = None  # None: the operator's


class StopReason(StrEnum):
    """Why ghapp ended a run before the agent did."""

    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    BUDGET = "budget reached"
    DISK = "disk limit"
    LEASE_LOST = "lease lost"  # another node may hold the task now


@dataclass(frozen=True)
class AgentOutcome:
    """What the agent run reported, advisory; its cost is what ghapp's proxy metered."""

    completed: bool
    cost_usd: float
    summary: str = ""
    reason: str | None = None
    subtype: str | None = None
    is_error: bool = False
    permission_denials: int = 0
    exit_code: int | None = None
    stopped: StopReason | None = None
    num_turns: int | None = None
    egress_blocked: str = ""  # "blocked: host ×n, …" from the egress proxy


class Worker(Protocol):
    """Runs the coding agent and reports its outcome; never raises for agent failures."""

    async def run(self, request: AgentRequest, stop: asyncio.Event) -> AgentOutcome:
        """Run until done, the soft timeout, or ``stop`` is set (cancel)."""
        ...


class LogReader(Protocol):
    """Reads a task log, whose format only the agent adapter knows."""

    async def tail(self, task: Task) -> list[str]:
        """Readable lines from the end of the task's current attempt's log, from any node.

        OSError when it cannot be read.
        """
        ...
