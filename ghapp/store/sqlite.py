"""TaskStore on SQLite (aiosqlite): WAL, and every change is one BEGIN IMMEDIATE transaction."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import aiosqlite

from ghapp.core.model import (
    DEFAULT_LEASE_S,
    DEFAULT_MAX_ATTEMPTS,
    LOCAL_NODE,
    BudgetView,
    Claim,
    Delivery,
    Installation,
    Lease,
    LeaseLost,
    NewTask,
    Project,
    Task,
    TaskState,
    utc_day,
    utcnow,
)
from ghapp.store import rows, rules
from ghapp.store import schema as sql
from ghapp.store.rows import Params, SqlValue, all_rows, one_row, sum_of
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


def _apply_batch(
    conn: sqlite3.Connection, work: list[tuple[str, tuple[SqlValue, ...]]]
) -> list[int]:
    """Runs in aiosqlite's thread: one BEGIN IMMEDIATE, every statement, one COMMIT."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")
    conn.execute("BEGIN IMMEDIATE")
    try:
        counts = [conn.execute(stmt, params).rowcount for stmt, params in work]
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return counts


class SqliteTaskStore:
    """The TaskStore of one SQLite file; safe across connections and processes."""

    def __init__(self, path: str | Path) -> None:
        self._path = str(path)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._pending: list[tuple[str, tuple[SqlValue, ...], asyncio.Future[int]]] = []
        self._flusher: asyncio.Task[None] | None = None

    # -- connection and transactions ----------------------------------------------------
    async def migrate(self) -> None:
        """Open the connection (once) and bring the schema up to date."""
        if self._db is None:
            if self._path != ":memory:":
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(
                self._path, isolation_level=None, timeout=sql.BUSY_TIMEOUT_MS / 1000
            )
            db.row_factory = aiosqlite.Row
            try:
                for pragma in sql.PRAGMAS:
                    await db.execute(pragma)
                # Hashing a body in SQL runs in aiosqlite's thread, off the event loop.
                await db.create_function("sha256", 1, rows.body_sha256, deterministic=True)
            except BaseException:
                await db.close()
                raise
            self._db = db
        async with self._write() as db:
            await sql.apply_migrations(db)

    async def close(self) -> None:
        """Close the connection; safe to call twice."""
        db, self._db = self._db, None
        if db is not None:
            async with self._lock:
                await db.close()

    async def ping(self) -> bool:
        """True when the database answers a query (health checks)."""
        try:
            async with self._read() as db:
                return await one_row(db, "SELECT 1") is not None
        except (RuntimeError, sqlite3.Error):
            return False

    def _conn(self) -> aiosqlite.Connection:
        """The open connection, or a clear error when migrate() was never awaited."""
        if self._db is None:
            raise RuntimeError("SqliteTaskStore is not open: await migrate() first")
        return self._db

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One all-or-nothing write; the lock orders this process, BEGIN IMMEDIATE others."""
        db = self._conn()
        async with self._lock:
            if db.in_transaction:  # a cancelled caller may have left one open
                await db.execute("ROLLBACK")
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                await db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    await db.execute("ROLLBACK")
                raise

    async def _grouped(self, statement: str, params: tuple[SqlValue, ...]) -> int:
        """Group commit: single-row writes that arrive together share one transaction.

        Each caller still gets its own row count once the shared COMMIT is durable, so a
        webhook is only answered after its delivery is stored; a burst costs one commit
        and one thread hop instead of one each.
        """
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((statement, params, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_grouped())
        return await future

    async def _flush_grouped(self) -> None:
        """Write queued single-row statements in batches until none are left."""
        while self._pending:
            await asyncio.sleep(0)  # requests already read join this batch: fewer, fuller commits
            batch, self._pending = self._pending, []
            try:
                async with self._lock:
                    db = self._conn()
                    work = [(stmt, params) for stmt, params, _ in batch]
                    run = db._execute  # one hop into aiosqlite's thread for the batch
                    counts: list[int] = await run(_apply_batch, db._conn, work)  # type: ignore[no-untyped-call]
            except BaseException as exc:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, _, future), count in zip(batch, counts, strict=True):
                if not future.done():
                    future.set_result(count)

    @asynccontextmanager
    async def _read(self, snapshot: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """Reads wait for this process's writes; several queries share one snapshot."""
        db = self._conn()
        async with self._lock:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            if not snapshot:
                yield db
                return
            await db.execute("BEGIN")
            try:
                yield db
            finally:
                if db.in_transaction:
                    await db.execute("COMMIT")

    # -- deliveries inbox ---------------------------------------------------------------
    async def add_delivery(
        self, delivery_id: str, event: str, body: bytes, received_at: datetime
    ) -> bool:
        """Store a delivery; False (and no change) when its id or its body was stored before."""
        changed = await self._grouped(
            "INSERT OR IGNORE INTO deliveries (id, event, body, received_at, body_sha256) "
            "VALUES (?1, ?2, ?3, ?4, sha256(?3))",
            (delivery_id, event, body, rows.dt_to_db(received_at)),
        )
        return changed == 1

    async def pending_deliveries(self, limit: int = 100) -> list[Delivery]:
        """Unprocessed deliveries, oldest first."""
        async with self._read() as db:
            found = await all_rows(
                db,
                "SELECT * FROM deliveries WHERE processed_at IS NULL "
                "ORDER BY received_at, rowid LIMIT ?",
                (limit,),
            )
        return [rows.delivery_from_row(row) for row in found]

    async def mark_delivery(
        self, delivery_id: str, processed_at: datetime, error: str | None = None
    ) -> None:
        """Record that a delivery was handled, and how it went."""
        await self._grouped(
            "UPDATE deliveries SET processed_at = ?, error = ? WHERE id = ?",
            (rows.dt_to_db(processed_at), error, delivery_id),
        )

    async def reserve_write(
        self, installation_id: int, now: datetime, interval_s: float
    ) -> datetime:
        """When this installation's next GitHub write may go (spaced across processes)."""
        async with self._write() as db:
            row = await one_row(
                db, "SELECT next_at FROM write_slots WHERE installation_id = ?", (installation_id,)
            )
            last = rows.dt_from_db(row["next_at"]) if row is not None else None
            slot = now if last is None else max(now, last + timedelta(seconds=interval_s))
            await db.execute(
                "INSERT INTO write_slots (installation_id, next_at) VALUES (?, ?) "
                "ON CONFLICT (installation_id) DO UPDATE SET next_at = excluded.next_at",
                (installation_id, rows.dt_to_db(slot)),
            )
        return slot

    async def defer_delivery(self, delivery_id: str, until: datetime, error: str) -> None:
        """Leave a delivery unprocessed, released to any node, but not claimable before `until`."""
        await self._grouped(
            "UPDATE deliveries SET claimed_by = NULL, claimed_until = ?, error = ? "
            "WHERE id = ? AND processed_at IS NULL",
            (rows.dt_to_db(until), error, delivery_id),
        )

    async def has_delivery(self, delivery_id: str) -> bool:
        """Whether GitHub sent this delivery before."""
        async with self._read() as db:
            return (
                await one_row(db, "SELECT 1 FROM deliveries WHERE id = ?", (delivery_id,))
                is not None
            )

    async def prune_deliveries(self, before: datetime) -> int:
        """Drop the bodies of deliveries processed before `before`; ids and hashes stay."""
        async with self._write() as db:
            cursor = await db.execute(
                "UPDATE deliveries SET body = x'' WHERE processed_at < ? AND length(body) > 0",
                (rows.dt_to_db(before),),
            )
            return cursor.rowcount

    async def claim_deliveries(
        self, node: str, now: datetime, lease_s: float, limit: int = 100
    ) -> list[Delivery]:
        """Take unprocessed deliveries nobody else holds, oldest first, until now + lease_s."""
        until = rows.dt_to_db(rows.lease_until(now, lease_s))
        async with self._write() as db:
            found = await all_rows(db, sql.CLAIMABLE_DELIVERIES, (rows.dt_to_db(now), node, limit))
            ids = [row["id"] for row in found]
            if not ids:
                return []
            await db.executemany(
                "UPDATE deliveries SET claimed_by = ?, claimed_until = ? WHERE id = ?",
                [(node, until, delivery_id) for delivery_id in ids],
            )
            marks = ", ".join("?" * len(ids))
            taken = await all_rows(
                db,
                f"SELECT * FROM deliveries WHERE id IN ({marks}) ORDER BY received_at, rowid",
                ids,
            )
        return [rows.delivery_from_row(row) for row in taken]

    # -- tasks: reads -------------------------------------------------------------------
    async def _task(self, db: aiosqlite.Connection, task_id: int) -> Task | None:
        """One task inside the caller's transaction."""
        row = await one_row(db, "SELECT * FROM tasks WHERE id = ?", (task_id,))
        return None if row is None else rows.task_from_row(row)

    async def _first(self, where: str, params: Params) -> Task | None:
        """The first task matching a WHERE ... ORDER BY tail."""
        async with self._read() as db:
            row = await one_row(db, f"SELECT * FROM tasks WHERE {where} LIMIT 1", params)
        return None if row is None else rows.task_from_row(row)

    async def get_task(self, task_id: int) -> Task | None:
        """A task by id, if it exists."""
        async with self._read() as db:
            return await self._task(db, task_id)

    async def active_task_for(self, repo: str, issue_number: int) -> Task | None:
        """The queued or running task of an issue or PR, if any."""
        return await self._first(
            f"repo = ? AND issue_number = ? AND {sql.ACTIVE} ORDER BY id DESC", (repo, issue_number)
        )

    async def latest_task_for(self, repo: str, issue_number: int) -> Task | None:
        """The newest task of an issue or PR in any state."""
        return await self._first(
            "repo = ? AND issue_number = ? ORDER BY id DESC", (repo, issue_number)
        )

    async def task_for_pr(self, repo: str, pr_number: int) -> Task | None:
        """The newest task that opened or updated this pull request."""
        return await self._first("repo = ? AND pr_number = ? ORDER BY id DESC", (repo, pr_number))

    async def list_tasks(
        self, states: Sequence[TaskState] | None = None, limit: int = 50
    ) -> list[Task]:
        """Other states newest first, then queued ones in queue order (oldest first)."""
        if states is not None and not states:
            return []
        where, params = "", []
        if states is not None:
            where = f"WHERE state IN ({', '.join('?' * len(states))})"
            params = [TaskState(s).value for s in states]
        async with self._read() as db:
            found = await all_rows(
                db, f"SELECT * FROM tasks {where} {sql.ORDER_FOR_LISTING} LIMIT ?", [*params, limit]
            )
        return [rows.task_from_row(row) for row in found]

    async def queue_position(self, task_id: int) -> int | None:
        """1-based place of a queued task in the queue; None if it is not queued."""
        async with self._read() as db:
            row = await one_row(db, sql.QUEUE_POSITION, (task_id,))
        position = int(row[0]) if row is not None else 0
        return position or None

    async def count(self, state: TaskState) -> int:
        """How many tasks are in one state."""
        async with self._read() as db:
            row = await one_row(db, "SELECT COUNT(*) FROM tasks WHERE state = ?", (state.value,))
        return int(row[0]) if row is not None else 0

    # -- tasks: transitions -------------------------------------------------------------
    async def _set(
        self, db: aiosqlite.Connection, task_id: int, values: Mapping[str, object]
    ) -> Task:
        """Write columns of one task inside the caller's transaction and return it."""
        assignments = ", ".join(f"{name} = ?" for name in values)
        params = [rows.to_db(value) for value in values.values()]
        await db.execute(f"UPDATE tasks SET {assignments} WHERE id = ?", (*params, task_id))
        task = await self._task(db, task_id)
        if task is None:
            raise KeyError(task_id)
        return task

    async def _active(self, db: aiosqlite.Connection, repo: str, issue_number: int) -> bool:
        """Whether an issue already has a queued or running task."""
        row = await one_row(
            db,
            f"SELECT 1 FROM tasks WHERE repo = ? AND issue_number = ? AND {sql.ACTIVE}",
            (repo, issue_number),
        )
        return row is not None

    async def create_task(self, new: NewTask, now: datetime) -> Task | None:
        """Queue a task; None (and no change) when the issue already has an active task."""
        values = rows.new_task_values(new, now)
        columns, marks = ", ".join(values), ", ".join("?" * len(values))
        async with self._write() as db:
            if await self._active(db, new.repo, new.issue_number):
                return None
            cursor = await db.execute(
                f"INSERT INTO tasks ({columns}) VALUES ({marks})", tuple(values.values())
            )
            assert cursor.lastrowid is not None
            return await self._task(db, cursor.lastrowid)

    async def claim_next(
        self,
        now: datetime,
        daily_budget_usd: float,
        node: str = LOCAL_NODE,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> Claim:
        """Start the oldest eligible task if its cap fits today's budget; else say who waits."""
        day = utc_day(now).isoformat()
        refused: list[Task] = []
        async with self._write() as db:
            while True:
                row = await one_row(db, sql.NEXT_QUEUED)
                if row is None:
                    return Claim(None, refused=tuple(refused))
                task = rows.task_from_row(row)
                if not never_fits(task.budget_usd, daily_budget_usd):
                    break
                refused.append(
                    await self._set(db, task.id, rules.refused(task, daily_budget_usd, now))
                )
            spent = await sum_of(db, "SELECT SUM(cost_usd) FROM ledger WHERE day = ?", (day,))
            reserved = await sum_of(
                db, "SELECT SUM(reserved_usd) FROM tasks WHERE state = 'running'"
            )
            if fits(spent + reserved, task.budget_usd, daily_budget_usd):
                started = rows.started(task, now, node, lease_s)
                return Claim(await self._set(db, task.id, started), refused=tuple(refused))
            if task.wait_reason != WAITING_FOR_BUDGET:
                task = await self._set(
                    db, task.id, {"wait_reason": WAITING_FOR_BUDGET, "updated_at": now}
                )
            return Claim(None, waiting_for_budget=task, refused=tuple(refused))

    async def renew(self, task_id: int, lease: Lease, now: datetime, lease_s: float) -> Task | None:
        """Extend a held lease to now + lease_s; None when the lease is no longer held."""
        async with self._write() as db:
            cursor = await db.execute(
                "UPDATE tasks SET lease_expires_at = ? "
                "WHERE id = ? AND state = 'running' AND lease_owner = ? AND attempt = ?",
                (rows.dt_to_db(rows.lease_until(now, lease_s)), task_id, lease.node, lease.attempt),
            )
            return await self._task(db, task_id) if cursor.rowcount == 1 else None

    async def update(self, task_id: int, **fields: object) -> Task:
        """Change bookkeeping fields (never state, attempt or cost); KeyError if unknown."""
        check_fields(fields)
        async with self._write() as db:
            task = await self._task(db, task_id)
            if task is None:
                raise KeyError(task_id)
            if not fields:
                return task
            return await self._set(db, task_id, {**fields, "updated_at": utcnow()})

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
        async with self._write() as db:
            task = await self._task(db, task_id)
            if task is None:
                raise KeyError(task_id)
            attempt = task.attempt if lease is None else lease.attempt
            if lease is not None and not holds(task, lease):
                lost = task
            elif task.state is not TaskState.RUNNING:
                raise ValueError(f"task {task_id} is {task.state.value}, not running")
            booked = await self._book(db, task_id, attempt, now, cost_usd, at_end=True)
            if lost is None:
                ended = rows.finished(state, now, task.cost_usd + booked)
                return await self._set(db, task_id, {**fields, **ended})
            if booked:
                lost = await self._set(db, task_id, {"cost_usd": task.cost_usd + booked})
        assert lease is not None
        raise LeaseLost(task_id, lease, lost)

    async def cancel(self, task_id: int, now: datetime, reason: str) -> Task | None:
        """Queued: cancelled at once. Running: cancel_requested set. Terminal: None."""
        async with self._write() as db:
            task = await self._task(db, task_id)
            if task is None or task.state.terminal:
                return None
            if task.state is TaskState.RUNNING:
                return await self._set(db, task_id, {"cancel_requested": True, "updated_at": now})
            return await self._set(db, task_id, rows.cancelled(now, reason))

    async def retry(self, task_id: int, now: datetime) -> Task | None:
        """Failed or cancelled: back to queued as the next attempt. Otherwise None."""
        async with self._write() as db:
            task = await self._task(db, task_id)
            if task is None or task.state not in (TaskState.FAILED, TaskState.CANCELLED):
                return None
            if await self._active(db, task.repo, task.issue_number):
                return None
            return await self._set(db, task_id, rows.requeued(task.attempt + 1, now))

    async def add_spend(self, task_id: int, attempt: int, now: datetime, cost_usd: float) -> None:
        """Add one metered response's cost to the attempt's ledger entry and the task, now."""
        check_cost(cost_usd)
        async with self._write() as db:
            await self._book(db, task_id, attempt, now, cost_usd, at_end=False)

    @staticmethod
    async def _book(
        db: aiosqlite.Connection,
        task_id: int,
        attempt: int,
        now: datetime,
        cost_usd: float,
        at_end: bool,
    ) -> float:
        """Add to (or, at an attempt's end, top up) its ledger entry; returns what was added."""
        key = (task_id, attempt)
        found = await all_rows(
            db, "SELECT cost_usd FROM ledger WHERE task_id = ? AND attempt = ?", key
        )
        booked = float(found[0][0]) if found else None
        added = top_up(booked, cost_usd) if at_end else cost_usd
        if booked is None:
            await db.execute(
                "INSERT INTO ledger (day, task_id, attempt, cost_usd, booked_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (utc_day(now).isoformat(), task_id, attempt, added, rows.dt_to_db(now)),
            )
        elif added:
            await db.execute(
                "UPDATE ledger SET cost_usd = cost_usd + ? WHERE task_id = ? AND attempt = ?",
                (added, *key),
            )
        if added and not at_end:
            await db.execute(
                "UPDATE tasks SET cost_usd = cost_usd + ? WHERE id = ?", (added, task_id)
            )
        return added

    async def requeue_expired(
        self, now: datetime, node: str | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS
    ) -> list[Task]:
        """Return running tasks whose lease expired, or that `node` held, to the queue.

        An orphan whose cancel was already asked for ends cancelled instead: a restart must
        not revive work somebody stopped. The max_attempts-th dead attempt fails the task.
        """
        async with self._write() as db:
            query = f"SELECT * FROM tasks WHERE {sql.EXPIRED} ORDER BY id"
            found = await all_rows(db, query, (rows.dt_to_db(now), node))
            changed = []
            for t in (rows.task_from_row(row) for row in found):
                if t.cancel_requested:
                    await self._set(db, t.id, rows.cancelled(now, ORPHAN_CANCELLED))
                else:
                    changed.append(await self._set(db, t.id, rules.expired(t, now, max_attempts)))
            return changed

    async def budget(self, day: date, daily_budget_usd: float) -> BudgetView:
        """The day's spend from the ledger plus what running tasks hold in reserve."""
        async with self._read(snapshot=True) as db:
            found = await all_rows(
                db, "SELECT * FROM ledger WHERE day = ? ORDER BY id", (day.isoformat(),)
            )
            reserved = await sum_of(
                db, "SELECT SUM(reserved_usd) FROM tasks WHERE state = 'running'"
            )
        entries = tuple(rows.ledger_from_row(row) for row in found)
        return BudgetView(
            day=day,
            daily_budget_usd=daily_budget_usd,
            spent_usd=sum(entry.cost_usd for entry in entries),
            reserved_usd=reserved,
            entries=entries,
        )

    # -- installations and projects -----------------------------------------------------
    async def upsert_installation(self, installation: Installation) -> None:
        """Record an installation, replacing its account and its whole repository list."""
        async with self._write() as db:
            await db.execute(
                "INSERT INTO installations (id, account) VALUES (?, ?) "
                "ON CONFLICT (id) DO UPDATE SET account = excluded.account",
                (installation.id, installation.account),
            )
            await db.execute(
                "DELETE FROM installation_repos WHERE installation_id = ?", (installation.id,)
            )
            await db.executemany(
                "INSERT OR IGNORE INTO installation_repos (installation_id, repo) VALUES (?, ?)",
                [(installation.id, repo) for repo in installation.repos],
            )

    async def remove_installation(self, installation_id: int) -> None:
        """Forget an installation and its repositories (uninstalled)."""
        async with self._write() as db:
            await db.execute("DELETE FROM installations WHERE id = ?", (installation_id,))

    async def set_installation_repos(
        self, installation_id: int, added: Sequence[str], removed: Sequence[str]
    ) -> None:
        """Apply an installation_repositories event; an unknown installation is recorded."""
        async with self._write() as db:
            await db.execute(
                "INSERT OR IGNORE INTO installations (id, account) VALUES (?, '')",
                (installation_id,),
            )
            await db.executemany(
                "DELETE FROM installation_repos WHERE installation_id = ? AND repo = ?",
                [(installation_id, repo) for repo in removed],
            )
            await db.executemany(
                "INSERT OR IGNORE INTO installation_repos (installation_id, repo) VALUES (?, ?)",
                [(installation_id, repo) for repo in added],
            )

    async def installations(self) -> list[Installation]:
        """Every installation with its repositories, by id."""
        async with self._read() as db:
            found = await all_rows(
                db,
                "SELECT i.id, i.account, r.repo FROM installations AS i "
                "LEFT JOIN installation_repos AS r ON r.installation_id = i.id "
                "ORDER BY i.id, r.repo",
            )
        grouped: dict[int, tuple[str, list[str]]] = {}
        for row in found:
            _, repos = grouped.setdefault(row["id"], (row["account"], []))
            if row["repo"] is not None:
                repos.append(row["repo"])
        return [Installation(i, account, tuple(repos)) for i, (account, repos) in grouped.items()]

    async def installation_for_repo(self, repo: str) -> int | None:
        """The installation that can reach a repository (owner/name, any case)."""
        async with self._read() as db:
            row = await one_row(
                db,
                "SELECT installation_id FROM installation_repos WHERE repo = ? "
                "ORDER BY installation_id LIMIT 1",
                (repo,),
            )
        return None if row is None else int(row[0])

    async def add_project(self, project: Project) -> None:
        """Add or replace a project; making it default clears the old default."""
        async with self._write() as db:
            if project.is_default:
                await db.execute("UPDATE projects SET is_default = 0 WHERE is_default = 1")
            await db.execute(
                "INSERT INTO projects (slug, repo, installation_id, is_default) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (slug) DO UPDATE SET repo = excluded.repo, "
                "installation_id = excluded.installation_id, is_default = excluded.is_default",
                (project.slug, project.repo, project.installation_id, int(project.is_default)),
            )

    async def remove_project(self, slug: str) -> bool:
        """Forget a project; whether it existed."""
        async with self._write() as db:
            cursor = await db.execute("DELETE FROM projects WHERE slug = ?", (slug,))
            return cursor.rowcount > 0

    async def projects(self) -> list[Project]:
        """Every project, by slug."""
        async with self._read() as db:
            found = await all_rows(db, "SELECT * FROM projects ORDER BY slug")
        return [
            Project(row["slug"], row["repo"], row["installation_id"], bool(row["is_default"]))
            for row in found
        ]

    # -- chat threads (ghapp.slack.threads.ThreadRefs) --------------------------------
    async def claim_thread(self, chat: str, task_id: int, now: datetime, stale_s: float) -> bool:
        """True for the one caller that must post the task's first message in this chat."""
        stale = rows.dt_to_db(now - timedelta(seconds=stale_s))
        async with self._write() as db:
            cursor = await db.execute(
                "INSERT INTO chat_threads (chat, task_id, ref, claimed_at) VALUES (?, ?, NULL, ?) "
                "ON CONFLICT (chat, task_id) DO UPDATE SET claimed_at = excluded.claimed_at "
                "WHERE chat_threads.ref IS NULL AND chat_threads.claimed_at <= ?",
                (chat, task_id, rows.dt_to_db(now), stale),
            )
            return cursor.rowcount > 0

    async def thread_ref(self, chat: str, task_id: int) -> str | None:
        async with self._read() as db:
            found = await all_rows(
                db, "SELECT ref FROM chat_threads WHERE chat = ? AND task_id = ?", (chat, task_id)
            )
        return str(found[0]["ref"]) if found and found[0]["ref"] is not None else None

    async def set_thread_ref(self, chat: str, task_id: int, ref: str) -> None:
        async with self._write() as db:
            await db.execute(
                "UPDATE chat_threads SET ref = ? WHERE chat = ? AND task_id = ?",
                (ref, chat, task_id),
            )


if TYPE_CHECKING:  # mypy proves the adapter satisfies the port
    from ghapp.core.ports import TaskStore

    _PORT: type[TaskStore] = SqliteTaskStore
