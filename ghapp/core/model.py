"""Domain values shared by the core and every adapter; no I/O, no framework."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum


class TaskState(StrEnum):
    """Life cycle of a task; the last three are terminal."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Terminal states never change again except by an explicit retry."""
        return self in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)


ACTIVE_STATES = (TaskState.QUEUED, TaskState.RUNNING)
# GitHub permission levels that may start, stop and steer work.
WRITERS = frozenset({"admin", "maintain", "write"})
# The node a store call speaks for when nobody says (one process on one machine).
LOCAL_NODE = "local"
# How long a claimed task stays its worker's without a renewal.
DEFAULT_LEASE_S = 60.0
# Attempts whose worker died (crash, kill, lost lease) before a task is failed.
DEFAULT_MAX_ATTEMPTS = 3
# Readable log lines each task keeps in the store, so /logs answers the same on every node.
STORED_LOG_CHARS = 256 << 10


class TaskSource(StrEnum):
    """Where the request came from; shown in the PR and used for replies."""

    LABEL = "label"
    COMMENT = "comment"
    REVIEW = "review"
    TELEGRAM = "telegram"
    SLACK = "slack"
    CI = "ci"  # a follow-up ghapp queued itself because CI failed on its pull request

    @property
    def from_chat(self) -> bool:
        """Asked for by the operator in a chat: no GitHub user, no issue to close."""
        return self in (TaskSource.TELEGRAM, TaskSource.SLACK)


def utcnow() -> datetime:
    """Aware UTC now, the only time zone the store speaks."""
    return datetime.now(UTC)


def utc_day(moment: datetime) -> date:
    """The budget day a moment belongs to."""
    return moment.astimezone(UTC).date()


@dataclass(frozen=True)
class NewTask:
    """What a trigger asks for, before the store gives it an id."""

    source: TaskSource
    repo: str
    installation_id: int
    issue_number: int
    requester: str
    instructions: str
    budget_usd: float
    title: str = ""
    body: str = ""
    delivery_id: str | None = None
    trigger_comment_id: int | None = None
    is_pull_request: bool = False
    branch: str | None = None
    pr_number: int | None = None
    review_path: str | None = None
    review_line: int | None = None
    parent_task_id: int | None = None
    triggered_at: datetime | None = None
    pr_description: str = ""


@dataclass(frozen=True)
class Task:
    """A stored task; every field is a column of the tasks table."""

    id: int
    source: TaskSource
    repo: str
    installation_id: int
    issue_number: int
    requester: str
    instructions: str
    budget_usd: float
    state: TaskState
    created_at: datetime
    title: str = ""
    body: str = ""
    delivery_id: str | None = None
    trigger_comment_id: int | None = None
    is_pull_request: bool = False
    attempt: int = 1
    branch: str | None = None
    base_sha: str | None = None
    pr_number: int | None = None
    pr_url: str | None = None
    pr_fate: str | None = None
    cost_usd: float = 0.0
    reserved_usd: float = 0.0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    failure_reason: str | None = None
    wait_reason: str | None = None
    summary: str | None = None
    log_path: str | None = None
    cancel_requested: bool = False
    tracking_comment_id: int | None = None
    review_path: str | None = None
    review_line: int | None = None
    parent_task_id: int | None = None
    # When the request was made: the conversation the agent reads ends here.
    triggered_at: datetime | None = None
    # A PR follow-up's pull request description as of the trigger.
    pr_description: str = ""
    # What the prompt left out of the conversation, for the tracking comment.
    context_note: str | None = None
    updated_at: datetime = field(default_factory=utcnow)
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    crashes: int = 0
    note: str | None = None

    @property
    def has_issue(self) -> bool:
        """Asked for on a GitHub issue or pull request; a chat request has none, and carries
        a negative stand-in number no GitHub issue can collide with."""
        return self.issue_number > 0

    @property
    def owner(self) -> str:
        """Repository owner login."""
        return self.repo.split("/", 1)[0]

    @property
    def name(self) -> str:
        """Repository name without the owner."""
        return self.repo.split("/", 1)[1]


TASK_FIELDS = frozenset(f.name for f in dataclasses.fields(Task))
# Fields a caller may change with TaskStore.update; state and lease move only by transitions.
MUTABLE_FIELDS = TASK_FIELDS - {
    "id",
    "state",
    "created_at",
    "updated_at",
    "attempt",
    "cost_usd",
    "lease_owner",
    "lease_expires_at",
    "triggered_at",
    "pr_description",
    "crashes",
}


@dataclass(frozen=True)
class Lease:
    """The right of one node to run one attempt; every write of that run is fenced by it."""

    node: str
    attempt: int


@dataclass(frozen=True)
class Delivery:
    """A webhook delivery as stored in the inbox before it is processed."""

    id: str
    event: str
    body: bytes
    received_at: datetime
    processed_at: datetime | None = None
    error: str | None = None


@dataclass(frozen=True)
class Claim:
    """The outcome of asking the store for work: a task, or why none started.

    `refused` are queued tasks the claim failed because they could never start (a cap
    above the whole daily budget); the caller tells their requesters.
    """

    task: Task | None
    waiting_for_budget: Task | None = None
    refused: tuple[Task, ...] = ()


@dataclass(frozen=True)
class LedgerEntry:
    """One run's real cost, booked on the UTC day it finished."""

    day: date
    task_id: int
    attempt: int
    cost_usd: float


@dataclass(frozen=True)
class BudgetView:
    """Today's money picture for status replies and the runner's checks."""

    day: date
    daily_budget_usd: float
    spent_usd: float
    reserved_usd: float
    entries: tuple[LedgerEntry, ...] = ()

    @property
    def remaining_usd(self) -> float:
        """Money that a new task may still reserve today."""
        return max(0.0, self.daily_budget_usd - self.spent_usd - self.reserved_usd)


@dataclass(frozen=True)
class Installation:
    """A GitHub App installation and the repositories it can reach."""

    id: int
    account: str
    repos: tuple[str, ...] = ()


@dataclass(frozen=True)
class Project:
    """An operator's short name for a repository, used by the chat commands."""

    slug: str
    repo: str
    installation_id: int
    is_default: bool = False


@dataclass(frozen=True)
class Repository:
    """What the runner needs to know about a repository on the forge."""

    full_name: str
    default_branch: str
    clone_url: str
    html_url: str = ""


@dataclass(frozen=True)
class Remark:
    """One comment of an issue or pull request conversation, as the forge returned it."""

    id: int
    author: str
    body: str
    created_at: datetime
    updated_at: datetime
    by_bot: bool = False
    ours: bool = False  # written by this app
    path: str | None = None  # an inline review comment's file and line
    line: int | None = None


@dataclass(frozen=True)
class Thread:
    """A conversation's newest comments, oldest first; `older` ones were not fetched."""

    remarks: tuple[Remark, ...] = ()
    older: int = 0


@dataclass(frozen=True)
class IssueText:
    """An issue or pull request's title and description, for a reference to it."""

    number: int
    title: str
    body: str
    is_pull_request: bool = False
    updated_at: datetime | None = None


@dataclass(frozen=True)
class PullRequest:
    """A pull request ghapp opened or found."""

    number: int
    url: str
    head: str
    state: str = "open"
    draft: bool = False


@dataclass(frozen=True)
class CheckRun:
    """One check run on a commit, as the forge reports it."""

    id: int
    name: str
    status: str  # queued, in_progress, completed, ...
    conclusion: str | None  # success, failure, timed_out, cancelled, neutral, ... when completed
    output: str = ""  # its title, summary and text
    app: str = ""  # the app that made it, e.g. github-actions


@dataclass(frozen=True)
class PullHead:
    """Where an open or closed pull request's head stands now."""

    number: int
    sha: str
    branch: str
    open: bool


class GhappError(Exception):
    """Base of every error that carries a message meant for a human."""


class BadCommand(GhappError):
    """A command that does not parse; its message says how to write it."""


class LeaseLost(GhappError):
    """The attempt no longer holds its task (expired and taken over, or ended elsewhere)."""

    def __init__(self, task_id: int, lease: Lease, task: Task | None = None) -> None:
        super().__init__(f"task {task_id}: {lease.node} no longer holds attempt {lease.attempt}")
        self.task_id, self.lease, self.task = task_id, lease, task
