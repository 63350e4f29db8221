"""`python -m ghapp backup` copies a live WAL-mode store with its newest writes."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from ghapp.core.model import NewTask, TaskSource, utcnow
from ghapp.store.sqlite import SqliteTaskStore

ROOT = Path(__file__).resolve().parents[2]


async def test_backup_of_a_running_store_holds_its_last_writes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = SqliteTaskStore(data / "ghapp.sqlite3")
    await store.migrate()
    try:
        for issue in range(3):
            new = NewTask(TaskSource.LABEL, "octo/app", 1, issue + 1, "alice", "do it", 1.0)
            assert await store.create_task(new, utcnow()) is not None
        wal = data / "ghapp.sqlite3-wal"
        assert wal.exists() and wal.stat().st_size > 0  # the newest writes sit in the WAL
        target = tmp_path / "backup.sqlite3"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(ROOT),
            "WEBHOOK_SECRET": "x",
            "MC_DATA_DIR": str(data),
        }
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "ghapp", "backup", "--to", str(target)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert "(3 tasks)" in out.stdout
        with sqlite3.connect(target) as db:
            assert db.execute("SELECT COUNT(*) FROM tasks").fetchone() == (3,)
        assert target.stat().st_mode & 0o777 == 0o600
    finally:
        await store.close()


def test_backup_without_a_database_says_so(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "WEBHOOK_SECRET": "x",
        "MC_DATA_DIR": str(tmp_path / "nothing"),
    }
    out = subprocess.run(
        [sys.executable, "-m", "ghapp", "backup"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 1 and out.stderr.startswith("ghapp: backup failed")
    assert "no database at" in out.stderr and not (tmp_path / "nothing" / "backups").exists()
