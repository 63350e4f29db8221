"""The store's records beside the tasks, written once for every dialect: the deliveries
inbox, installations, projects and chat threads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from ghapp.core.model import Delivery, Installation, Project
from ghapp.core.transitions import lease_until
from ghapp.store.dialect import Conn, Dialect
from ghapp.store.rows import delivery_from_row, dt_from_db, project_from_row

# Deliveries with their bodies (a pruned body is no row: the delivery reads as b"").
WITH_BODIES = (
    "SELECT d.id, d.event, d.received_at, d.processed_at, d.error, b.body "
    "FROM deliveries AS d LEFT JOIN delivery_bodies AS b ON b.seq = d.seq"
)


class Records(Dialect):
    """Deliveries, installations, projects and chat threads over a dialect's connections."""

    # -- deliveries inbox ---------------------------------------------------------------
    async def add_delivery(
        self, delivery_id: str, event: str, body: bytes, received_at: datetime
    ) -> bool:
        """Store a delivery; False (and no change) when its id or its body was stored before.

        Deliveries arriving together share one commit (group commit); each caller is
        answered once the commit holding its row is done.
        """
        return await self._adds.submit((delivery_id, event, body, received_at))

    async def pending_deliveries(self, limit: int = 100) -> list[Delivery]:
        """Unprocessed deliveries, oldest first."""
        async with self._read() as conn:
            found = await conn.rows(
                f"{WITH_BODIES} WHERE d.processed_at IS NULL "
                "ORDER BY d.received_at, d.seq LIMIT $1",
                limit,
            )
        return [delivery_from_row(row) for row in found]

    async def mark_delivery(
        self, delivery_id: str, processed_at: datetime, error: str | None = None
    ) -> None:
        """Record that a delivery was handled, and how it went (grouped like add_delivery)."""
        await self._marks.submit((delivery_id, processed_at, error))

    async def has_delivery(self, delivery_id: str) -> bool:
        """Whether GitHub sent this delivery before."""
        async with self._read() as conn:
            found = await conn.value("SELECT 1 FROM deliveries WHERE id = $1", delivery_id)
        return found is not None

    async def prune_deliveries(self, before: datetime) -> int:
        """Drop the bodies of deliveries processed before `before`; ids and hashes stay."""
        async with self._tx() as conn:
            return await conn.run(
                "DELETE FROM delivery_bodies WHERE seq IN "
                "(SELECT seq FROM deliveries WHERE processed_at < $1)",
                before,
            )

    async def claim_deliveries(
        self, node: str, now: datetime, lease_s: float, limit: int = 100
    ) -> list[Delivery]:
        """Take unprocessed deliveries nobody else holds, oldest first, until now + lease_s."""
        async with self._tx() as conn:
            taken = await conn.rows(
                "UPDATE deliveries SET claimed_by = $1, claimed_until = $2 WHERE id IN ("
                "  SELECT id FROM deliveries WHERE processed_at IS NULL"
                "  AND (claimed_until IS NULL OR claimed_until <= $3 OR claimed_by = $1)"
                f"  ORDER BY received_at, seq LIMIT $4{self._locking(skip=True)}"
                ") RETURNING id",
                node,
                lease_until(now, lease_s),
                now,
                limit,
            )
        if not taken:
            return []
        # Read after the commit: on SQLite each statement is a trip to the loop and back, and
        # intake's writer waited for the write lock while 100 bodies were read under it.
        marks = ", ".join(f"${n}" for n in range(1, len(taken) + 1))
        async with self._read() as conn:
            found = await conn.rows(
                f"{WITH_BODIES} WHERE d.id IN ({marks}) ORDER BY d.received_at, d.seq",
                *(row["id"] for row in taken),
            )
        return [delivery_from_row(row) for row in found]

    async def defer_delivery(self, delivery_id: str, until: datetime, error: str) -> None:
        """Leave a delivery unprocessed, released to any node, but not claimable before `until`."""
        async with self._tx() as conn:
            await conn.run(
                "UPDATE deliveries SET claimed_by = NULL, claimed_until = $1, error = $2 "
                "WHERE id = $3 AND processed_at IS NULL",
                until,
                error,
                delivery_id,
            )

    # -- GitHub write pacing ------------------------------------------------------------
    async def reserve_write(
        self, installation_id: int, now: datetime, interval_s: float
    ) -> datetime:
        """When this installation's next GitHub write may go (spaced across every process)."""
        async with self._tx() as conn:
            # The first write of an installation goes now; the inserted row stays locked
            # until commit, so a concurrent first writer waits and then takes the next slot.
            if await conn.value(
                "INSERT INTO write_slots (installation_id, next_at) VALUES ($1, $2) "
                "ON CONFLICT (installation_id) DO NOTHING RETURNING 1",
                installation_id,
                now,
            ):
                return now
            last = dt_from_db(
                await conn.value(
                    "SELECT next_at FROM write_slots WHERE installation_id = $1" + self._locking(),
                    installation_id,
                )
            )
            assert last is not None  # the row exists: the insert above found it
            slot = max(now, last + timedelta(seconds=interval_s))
            await conn.run(
                "UPDATE write_slots SET next_at = $1 WHERE installation_id = $2",
                slot,
                installation_id,
            )
        return slot

    # -- task logs, readable from every node -------------------------------------------
    async def append_task_log(self, task_id: int, attempt: int, text: str, keep: int) -> None:
        """Add readable lines to the task's stored log; only its last `keep` characters stay."""
        async with self._tx() as conn:
            await conn.run(
                "INSERT INTO task_logs (task_id, attempt, text) VALUES ($1, $2, $3) "
                "ON CONFLICT (task_id) DO UPDATE SET text = CASE "
                "WHEN task_logs.attempt = excluded.attempt "
                "THEN task_logs.text || excluded.text ELSE excluded.text END, "
                "attempt = excluded.attempt WHERE task_logs.attempt <= excluded.attempt",
                task_id,
                attempt,
                text,
            )
            await conn.run(
                "UPDATE task_logs SET text = substr(text, length(text) - $2 + 1) "
                "WHERE task_id = $1 AND length(text) > $2",
                task_id,
                keep,
            )

    async def task_log(self, task_id: int, attempt: int) -> str | None:
        """The stored tail of that attempt's log; None when it stored none."""
        async with self._read() as conn:
            found = await conn.value(
                "SELECT text FROM task_logs WHERE task_id = $1 AND attempt = $2", task_id, attempt
            )
        return None if found is None else str(found)

    async def prune_task_logs(self, before: datetime) -> int:
        """Drop the stored logs of tasks that finished before `before`."""
        async with self._tx() as conn:
            return await conn.run(
                "DELETE FROM task_logs WHERE task_id IN "
                "(SELECT id FROM tasks WHERE finished_at < $1)",
                before,
            )

    # -- installations and projects -----------------------------------------------------
    async def upsert_installation(self, installation: Installation) -> None:
        """Record an installation, replacing its account and its whole repository list."""
        async with self._tx() as conn:
            await conn.run(
                "INSERT INTO installations (id, account) VALUES ($1, $2) "
                "ON CONFLICT (id) DO UPDATE SET account = excluded.account",
                installation.id,
                installation.account,
            )
            await conn.run(
                "DELETE FROM installation_repos WHERE installation_id = $1", installation.id
            )
            await self._add_repos(conn, installation.id, installation.repos)

    @staticmethod
    async def _add_repos(conn: Conn, installation_id: int, repos: Sequence[str]) -> None:
        """Add repositories to an installation; ones it has (in any case) are kept."""
        await conn.run_many(
            "INSERT INTO installation_repos (installation_id, repo) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING",
            [(installation_id, repo) for repo in repos],
        )

    async def remove_installation(self, installation_id: int) -> None:
        """Forget an installation and its repositories (uninstalled)."""
        async with self._tx() as conn:
            await conn.run("DELETE FROM installations WHERE id = $1", installation_id)

    async def set_installation_repos(
        self, installation_id: int, added: Sequence[str], removed: Sequence[str]
    ) -> None:
        """Apply an installation_repositories event; an unknown installation is recorded."""
        fold = self.FOLD
        async with self._tx() as conn:
            await conn.run(
                "INSERT INTO installations (id, account) VALUES ($1, '') ON CONFLICT DO NOTHING",
                installation_id,
            )
            await conn.run_many(
                "DELETE FROM installation_repos "
                f"WHERE installation_id = $1 AND {fold}(repo) = {fold}($2)",
                [(installation_id, repo) for repo in removed],
            )
            await self._add_repos(conn, installation_id, added)

    async def installations(self) -> list[Installation]:
        """Every installation with its repositories (by name, any case first), by id."""
        async with self._read() as conn:
            found = await conn.rows(
                "SELECT i.id, i.account, r.repo FROM installations AS i "
                "LEFT JOIN installation_repos AS r ON r.installation_id = i.id ORDER BY i.id"
            )
        grouped: dict[int, tuple[str, list[str]]] = {}
        for row in found:
            _, repos = grouped.setdefault(row["id"], (row["account"], []))
            if row["repo"] is not None:
                repos.append(row["repo"])
        return [
            Installation(i, account, tuple(sorted(repos, key=lambda r: (r.lower(), r))))
            for i, (account, repos) in grouped.items()
        ]

    async def installation_for_repo(self, repo: str) -> int | None:
        """The installation that can reach a repository (owner/name, any case)."""
        async with self._read() as conn:
            found = await conn.value(
                f"SELECT installation_id FROM installation_repos WHERE {self.FOLD}(repo) = "
                f"{self.FOLD}($1) ORDER BY installation_id LIMIT 1",
                repo,
            )
        return None if found is None else int(found)

    async def add_project(self, project: Project) -> None:
        """Add or replace a project; making it default clears the old default."""
        async with self._tx() as conn:
            if project.is_default:
                await conn.run("UPDATE projects SET is_default = FALSE WHERE is_default")
            await conn.run(
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
        async with self._tx() as conn:
            return await conn.run("DELETE FROM projects WHERE slug = $1", slug) > 0

    async def projects(self) -> list[Project]:
        """Every project, by slug."""
        async with self._read() as conn:
            found = await conn.rows("SELECT * FROM projects")
        return sorted((project_from_row(row) for row in found), key=lambda p: p.slug)

    # -- chat threads (ghapp.slack.threads.ThreadRefs) --------------------------------
    async def claim_thread(self, chat: str, task_id: int, now: datetime, stale_s: float) -> bool:
        """True for the one caller that must post the task's first message in this chat."""
        async with self._tx() as conn:
            changed = await conn.run(
                "INSERT INTO chat_threads (chat, task_id, ref, claimed_at) "
                "VALUES ($1, $2, NULL, $3) "
                "ON CONFLICT (chat, task_id) DO UPDATE SET claimed_at = excluded.claimed_at "
                "WHERE chat_threads.ref IS NULL AND chat_threads.claimed_at <= $4",
                chat,
                task_id,
                now,
                now - timedelta(seconds=stale_s),
            )
        return changed > 0

    async def thread_ref(self, chat: str, task_id: int) -> str | None:
        """The chat message that heads this task's notices, once posted."""
        async with self._read() as conn:
            ref = await conn.value(
                "SELECT ref FROM chat_threads WHERE chat = $1 AND task_id = $2", chat, task_id
            )
        return None if ref is None else str(ref)

    async def set_thread_ref(self, chat: str, task_id: int, ref: str) -> None:
        """Remember the chat message that heads this task's notices."""
        async with self._tx() as conn:
            await conn.run(
                "UPDATE chat_threads SET ref = $1 WHERE chat = $2 AND task_id = $3",
                ref,
                chat,
                task_id,
            )
