"""Retention on a real data dir, SQLite store and git mirror: what is old and finished goes,
what is recent or still active stays; disk use is reported by /healthz, check and prune."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from ghapp import check
from ghapp.bootstrap import SystemClock
from ghapp.core.model import Task, TaskState, utcnow
from ghapp.retention import Retention
from ghapp.store.sqlite import SqliteTaskStore
from ghapp.workspace.git import GitWorkspace
from tests.contract.support import new
from tests.fakes.stack import close_stack, make_stack

ROOT = Path(__file__).resolve().parents[2]
DAYS = 30
OLD = time.time() - 40 * 86400
RECENT = time.time() - 86400


def git(*args: str, cwd: Path, stdin: str | None = None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    done = subprocess.run(
        ["git", *args], cwd=cwd, input=stdin, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def aged(path: Path, when: float, text: str | None = None) -> Path:
    """Give a file (written first if `text` is given) or directory an old modification time."""
    if text is not None:
        path.write_text(text)
    os.utime(path, (when, when), follow_symlinks=False)
    return path


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteTaskStore]:
    s = SqliteTaskStore(tmp_path / "data" / "ghapp.sqlite3")
    await s.migrate()
    yield s
    await s.close()


async def task_in(store: SqliteTaskStore, issue: int, state: TaskState, days_ago: float) -> Task:
    """A task that reached `state`, finishing `days_ago` days ago."""
    at = utcnow() - timedelta(days=days_ago)
    task = await store.create_task(new(issue), at - timedelta(minutes=5))
    assert task is not None
    claimed = (await store.claim_next(at - timedelta(minutes=1), 100.0)).task
    assert claimed is not None and claimed.id == task.id
    if state is TaskState.RUNNING:
        return claimed
    return await store.finish(task.id, state, at, 0.1)


def checkout(data: Path, task_id: int, when: float) -> Path:
    """A leftover task directory as a killed attempt leaves it."""
    task_dir = data / "work" / f"t{task_id}-{os.urandom(16).hex()}"
    (task_dir / "repo").mkdir(parents=True)
    (task_dir / "repo" / "big.bin").write_bytes(b"x" * 100_000)
    return aged(task_dir, when)


def mirror_with_garbage(data: Path) -> tuple[Path, str, str]:
    """A bare mirror with one commit and one unreachable blob last touched 40 days ago."""
    mirror = data / "mirrors" / "octo" / "app.git"
    mirror.mkdir(parents=True)
    git("init", "--quiet", "--bare", cwd=mirror)
    blob = git("hash-object", "-w", "--stdin", cwd=mirror, stdin=os.urandom(50_000).hex())
    aged(mirror / "objects" / blob[:2] / blob[2:], OLD)
    tree = git("mktree", cwd=mirror, stdin="")
    commit = git("commit-tree", tree, "-m", "kept", cwd=mirror)
    git("update-ref", "refs/heads/main", commit, cwd=mirror)
    return mirror, blob, commit


def has_object(mirror: Path, sha: str) -> bool:
    probe = subprocess.run(["git", "cat-file", "-e", sha], cwd=mirror, capture_output=True)
    return probe.returncode == 0


async def test_sweep_prunes_what_is_old_and_finished_and_keeps_the_rest(
    tmp_path: Path, store: SqliteTaskStore
) -> None:
    data = tmp_path / "data"
    old = await task_in(store, 1, TaskState.SUCCEEDED, days_ago=40)
    running = await task_in(store, 2, TaskState.RUNNING, days_ago=40)
    recent = await task_in(store, 3, TaskState.FAILED, days_ago=1)
    (data / "logs").mkdir()
    for name, when in (
        (f"task-{old.id}-attempt-1.log", OLD),
        ("task-999-attempt-1.log", OLD),  # its task is gone
        (f"task-{running.id}-attempt-1.log", OLD),  # active: a requeue books from it
        (f"task-{recent.id}-attempt-1.log", RECENT),
        ("notes.txt", OLD),  # not ghapp's
    ):
        aged(data / "logs" / name, when, "{}\n" * 1000)
    gone = [checkout(data, old.id, OLD), checkout(data, 998, OLD)]
    kept = [checkout(data, running.id, OLD), checkout(data, recent.id, OLD)]
    mirror, garbage, commit = mirror_with_garbage(data)
    assert has_object(mirror, garbage)
    now = utcnow()
    for delivery_id, days_ago in (("d-old", 40), ("d-new", 1)):
        await store.add_delivery(delivery_id, "issues", delivery_id.encode() * 100, now)
        await store.mark_delivery(delivery_id, now - timedelta(days=days_ago))

    retention = Retention(store, data, DAYS, SystemClock(), GitWorkspace(data, None))
    report = await retention.sweep()

    assert (report.deliveries, report.logs, report.checkouts, report.mirrors) == (1, 2, 2, 1)
    assert report.freed_bytes > 200_000 + 50_000
    assert sorted(p.name for p in (data / "logs").iterdir()) == sorted(
        [f"task-{running.id}-attempt-1.log", f"task-{recent.id}-attempt-1.log", "notes.txt"]
    )
    assert [p.exists() for p in gone + kept] == [False, False, True, True]
    assert not has_object(mirror, garbage) and has_object(mirror, commit)
    # Bodies of old deliveries go; their ids and hashes stay, so a replay is a duplicate.
    assert await store.add_delivery("replay", "issues", b"d-old" * 100, now) is False
    assert (await retention.sweep()).logs == 0  # nothing left to do


async def test_the_sweep_runs_by_itself_until_stopped(
    tmp_path: Path, store: SqliteTaskStore
) -> None:
    data = tmp_path / "data"
    old = await task_in(store, 1, TaskState.FAILED, days_ago=40)
    (data / "logs").mkdir()
    log = aged(data / "logs" / f"task-{old.id}-attempt-1.log", OLD, "x")
    retention = Retention(store, data, DAYS, SystemClock(), interval_s=0.05, first_delay_s=0.05)
    await retention.start()
    try:
        for _ in range(100):
            if not log.exists():
                break
            await asyncio.sleep(0.02)
        assert not log.exists()
        later = aged(data / "logs" / "task-999-attempt-2.log", OLD, "x")  # the next day's
        for _ in range(100):
            if not later.exists():
                break
            await asyncio.sleep(0.02)
        assert not later.exists()
    finally:
        await retention.stop()


async def test_prune_command_and_check_report_disk_use(
    tmp_path: Path, store: SqliteTaskStore
) -> None:
    data = tmp_path / "data"
    old = await task_in(store, 1, TaskState.CANCELLED, days_ago=40)
    (data / "logs").mkdir()
    aged(data / "logs" / f"task-{old.id}-attempt-1.log", OLD, "x")
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "WEBHOOK_SECRET": "s",
        "MC_DATA_DIR": str(data),
        "MC_RETENTION_DAYS": "30",
        "CLAUDE_BIN": "true",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ghapp",
        "prune",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out = (await proc.communicate())[0].decode()
    assert proc.returncode == 0, out
    assert "older than 30 days: 0 delivery bodies, 1 task logs, 0 checkouts" in out
    assert f"{data.resolve()}:" in out and " MB free of " in out
    assert list((data / "logs").iterdir()) == []

    # run_checks runs its own event loop (the remote checks); no APP_ID nor model key here,
    # so it asks no far end.
    [disk] = [row for row in await asyncio.to_thread(check.run_checks, env) if row[0] == "disk"]
    assert disk[1] is True and str(data.resolve()) in disk[2] and "free of" in disk[2]


async def test_healthz_reports_disk_use() -> None:
    stack = await make_stack(worker_user=None)
    try:
        app = await stack.start()
        assert any(isinstance(part, Retention) for part in app.extra_start)  # the daily sweep
        assert stack.server is not None
        async with aiohttp.ClientSession() as http:
            async with http.get(stack.server.make_url("/healthz")) as response:
                report = await response.json()
        disk = report["disk"]
        assert disk["path"] == str(stack.settings.data_dir.resolve())
        assert disk["data_bytes"] > 0 and disk["free_bytes"] > 0 and disk["low"] is False
        assert disk["total_bytes"] >= disk["free_bytes"]
    finally:
        await close_stack(stack)
