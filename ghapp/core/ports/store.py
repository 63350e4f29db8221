"""The task store port: tasks, their leases, the deliveries inbox, the ledger, the directory."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Protocol

from ghapp.core.model import (
    DEFAULT_LEASE_S,
    DEFAULT_MAX_ATTEMPTS,
    LOCAL_NODE,
    BudgetView,
    Claim,
    Delivery,
    Installation,
    Lease,
    NewTask,
    Project,
    Task,
    TaskState,
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

    async def reserve_write(
        self, installation_id: int, now: datetime, interval_s: float
    ) -> datetime:
        """When this installation's next GitHub write may go: `interval_s` after the one
        reserved before it (by any process), and not before `now`."""
        ...

    async def defer_delivery(self, delivery_id: str, until: datetime, error: str) -> None:
        """Leave a delivery unprocessed, released to any node, but not claimable before `until`."""
        ...

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

    async def append_task_log(self, task_id: int, attempt: int, text: str, keep: int) -> None:
        """Add readable log lines to the task's stored tail; only its last `keep` characters stay.

        A newer attempt's lines replace an older one's; an older attempt's are ignored.
        """
        ...

    async def task_log(self, task_id: int, attempt: int) -> str | None:
        """The stored tail of that attempt's log; None when it stored none."""
        ...

    async def prune_task_logs(self, before: datetime) -> int:
        """Drop the stored logs of tasks that finished before `before`; how many."""
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
