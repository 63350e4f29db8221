"""TaskStore on PostgreSQL (asyncpg), for several ghapp processes on several machines.

Claims are serialised by a transaction-scoped advisory lock (budget and branch checks see
every earlier claim) and take rows with FOR UPDATE SKIP LOCKED; deliveries are deduped by
their primary key; changes that matter to other nodes are announced with NOTIFY.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING

import asyncpg

from ghapp.core.model import (
    DEFAULT_LEASE_S,
    DEFAULT_MAX_ATTEMPTS,
    LOCAL_NODE,
    TASK_FIELDS,
    BudgetView,
    Claim,
    Lease,
    LeaseLost,
    LedgerEntry,
    NewTask,
    Task,
    TaskState,
    utc_day,
    utcnow,
)
from ghapp.store import pg_schema as sql
from ghapp.store import rows, rules
from ghapp.store.pg_base import PgBase, pg_value, task_from_record
from ghapp.store.rules import (
    ORPHAN_CANCELLED,
    WAITING_FOR_BUDGET,
    check_cost,
    check_fields,
    check_finish,
    fits,
    holds,
    never_fits,
    top_up,
)


class PostgresTaskStore(PgBase):
    """The TaskStore of one PostgreSQL database, shared by any number of ghapp processes."""

    # -- tasks: reads -------------------------------------------------------------------
    async def _first(self, where: str, *params: object) -> Task | None:
        """The first task matching a WHERE ... ORDER BY tail."""
        async with self._conn() as conn:
            row = await conn.fetchrow(f"SELECT * FROM tasks WHERE {where} LIMIT 1", *params)
        return None if row is None else task_from_record(row)

    async def get_task(self, task_id: int) -> Task | None:
        """A task by id, if it exists."""
        return await self._first("id = $1", task_id)

    async def active_task_for(self, repo: str, issue_number: int) -> Task | None:
        """The queued or running task of an issue or PR, if any."""
        return await self._first(
            f"lower(repo) = lower($1) AND issue_number = $2 AND {sql.ACTIVE} ORDER BY id DESC",
            repo,
            issue_number,
        )

    async def latest_task_for(self, repo: str, issue_number: int) -> Task | None:
        """The newest task of an issue or PR in any state."""
        return await self._first(
            "lower(repo) = lower($1) AND issue_number = $2 ORDER BY id DESC", repo, issue_number
        )

    async def task_for_pr(self, repo: str, pr_number: int) -> Task | None:
        """The newest task that opened or updated this pull request."""
        return await self._first(
            "lower(repo) = lower($1) AND pr_number = $2 ORDER BY id DESC", repo, pr_number
        )

    async def list_tasks(
        self, states: Sequence[TaskState] | None = None, limit: int = 50
    ) -> list[Task]:
        """Other states newest first, then queued ones in queue order (oldest first)."""
        if states is not None and not states:
            return []
        async with self._conn() as conn:
            if states is None:
                found = await conn.fetch(
                    f"SELECT * FROM tasks {sql.ORDER_FOR_LISTING} LIMIT $1", limit
                )
            else:
                found = await conn.fetch(
                    f"SELECT * FROM tasks WHERE state = ANY($1::text[]) "
                    f"{sql.ORDER_FOR_LISTING} LIMIT $2",
                    [TaskState(s).value for s in states],
                    limit,
                )
        return [task_from_record(r) for r in found]

    async def queue_position(self, task_id: int) -> int | None:
        """1-based place of a queued task in the queue; None if it is not queued."""
        async with self._conn() as conn:
            position = await conn.fetchval(sql.QUEUE_POSITION, task_id)
        return int(position) or None

    async def count(self, state: TaskState) -> int:
        """How many tasks are in one state."""
        async with self._conn() as conn:
            return int(
                await conn.fetchval("SELECT COUNT(*) FROM tasks WHERE state = $1", state.value)
            )

    # -- tasks: transitions -------------------------------------------------------------
    async def _locked(self, conn: sql.Conn, task_id: int) -> Task | None:
        """One task, row-locked until the caller's transaction ends."""
        row = await conn.fetchrow("SELECT * FROM tasks WHERE id = $1 FOR UPDATE", task_id)
        return None if row is None else task_from_record(row)

    async def _set(self, conn: sql.Conn, task_id: int, values: Mapping[str, object]) -> Task:
        """Write columns of one task inside the caller's transaction and return it."""
        unknown = set(values) - TASK_FIELDS
        if unknown:
            raise KeyError(f"not task fields: {', '.join(sorted(unknown))}")
        names = list(values)
        assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=2))
        row = await conn.fetchrow(
            f"UPDATE tasks SET {assignments} WHERE id = $1 RETURNING *",
            task_id,
            *(pg_value(values[name]) for name in names),
        )
        if row is None:
            raise KeyError(task_id)
        return task_from_record(row)

    async def create_task(self, new: NewTask, now: datetime) -> Task | None:
        """Queue a task; None (and no change) when the issue already has an active task."""
        values: dict[str, object] = {f.name: getattr(new, f.name) for f in dataclasses.fields(new)}
        values.update(state=TaskState.QUEUED, attempt=1, created_at=now, updated_at=now)
        names = list(values)
        marks = ", ".join(f"${i}" for i in range(1, len(names) + 1))
        async with self._tx() as conn:
            row = await conn.fetchrow(
                f"INSERT INTO tasks ({', '.join(names)}) VALUES ({marks}) "
                f"ON CONFLICT (lower(repo), issue_number) WHERE {sql.ACTIVE} DO NOTHING "
                "RETURNING *",
                *(pg_value(values[name]) for name in names),
            )
            if row is None:
                return None
            await self._announce(conn, sql.QUEUE_CHANNEL)
        return task_from_record(row)

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
            await conn.execute("SELECT pg_advisory_xact_lock($1)", sql.CLAIM_LOCK)
            while True:
                row = await conn.fetchrow(sql.NEXT_QUEUED)
                if row is None:
                    return Claim(None, refused=tuple(refused))
                task = task_from_record(row)
                if not never_fits(task.budget_usd, daily_budget_usd):
                    break
                failed = rules.refused(task, daily_budget_usd, now)
                refused.append(await self._set(conn, task.id, failed))
            committed = float(await conn.fetchval(sql.COMMITTED_TODAY, utc_day(now)))
            if fits(committed, task.budget_usd, daily_budget_usd):
                started = await self._set(conn, task.id, rows.started(task, now, node, lease_s))
                return Claim(started, refused=tuple(refused))
            if task.wait_reason != WAITING_FOR_BUDGET:
                task = await self._set(
                    conn, task.id, {"wait_reason": WAITING_FOR_BUDGET, "updated_at": now}
                )
            return Claim(None, waiting_for_budget=task, refused=tuple(refused))

    async def renew(self, task_id: int, lease: Lease, now: datetime, lease_s: float) -> Task | None:
        """Extend a held lease to now + lease_s; None when the lease is no longer held."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "UPDATE tasks SET lease_expires_at = $1 "
                "WHERE id = $2 AND state = 'running' AND lease_owner = $3 AND attempt = $4 "
                "RETURNING *",
                rows.lease_until(now, lease_s),
                task_id,
                lease.node,
                lease.attempt,
            )
        return None if row is None else task_from_record(row)

    async def update(self, task_id: int, **fields: object) -> Task:
        """Change bookkeeping fields (never state, attempt or cost); KeyError if unknown."""
        check_fields(fields)
        if not fields:
            task = await self.get_task(task_id)
            if task is None:
                raise KeyError(task_id)
            return task
        async with self._conn() as conn:  # one UPDATE ... RETURNING: atomic on its own
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
        check_finish(state, cost_usd, fields)
        lost: Task | None = None
        async with self._tx() as conn:
            task = await self._locked(conn, task_id)
            if task is None:
                raise KeyError(task_id)
            if lease is not None and not holds(task, lease):
                lost = task
            elif task.state is not TaskState.RUNNING:
                raise ValueError(f"task {task_id} is {task.state.value}, not running")
            attempt = task.attempt if lease is None else lease.attempt
            booked = await self._book(conn, task_id, attempt, now, cost_usd, at_end=True)
            if lost is None:
                ended = rows.finished(state, now, task.cost_usd + booked)
                done = await self._set(conn, task_id, {**fields, **ended})
                await self._announce(conn, sql.QUEUE_CHANNEL)
                return done
            if booked:
                lost = await self._set(conn, task_id, {"cost_usd": task.cost_usd + booked})
        assert lease is not None
        raise LeaseLost(task_id, lease, lost)

    async def cancel(self, task_id: int, now: datetime, reason: str) -> Task | None:
        """Queued: cancelled at once. Running: cancel_requested set. Terminal: None."""
        async with self._tx() as conn:
            task = await self._locked(conn, task_id)
            if task is None or task.state.terminal:
                return None
            if task.state is TaskState.RUNNING:
                await self._announce(conn, sql.CANCEL_CHANNEL, str(task_id))
                return await self._set(conn, task_id, {"cancel_requested": True, "updated_at": now})
            return await self._set(conn, task_id, rows.cancelled(now, reason))

    async def retry(self, task_id: int, now: datetime) -> Task | None:
        """Failed or cancelled: back to queued as the next attempt. Otherwise None."""
        try:
            async with self._tx() as conn:
                task = await self._locked(conn, task_id)
                if task is None or task.state not in (TaskState.FAILED, TaskState.CANCELLED):
                    return None
                again = await self._set(conn, task_id, rows.requeued(task.attempt + 1, now))
                await self._announce(conn, sql.QUEUE_CHANNEL)
                return again
        except asyncpg.UniqueViolationError:  # the issue has another active task
            return None

    async def add_spend(self, task_id: int, attempt: int, now: datetime, cost_usd: float) -> None:
        """Add one metered response's cost to the attempt's ledger entry and the task, now."""
        check_cost(cost_usd)
        async with self._tx() as conn:
            await self._book(conn, task_id, attempt, now, cost_usd, at_end=False)

    @staticmethod
    async def _book(
        conn: sql.Conn,
        task_id: int,
        attempt: int,
        now: datetime,
        cost_usd: float,
        at_end: bool,
    ) -> float:
        """Add to (or, at an attempt's end, top up) its ledger entry; returns what was added."""
        found = await conn.fetchval(
            "SELECT cost_usd FROM ledger WHERE task_id = $1 AND attempt = $2 FOR UPDATE",
            task_id,
            attempt,
        )
        booked = None if found is None else float(found)
        added = top_up(booked, cost_usd) if at_end else float(cost_usd)
        if booked is None:
            await conn.execute(
                "INSERT INTO ledger (day, task_id, attempt, cost_usd, booked_at) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (task_id, attempt) "
                "DO UPDATE SET cost_usd = ledger.cost_usd + EXCLUDED.cost_usd",
                utc_day(now),
                task_id,
                attempt,
                added,
                pg_value(now),
            )
        elif added:
            await conn.execute(
                "UPDATE ledger SET cost_usd = cost_usd + $1 WHERE task_id = $2 AND attempt = $3",
                added,
                task_id,
                attempt,
            )
        if added and not at_end:
            await conn.execute(
                "UPDATE tasks SET cost_usd = cost_usd + $1 WHERE id = $2", added, task_id
            )
        return added

    async def requeue_expired(
        self, now: datetime, node: str | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS
    ) -> list[Task]:
        """Return running tasks whose lease expired, or that `node` held, to the queue.

        An orphan whose cancel was already asked for ends cancelled instead: a restart must
        not revive work somebody stopped. The max_attempts-th dead attempt fails the task.
        """
        async with self._tx() as conn:
            found = await conn.fetch(sql.EXPIRED, pg_value(now), node)
            changed = []
            for t in (task_from_record(r) for r in found):
                if t.cancel_requested:
                    await self._set(conn, t.id, rows.cancelled(now, ORPHAN_CANCELLED))
                else:
                    changed.append(await self._set(conn, t.id, rules.expired(t, now, max_attempts)))
            if any(t.state is TaskState.QUEUED for t in changed):
                await self._announce(conn, sql.QUEUE_CHANNEL)
            return changed

    async def budget(self, day: date, daily_budget_usd: float) -> BudgetView:
        """The day's spend from the ledger plus what running tasks hold in reserve."""
        async with self._tx(isolation="repeatable_read", readonly=True) as conn:
            found = await conn.fetch(
                "SELECT day, task_id, attempt, cost_usd FROM ledger WHERE day = $1 ORDER BY id",
                day,
            )
            reserved = await conn.fetchval(
                "SELECT COALESCE(SUM(reserved_usd), 0) FROM tasks WHERE state = 'running'"
            )
        entries = tuple(
            LedgerEntry(r["day"], r["task_id"], r["attempt"], r["cost_usd"]) for r in found
        )
        return BudgetView(
            day=day,
            daily_budget_usd=daily_budget_usd,
            spent_usd=sum(entry.cost_usd for entry in entries),
            reserved_usd=float(reserved),
            entries=entries,
        )


if TYPE_CHECKING:  # mypy proves the adapter satisfies the port
    from ghapp.core.ports import TaskStore

    _PORT: type[TaskStore] = PostgresTaskStore
