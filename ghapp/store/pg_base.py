"""PostgreSQL plumbing shared by the store: the pool, transactions, NOTIFY, record mapping,
and the parts that are not tasks (deliveries inbox, installations, projects)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

import asyncpg

from ghapp.core.model import Delivery, Installation, Project, Task, TaskSource, TaskState
from ghapp.store import pg_schema as sql
from ghapp.store import rows
from ghapp.store.batch import Batcher

TASK_COLUMNS = rows.TASK_COLUMNS


def pg_value(value: object) -> object:
    """One Python value as asyncpg sends it: enums by value, paths as text, aware times only."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime) and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"naive datetime {value!r}: the store only accepts aware times")
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def task_from_record(record: asyncpg.Record) -> Task:
    """A Task from a tasks row, restoring the enums."""
    values: dict[str, Any] = {name: record[name] for name in TASK_COLUMNS}
    values["state"] = TaskState(values["state"])
    values["source"] = TaskSource(values["source"])
    return Task(**values)


def delivery_from_record(record: asyncpg.Record) -> Delivery:
    """A Delivery from a deliveries row."""
    return Delivery(
        id=record["id"],
        event=record["event"],
        body=bytes(record["body"]),
        received_at=record["received_at"],
        processed_at=record["processed_at"],
        error=record["error"],
    )


def _changed(status: str) -> int:
    """Rows an INSERT, UPDATE or DELETE touched, from its command tag."""
    return int(status.rsplit(" ", 1)[-1])


class PgBase:
    """The pool and everything of the store but the tasks; PostgresTaskStore adds those."""

    def __init__(self, dsn: str, *, max_connections: int = 10, notify: bool = True) -> None:
        self.dsn = dsn
        self._max = max_connections
        self._notify = notify
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._adds = Batcher(self._insert_deliveries)
        self._marks = Batcher(self._mark_deliveries)

    # -- connection and transactions ----------------------------------------------------
    async def migrate(self) -> None:
        """Open the pool (once) and bring the schema up to date."""
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=self._max, command_timeout=60
            )
        async with self._tx() as conn:
            await sql.apply_migrations(conn)

    async def close(self) -> None:
        """Close the pool; safe to call twice."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def ping(self) -> bool:
        """True when the database answers a query (health checks)."""
        try:
            async with self._conn() as conn:
                return bool(await conn.fetchval("SELECT 1", timeout=5) == 1)
        except (RuntimeError, OSError, TimeoutError, asyncpg.PostgresError):
            return False

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[sql.Conn]:
        """A pooled connection; a clear error when migrate() was never awaited."""
        if self._pool is None:
            raise RuntimeError("PostgresTaskStore is not open: await migrate() first")
        async with self._pool.acquire() as conn:
            yield conn

    @asynccontextmanager
    async def _tx(self, **options: Any) -> AsyncIterator[sql.Conn]:
        """One all-or-nothing transaction on a pooled connection."""
        async with self._conn() as conn, conn.transaction(**options):
            yield conn

    async def _announce(self, conn: sql.Conn, channel: str, payload: str = "") -> None:
        """NOTIFY other nodes; delivered when the caller's transaction commits."""
        if self._notify:
            await conn.execute("SELECT pg_notify($1, $2)", channel, payload)

    # -- deliveries inbox ---------------------------------------------------------------
    async def add_delivery(
        self, delivery_id: str, event: str, body: bytes, received_at: datetime
    ) -> bool:
        """Store a delivery; False (and no change) when its id or its body was stored before.

        Deliveries arriving together share one INSERT (group commit); each caller is
        answered once the commit holding its row is done.
        """
        return await self._adds.submit((delivery_id, event, body, pg_value(received_at)))

    async def _insert_deliveries(self, batch: Sequence[tuple[Any, ...]]) -> list[bool]:
        """One INSERT for a batch; True for the first occurrence of each id it stored.

        A row whose id or body hash is taken (by the table or earlier in the batch) is skipped.
        """
        columns = list(zip(*batch, strict=True))
        async with self._conn() as conn:
            found = await conn.fetch(
                "INSERT INTO deliveries (id, event, body, received_at, body_sha256) "
                "SELECT id, event, body, received_at, sha256(body) "
                "FROM unnest($1::text[], $2::text[], $3::bytea[], $4::timestamptz[]) "
                "AS d(id, event, body, received_at) ON CONFLICT DO NOTHING RETURNING id",
                *columns,
            )
        fresh = {row["id"] for row in found}
        results = []
        for delivery_id, *_ in batch:
            results.append(delivery_id in fresh)
            fresh.discard(delivery_id)
        return results

    async def pending_deliveries(self, limit: int = 100) -> list[Delivery]:
        """Unprocessed deliveries, oldest first."""
        async with self._conn() as conn:
            found = await conn.fetch(
                "SELECT * FROM deliveries WHERE processed_at IS NULL "
                "ORDER BY received_at, seq LIMIT $1",
                limit,
            )
        return [delivery_from_record(r) for r in found]

    async def mark_delivery(
        self, delivery_id: str, processed_at: datetime, error: str | None = None
    ) -> None:
        """Record that a delivery was handled, and how it went (grouped like add_delivery)."""
        await self._marks.submit((delivery_id, pg_value(processed_at), error))

    async def _mark_deliveries(self, batch: Sequence[tuple[Any, ...]]) -> list[None]:
        """One UPDATE for a batch of marks."""
        columns = list(zip(*batch, strict=True))
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE deliveries AS d SET processed_at = u.at, error = u.error "
                "FROM unnest($1::text[], $2::timestamptz[], $3::text[]) AS u(id, at, error) "
                "WHERE d.id = u.id",
                *columns,
            )
        return [None] * len(batch)

    async def reserve_write(
        self, installation_id: int, now: datetime, interval_s: float
    ) -> datetime:
        """When this installation's next GitHub write may go (spaced across the cluster)."""
        async with self._conn() as conn:
            slot: datetime = await conn.fetchval(
                "INSERT INTO write_slots AS w (installation_id, next_at) VALUES ($1, $2) "
                "ON CONFLICT (installation_id) DO UPDATE SET next_at = "
                "GREATEST(w.next_at + make_interval(secs => $3), excluded.next_at) "
                "RETURNING next_at",
                installation_id,
                pg_value(now),
                float(interval_s),
            )
        return slot

    async def defer_delivery(self, delivery_id: str, until: datetime, error: str) -> None:
        """Leave a delivery unprocessed, released to any node, but not claimable before `until`."""
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE deliveries SET claimed_by = NULL, claimed_until = $1, error = $2 "
                "WHERE id = $3 AND processed_at IS NULL",
                pg_value(until),
                error,
                delivery_id,
            )

    async def has_delivery(self, delivery_id: str) -> bool:
        """Whether GitHub sent this delivery before."""
        async with self._conn() as conn:
            found = await conn.fetchval("SELECT 1 FROM deliveries WHERE id = $1", delivery_id)
        return found is not None

    async def prune_deliveries(self, before: datetime) -> int:
        """Drop the bodies of deliveries processed before `before`; ids and hashes stay."""
        async with self._conn() as conn:
            status = await conn.execute(
                "UPDATE deliveries SET body = ''::bytea "
                "WHERE processed_at < $1 AND length(body) > 0",
                pg_value(before),
            )
        return _changed(status)

    async def claim_deliveries(
        self, node: str, now: datetime, lease_s: float, limit: int = 100
    ) -> list[Delivery]:
        """Take unprocessed deliveries nobody else holds, oldest first, until now + lease_s."""
        until = rows.lease_until(now, lease_s)
        async with self._conn() as conn:
            found = await conn.fetch(sql.CLAIM_DELIVERIES, node, until, pg_value(now), limit)
        found.sort(key=lambda r: (r["received_at"], r["seq"]))
        return [delivery_from_record(r) for r in found]

    # -- installations and projects -----------------------------------------------------
    async def upsert_installation(self, installation: Installation) -> None:
        """Record an installation, replacing its account and its whole repository list."""
        async with self._tx() as conn:
            await conn.execute(
                "INSERT INTO installations (id, account) VALUES ($1, $2) "
                "ON CONFLICT (id) DO UPDATE SET account = excluded.account",
                installation.id,
                installation.account,
            )
            await conn.execute(
                "DELETE FROM installation_repos WHERE installation_id = $1", installation.id
            )
            await self._add_repos(conn, installation.id, installation.repos)

    @staticmethod
    async def _add_repos(conn: sql.Conn, installation_id: int, repos: Sequence[str]) -> None:
        """Add repositories to an installation; ones it has (in any case) are kept."""
        await conn.executemany(
            "INSERT INTO installation_repos (installation_id, repo) VALUES ($1, $2) "
            "ON CONFLICT (installation_id, lower(repo)) DO NOTHING",
            [(installation_id, repo) for repo in repos],
        )

    async def remove_installation(self, installation_id: int) -> None:
        """Forget an installation and its repositories (uninstalled)."""
        async with self._conn() as conn:
            await conn.execute("DELETE FROM installations WHERE id = $1", installation_id)

    async def set_installation_repos(
        self, installation_id: int, added: Sequence[str], removed: Sequence[str]
    ) -> None:
        """Apply an installation_repositories event; an unknown installation is recorded."""
        async with self._tx() as conn:
            await conn.execute(
                "INSERT INTO installations (id, account) VALUES ($1, '') ON CONFLICT DO NOTHING",
                installation_id,
            )
            await conn.execute(
                "DELETE FROM installation_repos "
                "WHERE installation_id = $1 AND lower(repo) = ANY($2::text[])",
                installation_id,
                [repo.lower() for repo in removed],
            )
            await self._add_repos(conn, installation_id, added)

    async def installations(self) -> list[Installation]:
        """Every installation with its repositories, by id."""
        async with self._conn() as conn:
            found = await conn.fetch(
                "SELECT i.id, i.account, r.repo FROM installations AS i "
                "LEFT JOIN installation_repos AS r ON r.installation_id = i.id "
                'ORDER BY i.id, lower(r.repo) COLLATE "C", r.repo COLLATE "C"'
            )
        grouped: dict[int, tuple[str, list[str]]] = {}
        for row in found:
            _, repos = grouped.setdefault(row["id"], (row["account"], []))
            if row["repo"] is not None:
                repos.append(row["repo"])
        return [Installation(i, account, tuple(repos)) for i, (account, repos) in grouped.items()]

    async def installation_for_repo(self, repo: str) -> int | None:
        """The installation that can reach a repository (owner/name, any case)."""
        async with self._conn() as conn:
            found = await conn.fetchval(
                "SELECT installation_id FROM installation_repos WHERE lower(repo) = lower($1) "
                "ORDER BY installation_id LIMIT 1",
                repo,
            )
        return None if found is None else int(found)

    async def add_project(self, project: Project) -> None:
        """Add or replace a project; making it default clears the old default."""
        async with self._tx() as conn:
            if project.is_default:
                await conn.execute("UPDATE projects SET is_default = FALSE WHERE is_default")
            await conn.execute(
                "INSERT INTO projects (slug, repo, installation_id, is_default) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (slug) DO UPDATE SET repo = excluded.repo, "
                "installation_id = excluded.installation_id, is_default = excluded.is_default",
                project.slug,
                project.repo,
                project.installation_id,
                project.is_default,
            )

    async def remove_project(self, slug: str) -> bool:
        """Forget a project; whether it existed."""
        async with self._conn() as conn:
            return _changed(await conn.execute("DELETE FROM projects WHERE slug = $1", slug)) > 0

    async def projects(self) -> list[Project]:
        """Every project, by slug."""
        async with self._conn() as conn:
            found = await conn.fetch('SELECT * FROM projects ORDER BY slug COLLATE "C"')
        return [Project(r["slug"], r["repo"], r["installation_id"], r["is_default"]) for r in found]

    # -- chat threads (ghapp.slack.threads.ThreadRefs) --------------------------------
    async def claim_thread(self, chat: str, task_id: int, now: datetime, stale_s: float) -> bool:
        """True for the one caller that must post the task's first message in this chat."""
        async with self._conn() as conn:
            status = await conn.execute(
                "INSERT INTO chat_threads (chat, task_id, ref, claimed_at) "
                "VALUES ($1, $2, NULL, $3) "
                "ON CONFLICT (chat, task_id) DO UPDATE SET claimed_at = excluded.claimed_at "
                "WHERE chat_threads.ref IS NULL AND chat_threads.claimed_at <= $4",
                chat,
                task_id,
                now,
                now - timedelta(seconds=stale_s),
            )
        return _changed(status) > 0

    async def thread_ref(self, chat: str, task_id: int) -> str | None:
        async with self._conn() as conn:
            ref = await conn.fetchval(
                "SELECT ref FROM chat_threads WHERE chat = $1 AND task_id = $2", chat, task_id
            )
        return str(ref) if ref is not None else None

    async def set_thread_ref(self, chat: str, task_id: int, ref: str) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE chat_threads SET ref = $1 WHERE chat = $2 AND task_id = $3",
                ref,
                chat,
                task_id,
            )
