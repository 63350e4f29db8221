"""`python -m ghapp backup`: a consistent copy of the SQLite store while ghapp runs.

The store runs in WAL mode, so copying the file alone can miss the newest writes;
SQLite's online backup copies every committed page, the WAL's included.
"""

from __future__ import annotations

import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path

from ghapp.config import ConfigError, load_settings


def backup(source: Path, target: Path) -> int:
    """Copy the database page by page into `target`; returns the tasks it holds."""
    if not source.is_file():
        raise FileNotFoundError(f"no database at {source.resolve()}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
        if dst.execute("PRAGMA integrity_check").fetchone() != ("ok",):
            raise sqlite3.DatabaseError(f"the copy at {target} fails its integrity check")
        return int(dst.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])


def main(to: str | None) -> int:
    """Back up the configured store; one line on success or failure."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"ghapp: configuration error: {exc}", file=sys.stderr)
        return 2
    if settings.is_postgres:
        print("ghapp: DATABASE_URL is PostgreSQL: back it up with pg_dump", file=sys.stderr)
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = Path(to) if to else settings.data_dir / "backups" / f"ghapp-{stamp}.sqlite3"
    try:
        tasks = backup(settings.sqlite_path, target)
    except (OSError, sqlite3.Error) as exc:
        print(f"ghapp: backup failed, nothing written: {exc}", file=sys.stderr)
        target.unlink(missing_ok=True)
        return 1
    target.chmod(0o600)
    print(f"backed up {settings.sqlite_path} to {target} ({tasks} tasks)")
    return 0
