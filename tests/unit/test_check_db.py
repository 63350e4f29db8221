"""`python -m ghapp check` tests the database an operator configured."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ghapp.check_db import database
from ghapp.config import load_settings
from ghapp.store.sqlite import SqliteTaskStore
from tests.fakes.postgres import require_postgres


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"WEBHOOK_SECRET": "s" * 20, "MC_DATA_DIR": str(tmp_path / "data"), **extra}


def database_check(values: dict[str, str]) -> tuple[bool, str]:
    """The database line of `check` (run_checks itself runs its own event loop)."""
    _, ok, detail = database(load_settings(values))
    return ok, detail


async def test_sqlite_fresh_current_and_damaged(tmp_path: Path) -> None:
    values = env(tmp_path)
    ok, detail = database_check(values)
    assert ok and "will be created" in detail
    store = SqliteTaskStore(load_settings(values).sqlite_path)
    await store.migrate()
    await store.close()
    ok, detail = database_check(values)
    assert ok and "current" in detail
    raw = sqlite3.connect(load_settings(values).sqlite_path)
    raw.execute("PRAGMA user_version = 999")
    raw.commit()
    raw.close()
    ok, detail = database_check(values)
    assert not ok and "NEWER" in detail
    load_settings(values).sqlite_path.write_bytes(b"not a database at all" * 100)
    ok, detail = database_check(values)
    assert not ok and "cannot be read" in detail


def test_postgres_unreachable_fails_without_showing_the_password(tmp_path: Path) -> None:
    url = "postgresql://ghapp:hunter2secret@127.0.0.1:1/ghapp"
    ok, detail = database_check(env(tmp_path, DATABASE_URL=url))
    assert not ok and "does not answer" in detail and "127.0.0.1:1/ghapp" in detail
    assert "hunter2secret" not in detail


def test_postgres_reachable_reports_its_schema(tmp_path: Path) -> None:
    server = require_postgres()
    ok, detail = database_check(env(tmp_path, DATABASE_URL=server.dsn("postgres")))
    assert ok, detail
    assert "PostgreSQL" in detail and "schema" in detail


@pytest.fixture(autouse=True)
def _no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a .env in the checkout must not leak into these settings
