"""The database part of `python -m ghapp check`: reachable, readable, and at which schema."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from urllib.parse import urlsplit

import asyncpg

from ghapp.config import Settings
from ghapp.store.postgres import schema as pg_schema
from ghapp.store.sqlite import schema

Check = tuple[str, bool, str]
NAME = "database"


def _schema(found: int | None, current: int) -> str:
    """How the stored schema compares with this ghapp's."""
    if found is None or found == 0:
        return "no schema yet (ghapp creates it at start)"
    if found > current:
        return f"schema {found} is NEWER than this ghapp's {current}"
    if found < current:
        return f"schema {found}, upgraded to {current} at start"
    return f"schema {found}, current"


def _sqlite(settings: Settings) -> Check:
    """The file opens read-only and passes quick_check; or its directory is writable."""
    path = settings.sqlite_path
    if not path.exists():
        folder = path.parent if path.parent.exists() else settings.data_dir
        if folder.exists() and not os.access(folder, os.W_OK):
            return (NAME, False, f"{path} does not exist and {folder} is not writable")
        return (NAME, True, f"{path} will be created at start")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            verdict = db.execute("PRAGMA quick_check").fetchone()
            version = db.execute("PRAGMA user_version").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        return (NAME, False, f"{path} cannot be read: {exc}")
    if verdict is None or verdict[0] != "ok":
        return (NAME, False, f"{path} is damaged: {verdict[0] if verdict else 'no answer'}")
    found = int(version[0]) if version else None
    newer = found is not None and found > schema.SCHEMA_VERSION
    return (NAME, not newer, f"SQLite {path}: {_schema(found, schema.SCHEMA_VERSION)}")


async def _ask_postgres(dsn: str) -> int | None:
    """Connect, run a query, and read the schema version (None before the first start)."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.fetchval("SELECT 1", timeout=10)
        exists = await conn.fetchval("SELECT to_regclass('ghapp_schema') IS NOT NULL")
        if not exists:
            return None
        found = await conn.fetchval("SELECT max(version) FROM ghapp_schema")
        return None if found is None else int(found)
    finally:
        await conn.close()


def _postgres(settings: Settings) -> Check:
    """The server answers a query as ghapp's user; the schema is not newer than ghapp."""
    where = urlsplit(settings.database_url)
    shown = f"{where.hostname or 'localhost'}:{where.port or 5432}{where.path}"  # no password
    try:
        found = asyncio.run(_ask_postgres(settings.database_url))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        detail = str(exc).replace(where.password, "***") if where.password else str(exc)
        return (NAME, False, f"PostgreSQL {shown} does not answer: {type(exc).__name__}: {detail}")
    current = pg_schema.SCHEMA_VERSION
    newer = found is not None and found > current
    return (NAME, not newer, f"PostgreSQL {shown}: {_schema(found, current)}")


def database(settings: Settings) -> Check:
    """Whether the task store in DATABASE_URL can be used."""
    return _postgres(settings) if settings.is_postgres else _sqlite(settings)
