"""The task life cycle, written once for every SQL dialect: queue, claim with a budget
reservation, leases, the ledger, finish, cancel, retry and the sweep of dead attempts.

What each transition writes is decided in ghapp/core/transitions.py; this module reads and
writes it inside one transaction, and a dialect (ghapp/store/sqlite, ghapp/store/postgres)
supplies only connections and the few statement pieces it writes differently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime

from ghapp.core import transitions as rule
from ghapp.core.model import (
    ACTIVE_STATES,
    DEFAULT_LEASE_S,
    DEFAULT_MAX_ATTEMPTS,
    LOCAL_NODE,
    TASK_FIELDS,
    BudgetView,
    Claim,
    Lease,
    LeaseLost,
    NewTask,
    Task,
    TaskState,
    utc_day,
    utcnow,
)
from ghapp.store.dialect import CANCEL_CHANNEL, QUEUE_CHANNEL, Conn
from ghapp.store.records import Records
from ghapp.store.rows import ledger_from_row, task_from_row

ACTIVE = f"state IN ({', '.join(repr(s.value) for s in ACTIVE_STATES)})"
ORDER_FOR_LISTING = """
    ORDER BY state = 'queued',
             CASE WHEN state = 'queued' THEN created_at END,
             CASE WHEN state = 'queued' THEN id ELSE -id END
"""
QUEUE_POSITION = """
    SELECT COUNT(*) FROM tasks AS q, tasks AS t
    WHERE t.id = $1 AND t.state = 'queued' AND q.state = 'queued'
      AND (q.created_at < t.created_at OR (q.created_at = t.created_at AND q.id <= t.id))
"""
# One statement, so one snapshot: a finish committing meanwhile is seen whole or not at all.
COMMITTED_TODAY = """
    SELECT (SELECT COALESCE(SUM(cost_usd), 0) FROM ledger WHERE day = $1)
         + (SELECT COALESCE(SUM(reserved_usd), 0) FROM tasks WHERE state = 'running')
"""
RESERVED = "SELECT COALESCE(SUM(reserved_usd), 0) FROM tasks WHERE state = 'running'"


class LifecycleStore(Records):
    """The TaskStore port over a dialect; subclasses add connections and SQL pieces."""

    # -- statements with dialect pieces -------------------------------------------------
    def _same_issue(self, alias: str = "") -> str:
        """Tasks of one issue: repo ($1, in any case) and number ($2)."""
        return f"{self.FOLD}({alias}repo) = {self.FOLD}($1) AND {alias}issue_number = $2"

    def _next_queued(self) -> str:
        """Oldest queued task whose issue, and whose branch in the same repo, runs nothing;
        rows another transaction holds are skipped, not waited for."""
        fold = self.FOLD
        return f"""
            SELECT * FROM tasks AS q
            WHERE q.state = 'queued'
              AND NOT EXISTS (
                SELECT 1 FROM tasks AS r
                WHERE r.state = 'running'
                  AND {fold}(r.repo) = {fold}(q.repo)
                  AND (r.issue_number = q.issue_number
                       OR (q.branch IS NOT NULL AND r.branch = q.branch))
              )
            ORDER BY q.created_at, q.id
            LIMIT 1{self._locking(of="q", skip=True)}
        """

    # -- tasks: reads -------------------------------------------------------------------
    async def _first(self, where: str, *args: object) -> Task | None:
        """The first task matching a WHERE ... ORDER BY tail."""
        async with self._read() as conn:
            row = await conn.row(f"SELECT * FROM tasks WHERE {where} LIMIT 1", *args)
        return None if row is None else task_from_row(row)

    async def get_task(self, task_id: int) -> Task | None:
        """A task by id, if it exists."""
        return await self._first("id = $1", task_id)

    async def active_task_for(self, repo: str, issue_number: int) -> Task | None:
        """The queued or running task of an issue or PR, if any."""
        where = f"{self._same_issue()} AND {ACTIVE} ORDER BY id DESC"
        return await self._first(where, repo, issue_number)

    async def latest_task_for(self, repo: str, issue_number: int) -> Task | None:
        """The newest task of an issue or PR in any state."""
        return await self._first(f"{self._same_issue()} ORDER BY id DESC", repo, issue_number)

    async def task_for_pr(self, repo: str, pr_number: int) -> Task | None:
        """The newest task that opened or updated this pull request."""
        where = f"{self.FOLD}(repo) = {self.FOLD}($1) AND pr_number = $2 ORDER BY id DESC"
        return await self._first(where, repo, pr_number)

    async def list_tasks(
        self, states: Sequence[TaskState] | None = None, limit: int = 50
    ) -> list[Task]:
        """Other states newest first, then queued ones in queue order (oldest first)."""
        names = [] if states is None else [TaskState(s).value for s in states]
        if states is not None and not names:
            return []
        marks = ", ".join(f"${i}" for i in range(2, len(names) + 2))
        where = f"WHERE state IN ({marks})" if names else ""
        async with self._read() as conn:
            found = await conn.rows(
                f"SELECT * FROM tasks {where} {ORDER_FOR_LISTING} LIMIT $1", limit, *names
            )
        return [task_from_row(row) for row in found]

    async def queue_position(self, task_id: int) -> int | None:
        """1-based place of a queued task in the queue; None if it is not queued."""
        async with self._read() as conn:
            position = await conn.value(QUEUE_POSITION, task_id)
        return int(position or 0) or None

    async def count(self, state: TaskState) -> int:
        """How many tasks are in one state."""
        async with self._read() as conn:
            return int(await conn.value("SELECT COUNT(*) FROM tasks WHERE state = $1", state))

    async def budget(self, day: date, daily_budget_usd: float) -> BudgetView:
        """The day's spend from the ledger plus what running tasks hold in reserve."""
        async with self._read(snapshot=True) as conn:
            found = await conn.rows(
                "SELECT day, task_id, attempt, cost_usd FROM ledger WHERE day = $1 ORDER BY id",
                day,
            )
            reserved = float(await conn.value(RESERVED))
        entries = tuple(ledger_from_row(row) for row in found)
        return BudgetView(
            day=day,
            daily_budget_usd=daily_budget_usd,
            spent_usd=sum(entry.cost_usd for entry in entries),
            reserved_usd=reserved,
            entries=entries,
        )

    # -- tasks: writing inside a transaction --------------------------------------------
    async def _get(self, conn: Conn, task_id: int) -> Task | None:
        """One task, row-locked (where rows lock) until the transaction ends."""
        row = await conn.row(f"SELECT * FROM tasks WHERE id = $1{self._locking()}", task_id)
        return None if row is None else task_from_row(row)

    @staticmethod
    async def _set(conn: Conn, task_id: int, values: Mapping[str, object]) -> Task:
        """Write columns of one task and return it; KeyError for an unknown task or field."""
        unknown = set(values) - TASK_FIELDS
        if unknown:
            raise KeyError(f"not task fields: {', '.join(sorted(unknown))}")
        names = list(values)
        assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=2))
        row = await conn.row(
            f"UPDATE tasks SET {assignments} WHERE id = $1 RETURNING *",
            task_id,
            *(values[name] for name in names),
        )
        if row is None:
            raise KeyError(task_id)
        return task_from_row(row)

    async def _book(
        self, conn: Conn, task_id: int, attempt: int, now: datetime, cost: float, at_end: bool
    ) -> float:
        """Add to (or, at an attempt's end, top up) its ledger entry; returns what was added."""
        found = await conn.value(
            f"SELECT cost_usd FROM ledger WHERE task_id = $1 AND attempt = $2{self._locking()}",
            task_id,
            attempt,
        )
        booked = None if found is None else float(found)
        added = rule.top_up(booked, cost) if at_end else float(cost)
        if booked is None:
            await conn.run(
                "INSERT INTO ledger (day, task_id, attempt, cost_usd, booked_at) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (task_id, attempt) "
                "DO UPDATE SET cost_usd = ledger.cost_usd + excluded.cost_usd",
                utc_day(now),
                task_id,
                attempt,
                added,
                now,
            )
        elif added:
            await conn.run(
                "UPDATE ledger SET cost_usd = cost_usd + $1 WHERE task_id = $2 AND attempt = $3",
                added,
                task_id,
                attempt,
            )
        if added and not at_end:
            await conn.run(
                "UPDATE tasks SET cost_usd = cost_usd + $1 WHERE id = $2", added, task_id
            )
        return added

    # -- tasks: transitions -------------------------------------------------------------
    async def create_task(self, new: NewTask, now: datetime) -> Task | None:
        """Queue a task; None (and no change) when the issue already has an active task."""
        values = rule.queued(new, now)
        names = list(values)
        marks = ", ".join(f"${i}" for i in range(1, len(names) + 1))
        async with self._tx() as conn:
            row = await conn.row(
                f"INSERT INTO tasks ({', '.join(names)}) VALUES ({marks}) "
                f"ON CONFLICT ({self.FOLD}(repo), issue_number) WHERE {ACTIVE} DO NOTHING "
                "RETURNING *",
                *(values[name] for name in names),
            )
            if row is None:
                return None
            await self._announce(conn, QUEUE_CHANNEL)
        return task_from_row(row)

    async def claim_next(
        self,
        now: datetime,
        daily_budget_usd: float,
        node: str = LOCAL_NODE,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> Claim:
        """Start the oldest eligible task if its cap fits today's budget; else say who waits."""
        refused: list[Task] = []
        async with self._tx() as conn:
            await self._serialize_claims(conn)
            while True:
                row = await conn.row(self._next_queued())
                if row is None:
                    return Claim(None, refused=tuple(refused))
                task = task_from_row(row)
                if not rule.never_fits(task.budget_usd, daily_budget_usd):
                    break
                failed = rule.refused(task, daily_budget_usd, now)
                refused.append(await self._set(conn, task.id, failed))
            committed = float(await conn.value(COMMITTED_TODAY, utc_day(now)))
            if rule.fits(committed, task.budget_usd, daily_budget_usd):
                started = await self._set(conn, task.id, rule.started(task, now, node, lease_s))
                return Claim(started, refused=tuple(refused))
            if task.wait_reason != rule.WAITING_FOR_BUDGET:
                task = await self._set(conn, task.id, rule.waiting_for_budget(now))
            return Claim(None, waiting_for_budget=task, refused=tuple(refused))

    async def renew(self, task_id: int, lease: Lease, now: datetime, lease_s: float) -> Task | None:
        """Extend a held lease to now + lease_s; None when the lease is no longer held."""
        async with self._tx() as conn:
            task = await self._get(conn, task_id)
            if task is None or not rule.holds(task, lease):
                return None
            until = rule.lease_until(now, lease_s)
            return await self._set(conn, task_id, {"lease_expires_at": until})

    async def update(self, task_id: int, **fields: object) -> Task:
        """Change bookkeeping fields (never state, attempt or cost); KeyError if unknown."""
        rule.check_fields(fields)
        if not fields:
            task = await self.get_task(task_id)
            if task is None:
                raise KeyError(task_id)
            return task
        async with self._tx() as conn:
            return await self._set(conn, task_id, {**fields, "updated_at": utcnow()})

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

        With a lease the attempt must still hold the task; if it lost it, only its cost
        is booked and LeaseLost is raised.
        """
        rule.check_finish(state, cost_usd, fields)
        lost: Task | None = None
        async with self._tx() as conn:
            task = await self._get(conn, task_id)
            if task is None:
                raise KeyError(task_id)
            if lease is not None and not rule.holds(task, lease):
                lost = task
            elif task.state is not TaskState.RUNNING:
                raise ValueError(f"task {task_id} is {task.state.value}, not running")
            attempt = task.attempt if lease is None else lease.attempt
            booked = await self._book(conn, task_id, attempt, now, cost_usd, at_end=True)
            if lost is None:
                ended = rule.finished(state, now, task.cost_usd + booked)
                done = await self._set(conn, task_id, {**fields, **ended})
                await self._announce(conn, QUEUE_CHANNEL)
                return done
            if booked:
                lost = await self._set(conn, task_id, {"cost_usd": task.cost_usd + booked})
        assert lease is not None
        raise LeaseLost(task_id, lease, lost)

    async def cancel(self, task_id: int, now: datetime, reason: str) -> Task | None:
        """Queued: cancelled at once. Running: cancel_requested set. Terminal: None."""
        async with self._tx() as conn:
            task = await self._get(conn, task_id)
            if task is None or task.state.terminal:
                return None
            if task.state is TaskState.RUNNING:
                await self._announce(conn, CANCEL_CHANNEL, str(task_id))
                return await self._set(conn, task_id, rule.cancel_requested(now))
            return await self._set(conn, task_id, rule.cancelled(now, reason))

    async def retry(self, task_id: int, now: datetime) -> Task | None:
        """Failed or cancelled: back to queued as the next attempt. Otherwise None."""
        try:
            async with self._tx() as conn:
                task = await self._get(conn, task_id)
                if task is None or task.state not in (TaskState.FAILED, TaskState.CANCELLED):
                    return None
                if await conn.value(
                    f"SELECT 1 FROM tasks WHERE {self._same_issue()} AND {ACTIVE}",
                    task.repo,
                    task.issue_number,
                ):
                    return None
                again = await self._set(conn, task_id, rule.requeued(task.attempt + 1, now))
                await self._announce(conn, QUEUE_CHANNEL)
                return again
        except self.CONFLICT:  # another active task of the issue committed meanwhile
            return None

    async def add_spend(self, task_id: int, attempt: int, now: datetime, cost_usd: float) -> None:
        """Add one metered response's cost to the attempt's ledger entry and the task, now."""
        rule.check_cost(cost_usd)
        async with self._tx() as conn:
            await self._book(conn, task_id, attempt, now, cost_usd, at_end=False)

    async def requeue_expired(
        self, now: datetime, node: str | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS
    ) -> list[Task]:
        """Return running tasks whose lease expired, or that `node` held, to the queue.

        An orphan whose cancel was already asked for ends cancelled instead (not returned);
        the max_attempts-th dead attempt fails the task.
        """
        async with self._tx() as conn:
            found = await conn.rows(
                "SELECT * FROM tasks WHERE state = 'running' AND (lease_expires_at IS NULL "
                "OR lease_expires_at <= $1 OR lease_owner = $2) "
                f"ORDER BY id{self._locking(skip=True)}",
                now,
                node,
            )
            changed = []
            for task in map(task_from_row, found):
                done = await self._set(conn, task.id, rule.orphaned(task, now, max_attempts))
                if not task.cancel_requested:
                    changed.append(done)
            if any(t.state is TaskState.QUEUED for t in changed):
                await self._announce(conn, QUEUE_CHANNEL)
            return changed
