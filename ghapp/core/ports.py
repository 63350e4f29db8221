"""Typed ports the core talks through; adapters implement them, bootstrap wires them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from ghapp.core.gate import CheckResult, RepoSettings
from ghapp.core.model import (
    DEFAULT_LEASE_S,
    DEFAULT_MAX_ATTEMPTS,
    LOCAL_NODE,
    BudgetView,
    CheckRun,
    Claim,
    Delivery,
    Installation,
    IssueText,
    Lease,
    NewTask,
    Project,
    PullHead,
    PullRequest,
    Repository,
    Task,
    TaskState,
    Thread,
)


class Clock(Protocol):
    """Time source, replaceable in tests to turn the UTC day."""

    def now(self) -> datetime: ...


class TaskStore(Protocol):
    """Durable tasks, deliveries inbox, spend ledger, installations and projects.

    Every method that changes state is one transaction; a method either does all of its
    change or none of it. Several processes (nodes) may share one store: a running task
    is held by a lease (owner node, expiry) that its worker renews, and only an expired
    lease, or a restarted node's own, sends the task back to the queue.
    """

    async def migrate(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool: ...

    # -- deliveries inbox -------------------------------------------------------------
    async def add_delivery(
        self, delivery_id: str, event: str, body: bytes, received_at: datetime
    ) -> bool:
        """Store a delivery; False (and no change) when its id or its body was stored before.

        Only the body is signed: a captured delivery replayed under a new id is a duplicate.
        """
        ...

    async def pending_deliveries(self, limit: int = 100) -> list[Delivery]:
        """Unprocessed deliveries, oldest first."""
        ...

    async def mark_delivery(
        self, delivery_id: str, processed_at: datetime, error: str | None = None
    ) -> None: ...

    async def has_delivery(self, delivery_id: str) -> bool: ...

    async def prune_deliveries(self, before: datetime) -> int:
        """Drop the bodies of deliveries processed before `before`; how many were dropped.

        Their ids and body hashes stay, so a redelivery or a replay is still a duplicate.
        """
        ...

    async def claim_deliveries(
        self, node: str, now: datetime, lease_s: float, limit: int = 100
    ) -> list[Delivery]:
        """Take unprocessed deliveries, oldest first, for `node` until now + lease_s.

        Skips deliveries another node holds until its claim expires; `node`'s own
        unprocessed claims come back (a restarted process takes its work back at once).
        """
        ...

    # -- tasks ------------------------------------------------------------------------
    async def create_task(self, new: NewTask, now: datetime) -> Task | None:
        """Queue a task; None (and no change) when the issue already has an active task."""
        ...

    async def get_task(self, task_id: int) -> Task | None: ...

    async def active_task_for(self, repo: str, issue_number: int) -> Task | None:
        """The queued or running task of an issue or PR, if any."""
        ...

    async def latest_task_for(self, repo: str, issue_number: int) -> Task | None:
        """The newest task of an issue or PR in any state."""
        ...

    async def task_for_pr(self, repo: str, pr_number: int) -> Task | None:
        """The newest task that opened or updated this pull request."""
        ...

    async def list_tasks(
        self, states: Sequence[TaskState] | None = None, limit: int = 50
    ) -> list[Task]:
        """Tasks in the given states; queued ones oldest first, others newest first."""
        ...

    async def queue_position(self, task_id: int) -> int | None:
        """1-based place of a queued task in the queue; None if it is not queued."""
        ...

    async def count(self, state: TaskState) -> int: ...

    async def claim_next(
        self,
        now: datetime,
        daily_budget_usd: float,
        node: str = LOCAL_NODE,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> Claim:
        """Atomically start the oldest queued task whose cap fits today's budget.

        Skips tasks whose issue or branch already has a running task. A task whose cap
        is above the whole daily budget could never start: it is failed (saying both
        figures) and returned in ``refused``. If the oldest eligible task does not fit
        today, it stays queued with wait_reason set and is returned as
        ``waiting_for_budget``; nothing younger jumps ahead of it. The
        started task is leased to `node` until now + lease_s. Claims by any number of
        nodes are serialised, so together they never reserve more than the budget.
        """
        ...

    async def renew(self, task_id: int, lease: Lease, now: datetime, lease_s: float) -> Task | None:
        """Extend a held lease to now + lease_s; None when the lease is no longer held.

        Renewing with lease_s = 0 gives the task up: the next sweep requeues it.
        """
        ...

    async def update(self, task_id: int, **fields: object) -> Task:
        """Change bookkeeping fields (never state, attempt or cost); KeyError if unknown."""
        ...

    async def finish(
        self,
        task_id: int,
        state: TaskState,
        now: datetime,
        cost_usd: float,
        lease: Lease | None = None,
        **fields: object,
    ) -> Task:
        """End a running attempt: book its cost on the ledger, release the reservation.

        With a lease, the attempt must still hold the task: otherwise its cost is booked
        (the money was spent) but nothing else changes, and LeaseLost is raised.
        """
        ...

    async def cancel(self, task_id: int, now: datetime, reason: str) -> Task | None:
        """Queued: cancelled at once. Running: cancel_requested set. Terminal: None."""
        ...

    async def retry(self, task_id: int, now: datetime) -> Task | None:
        """Failed or cancelled: back to queued as the next attempt. Otherwise None."""
        ...

    async def add_spend(self, task_id: int, attempt: int, now: datetime, cost_usd: float) -> None:
        """Add one metered response's cost to the attempt's ledger entry and the task, now.

        The metering proxy calls it as each response ends, so a crash loses none of it.
        """
        ...

    async def requeue_expired(
        self, now: datetime, node: str | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS
    ) -> list[Task]:
        """Return running tasks whose lease expired, or that `node` held, to the queue.

        Each goes back as its next attempt, unless this is the max_attempts-th attempt in
        a row that died with its worker: then it ends failed, saying so. Both kinds are
        returned. One whose cancel was asked for ends cancelled instead (not returned).
        A restarted node passes its own id: its tasks are orphans.
        """
        ...

    async def budget(self, day: date, daily_budget_usd: float) -> BudgetView: ...

    # -- installations and projects -----------------------------------------------------
    async def upsert_installation(self, installation: Installation) -> None: ...

    async def remove_installation(self, installation_id: int) -> None: ...

    async def set_installation_repos(
        self, installation_id: int, added: Sequence[str], removed: Sequence[str]
    ) -> None: ...

    async def installations(self) -> list[Installation]: ...

    async def installation_for_repo(self, repo: str) -> int | None: ...

    async def add_project(self, project: Project) -> None:
        """Add or replace a project; making it default clears the old default."""
        ...

    async def remove_project(self, slug: str) -> bool: ...

    async def projects(self) -> list[Project]: ...


class Forge(Protocol):
    """The code host's REST API as the core needs it (GitHub in production)."""

    async def token(self, installation_id: int, refused: str | None = None) -> str:
        """A valid installation token, for git calls only; `refused` is one git rejected."""
        ...

    async def permission(
        self, installation_id: int, repo: str, user: str, *, fresh: bool = False
    ) -> str:
        """The user's role on the repository: admin, maintain, write, triage, read or none.

        An adapter may cache the answer for a few minutes; `fresh` asks the forge now.
        """
        ...

    async def repository(self, installation_id: int, repo: str) -> Repository: ...

    async def comment(self, installation_id: int, repo: str, number: int, body: str) -> int:
        """Post an issue or PR comment; returns its id."""
        ...

    async def edit_comment(
        self, installation_id: int, repo: str, comment_id: int, body: str
    ) -> None: ...

    async def find_comment(
        self, installation_id: int, repo: str, number: int, marker: str, since: datetime
    ) -> int | None:
        """The id of ghapp's own comment, updated since `since`, whose body holds `marker`."""
        ...

    async def react(
        self,
        installation_id: int,
        repo: str,
        content: str,
        *,
        issue_number: int | None = None,
        comment_id: int | None = None,
        review_comment: bool = False,
    ) -> None:
        """Add a reaction to an issue, an issue comment, or a review comment."""
        ...

    async def find_pr(self, installation_id: int, repo: str, branch: str) -> PullRequest | None:
        """The open pull request whose head is this branch, if any."""
        ...

    async def open_pr(
        self,
        installation_id: int,
        repo: str,
        *,
        head: str,
        base: str,
        title: str,
        body: str,
        draft: bool = False,
    ) -> PullRequest:
        """Open a PR; a draft where the repository allows drafts, else ready and saying so."""
        ...

    async def update_pr(
        self, installation_id: int, repo: str, number: int, *, body: str
    ) -> None: ...

    async def thread(
        self, installation_id: int, repo: str, number: int, *, review: bool = False
    ) -> Thread:
        """An issue's or PR's conversation comments (`review`: a PR's inline review comments).

        Oldest first; a long conversation costs a few paginated calls and yields its newest
        comments, with the count of older ones left unfetched.
        """
        ...

    async def issue(self, installation_id: int, repo: str, number: int) -> IssueText | None:
        """An issue's or PR's title and description; None when it does not exist."""
        ...


class CiForge(Protocol):
    """What the forge says about CI on a pull request (GitHub: checks and Actions)."""

    async def pull_head(self, installation_id: int, repo: str, number: int) -> PullHead | None:
        """The pull request's current head; None when it does not exist."""
        ...

    async def check_runs(self, installation_id: int, repo: str, sha: str) -> list[CheckRun]:
        """The latest check run of each name on a commit."""
        ...

    async def committer_email(self, installation_id: int, repo: str, sha: str) -> str:
        """Who committed a commit (its committer's email), to tell ghapp's from a person's."""
        ...

    async def job_log(self, installation_id: int, repo: str, job_id: int) -> str | None:
        """An Actions job's log; None when the check run has none (another app's check)."""
        ...


@dataclass(frozen=True)
class InstallationAccess:
    """What one installation of the app may do, as the forge reports it now."""

    installation_id: int
    account: str
    organization: bool
    administration: str  # the repository permission: "write", "read" or "none"
    settings_url: str  # where an owner accepts new permissions for this installation


class RepoAdmin(Protocol):
    """Creating repositories, which only an organization installation with admin rights may."""

    async def access(self, installation_id: int) -> InstallationAccess: ...

    async def app_settings_url(self) -> str:
        """Where the app's owner changes the permissions the app asks for."""
        ...

    async def create_repo(self, installation_id: int, owner: str, name: str) -> Repository:
        """A new private repository initialised with a README; GhappError saying why not."""
        ...


@dataclass(frozen=True)
class Workspace:
    """A task's private checkout, ready for the agent."""

    path: Path
    home: Path
    branch: str
    base_sha: str
    start_sha: str
    prior_commits: tuple[str, ...] = ()


class Vcs(Protocol):
    """Git work on mirrors and task checkouts; the token only ever lives in env."""

    async def prepare(
        self, task: Task, repo: Repository, token: str, *, fetch: bool = True
    ) -> Workspace:
        """Fetch the mirror (fetch=False: it was just fetched), make the private checkout.

        Reuses the remote task branch when it already exists (a retry or follow-up).
        """
        ...

    async def rescue(self, ws: Workspace) -> bool:
        """Commit anything left uncommitted as "WIP: auto-rescue"; True if it did."""
        ...

    async def commits_since(self, ws: Workspace, base: str) -> list[str]:
        """One line per commit in base..HEAD, newest first."""
        ...

    async def push(self, ws: Workspace, token: str) -> None: ...

    async def head(self, ws: Workspace) -> str:
        """The checkout's HEAD commit."""
        ...

    async def reset(self, ws: Workspace, sha: str) -> None:
        """Put the checkout back at `sha` exactly, dropping what checks wrote or committed."""
        ...

    async def changed_files(self, ws: Workspace, base: str) -> list[str]:
        """Paths that base..HEAD changes."""
        ...

    async def cleanup(self, ws: Workspace) -> None: ...


class SettingsSource(Protocol):
    """A repository's own settings, read where the agent cannot change them."""

    async def load(self, repo: Repository, token: str) -> RepoSettings:
        """Fetch the repository; its settings at the head of its default branch.

        No file gives the operator's settings; an invalid one raises SettingsInvalid.
        """
        ...


class Checks(Protocol):
    """Runs a repository's setup or verify commands on a checkout, confined like the agent."""

    async def run(
        self,
        commands: Sequence[str],
        ws: Workspace,
        *,
        network: bool,
        timeout_s: float,
        stop: asyncio.Event,
        keep_going: bool,
    ) -> list[CheckResult]:
        """Each command in order, each within timeout_s; stops at the first failure unless
        keep_going, and at `stop`."""
        ...


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

    async def tail(self, path: Path) -> list[str]:
        """Readable lines from the end of the log; OSError when it cannot be read."""
        ...


@dataclass(frozen=True)
class Notice:
    """Something the operator wants to hear about."""

    kind: str
    text: str
    task: Task | None = None


class Messenger(Protocol):
    """Operator notifications; must return at once and never raise."""

    async def notify(self, notice: Notice) -> None: ...
