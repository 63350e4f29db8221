"""SQLite schema: append a step to MIGRATIONS, never edit a released one."""

from __future__ import annotations

import aiosqlite

from ghapp.store.dialect import steps_after

BUSY_TIMEOUT_MS = 5000
PRAGMAS = (
    # A new file only (an existing one keeps its pages): an LZ4-packed body (3-4.5 KB) fits
    # about one, and each delivery dirties a random page of two indexes: 4 KB, not 16 KB.
    "PRAGMA page_size = 4096",
    "PRAGMA journal_mode = WAL",
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys = ON",
    "PRAGMA synchronous = NORMAL",
)

# Each step is a tuple of single statements (executescript would COMMIT behind our back).
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE tasks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            source TEXT NOT NULL,
            repo TEXT NOT NULL COLLATE NOCASE,
            installation_id INTEGER NOT NULL,
            issue_number INTEGER NOT NULL,
            requester TEXT NOT NULL,
            instructions TEXT NOT NULL,
            budget_usd REAL NOT NULL,
            state TEXT NOT NULL
                CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
            created_at TEXT NOT NULL,
            title TEXT NOT NULL DEFAULT '',
            body TEXT NOT NULL DEFAULT '',
            delivery_id TEXT,
            trigger_comment_id INTEGER,
            is_pull_request INTEGER NOT NULL DEFAULT 0 CHECK (is_pull_request IN (0, 1)),
            attempt INTEGER NOT NULL DEFAULT 1,
            branch TEXT,
            base_sha TEXT,
            pr_number INTEGER,
            pr_url TEXT,
            pr_fate TEXT,
            cost_usd REAL NOT NULL DEFAULT 0,
            reserved_usd REAL NOT NULL DEFAULT 0,
            started_at TEXT,
            finished_at TEXT,
            failure_reason TEXT,
            wait_reason TEXT,
            summary TEXT,
            log_path TEXT,
            cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
            tracking_comment_id INTEGER,
            review_path TEXT,
            review_line INTEGER,
            parent_task_id INTEGER,
            updated_at TEXT NOT NULL
        )
        """,
        # The database itself refuses a second active task on one issue.
        """
        CREATE UNIQUE INDEX tasks_one_active_per_issue ON tasks (repo, issue_number)
            WHERE state IN ('queued', 'running')
        """,
        "CREATE INDEX tasks_queue ON tasks (state, created_at, id)",
        "CREATE INDEX tasks_issue ON tasks (repo, issue_number, id)",
        "CREATE INDEX tasks_pr ON tasks (repo, pr_number, id)",
        """
        CREATE TABLE deliveries (
            id TEXT PRIMARY KEY,
            event TEXT NOT NULL,
            body BLOB NOT NULL,
            received_at TEXT NOT NULL,
            processed_at TEXT,
            error TEXT
        )
        """,
        """
        CREATE INDEX deliveries_pending ON deliveries (received_at)
            WHERE processed_at IS NULL
        """,
        """
        CREATE TABLE ledger (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            day TEXT NOT NULL,
            task_id INTEGER NOT NULL REFERENCES tasks (id),
            attempt INTEGER NOT NULL,
            cost_usd REAL NOT NULL,
            booked_at TEXT NOT NULL,
            UNIQUE (task_id, attempt)
        )
        """,
        "CREATE INDEX ledger_day ON ledger (day)",
        """
        CREATE TABLE installations (
            id INTEGER PRIMARY KEY,
            account TEXT NOT NULL
        )
        """,
        """
        CREATE TABLE installation_repos (
            installation_id INTEGER NOT NULL REFERENCES installations (id) ON DELETE CASCADE,
            repo TEXT NOT NULL COLLATE NOCASE,
            PRIMARY KEY (installation_id, repo)
        )
        """,
        "CREATE INDEX installation_repos_repo ON installation_repos (repo)",
        """
        CREATE TABLE projects (
            slug TEXT PRIMARY KEY,
            repo TEXT NOT NULL,
            installation_id INTEGER NOT NULL,
            is_default INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1))
        )
        """,
        "CREATE UNIQUE INDEX projects_one_default ON projects (is_default) WHERE is_default = 1",
    ),
    # 2: leases, so several processes can share the queue (a lease, not a restart, frees a task).
    (
        "ALTER TABLE tasks ADD COLUMN lease_owner TEXT",
        "ALTER TABLE tasks ADD COLUMN lease_expires_at TEXT",
        "CREATE INDEX tasks_running_lease ON tasks (lease_expires_at) WHERE state = 'running'",
        "ALTER TABLE deliveries ADD COLUMN claimed_by TEXT",
        "ALTER TABLE deliveries ADD COLUMN claimed_until TEXT",
    ),
    # 3: the conversation as of the trigger (issue 16): when it was, and what was left out.
    (
        "ALTER TABLE tasks ADD COLUMN triggered_at TEXT",
        "ALTER TABLE tasks ADD COLUMN pr_description TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE tasks ADD COLUMN context_note TEXT",
    ),
    # 4: the chat message that heads a task's notices (a Slack thread), shared by processes.
    (
        """
        CREATE TABLE chat_threads (
            chat TEXT NOT NULL,
            task_id INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
            ref TEXT,
            claimed_at TEXT NOT NULL,
            PRIMARY KEY (chat, task_id)
        )
        """,
    ),
    # 5: attempts lost with their worker (MC_MAX_ATTEMPTS), and a note for the tracking comment.
    (
        "ALTER TABLE tasks ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE tasks ADD COLUMN note TEXT",
    ),
    # 6: only the body is signed, so a replay under a new delivery id is caught by its hash.
    # Rows stored before keep theirs too (the first of identical bodies wins the hash).
    (
        "ALTER TABLE deliveries ADD COLUMN body_sha256 BLOB",
        """
        UPDATE deliveries SET body_sha256 = sha256(body)
        WHERE rowid IN (SELECT min(rowid) FROM deliveries GROUP BY sha256(body))
        """,
        "CREATE UNIQUE INDEX deliveries_body_sha256 ON deliveries (body_sha256)",
    ),
    # 7: the tail of each task's readable log, so /logs answers the same on every node.
    (
        """
        CREATE TABLE task_logs (
            task_id INTEGER PRIMARY KEY REFERENCES tasks(id) ON DELETE CASCADE,
            attempt INTEGER NOT NULL,
            text TEXT NOT NULL
        )
        """,
    ),
    # 8: GitHub write pacing per installation, shared by every process of the store.
    (
        """
        CREATE TABLE write_slots (
            installation_id INTEGER PRIMARY KEY,
            next_at TEXT NOT NULL
        )
        """,
    ),
    # 9: bodies in a table of their own, written once at intake: claiming and marking a
    # delivery then rewrite a small row, not its 10-30 KB body. Pruned bodies are no row.
    (
        "CREATE TABLE delivery_bodies (id TEXT PRIMARY KEY, body BLOB NOT NULL)",
        """
        INSERT INTO delivery_bodies (id, body)
        SELECT id, body FROM deliveries WHERE length(body) > 0
        """,
        "ALTER TABLE deliveries DROP COLUMN body",
    ),
    # 10: bodies keyed by the delivery's sequence number, so a new body goes at the end of its
    # table; keyed by the delivery id, each one also landed on a random page of the id's
    # index, written once more to the WAL and again to the database (about 20 KB a delivery).
    # The number is a column of its own: VACUUM may renumber an implicit rowid.
    (
        """
        CREATE TABLE deliveries_v10 (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            event TEXT NOT NULL,
            received_at TEXT NOT NULL,
            processed_at TEXT,
            error TEXT,
            claimed_by TEXT,
            claimed_until TEXT,
            body_sha256 BLOB
        )
        """,
        """
        INSERT INTO deliveries_v10
        SELECT rowid, id, event, received_at, processed_at, error, claimed_by, claimed_until,
            body_sha256
        FROM deliveries
        """,
        "CREATE TABLE delivery_bodies_v10 (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)",
        """
        INSERT INTO delivery_bodies_v10 (seq, body)
        SELECT d.seq, b.body FROM delivery_bodies AS b JOIN deliveries_v10 AS d ON d.id = b.id
        """,
        "DROP TABLE delivery_bodies",
        "DROP TABLE deliveries",
        "ALTER TABLE deliveries_v10 RENAME TO deliveries",
        "ALTER TABLE delivery_bodies_v10 RENAME TO delivery_bodies",
        """
        CREATE INDEX deliveries_pending ON deliveries (received_at)
            WHERE processed_at IS NULL
        """,
        "CREATE UNIQUE INDEX deliveries_body_sha256 ON deliveries (body_sha256)",
    ),
    # 11: no table changes. Bodies written from now on are LZ4 frames (rows.pack_body), which
    # an older ghapp would hand its inbox as JSON; at 11 it refuses the file instead.
    (),
)

SCHEMA_VERSION = len(MIGRATIONS)


async def apply_migrations(db: aiosqlite.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION inside the caller's write transaction.

    The connection has `sha256()` (see SqliteTaskStore.migrate).
    """
    found = await db.execute_fetchall("PRAGMA user_version")
    version = int(next(iter(found))["user_version"])  # rows are dicts (SqliteTaskStore)
    for statement in steps_after(version, MIGRATIONS):
        await db.execute(statement)
    if version != SCHEMA_VERSION:
        await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return SCHEMA_VERSION
