"""Retention: what ghapp keeps on disk stops growing after MC_RETENTION_DAYS, and the disk
it uses is reported (/healthz, `check`, `prune`).

Pruned, once older than the window: bodies of processed deliveries (their ids and hashes
stay, so redeliveries and replays are still duplicates), task logs of tasks no longer
active, checkouts that finished tasks left behind, and unreachable objects in mirrors.
A daily sweep does it in every process; `python -m ghapp prune` does it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ghapp.core.model import Task
from ghapp.core.ports import Clock, TaskStore
from ghapp.workspace.git import GitWorkspace

log = logging.getLogger(__name__)

DAY_S = 86400.0
LOW_FREE_BYTES = 1 << 30  # below this much free space, /healthz and `check` say so
_LOG = re.compile(r"task-(\d+)-attempt-\d+\.log")
_CHECKOUT = re.compile(r"t(\d+)-[0-9a-f]{32}")


def tree_size(path: Path) -> int:
    """Bytes of the files under `path` (symlinks not followed); 0 when it does not exist."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def disk_usage(data_dir: Path) -> dict[str, Any]:
    """The data dir's size, and the free and total space of its file system."""
    fs = os.statvfs(data_dir)
    free = fs.f_bavail * fs.f_frsize
    return {
        "path": str(data_dir.resolve()),
        "data_bytes": tree_size(data_dir),
        "free_bytes": free,
        "total_bytes": fs.f_blocks * fs.f_frsize,
        "low": free < LOW_FREE_BYTES,
    }


def megabytes(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


class DiskGauge:
    """disk_usage for /healthz: walking the data dir is slow, so its size is kept a while."""

    def __init__(self, data_dir: Path, ttl_s: float = 300.0) -> None:
        self.data_dir, self.ttl_s = data_dir, ttl_s
        self._last: tuple[float, dict[str, Any]] | None = None

    async def report(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._last is None or now - self._last[0] > self.ttl_s:
            self._last = (now, await asyncio.to_thread(disk_usage, self.data_dir))
            return self._last[1]
        fs = await asyncio.to_thread(os.statvfs, self.data_dir)  # free space is always fresh
        free = fs.f_bavail * fs.f_frsize
        return {**self._last[1], "free_bytes": free, "low": free < LOW_FREE_BYTES}


@dataclass
class PruneReport:
    """What one sweep removed."""

    deliveries: int = 0
    logs: int = 0
    stored_logs: int = 0
    checkouts: int = 0
    mirrors: int = 0
    freed_bytes: int = 0

    def __str__(self) -> str:
        return (
            f"{self.deliveries} delivery bodies, {self.logs} task logs, "
            f"{self.checkouts} checkouts, {self.stored_logs} stored log tails dropped; "
            f"{self.mirrors} mirrors collected; "
            f"{megabytes(self.freed_bytes)} freed"
        )


class Retention:
    """Prunes this process's data dir and the shared store; daily once started."""

    def __init__(
        self,
        store: TaskStore,
        data_dir: Path,
        days: float,
        clock: Clock,
        vcs: GitWorkspace | None = None,
        *,
        interval_s: float = DAY_S,
        first_delay_s: float = 600.0,
    ) -> None:
        self.store, self.data_dir, self.days, self.clock, self.vcs = (
            store,
            data_dir,
            days,
            clock,
            vcs,
        )
        self.interval_s, self.first_delay_s = interval_s, first_delay_s
        self._loop: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="ghapp-retention")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop

    async def _run(self) -> None:
        await asyncio.sleep(self.first_delay_s)
        while True:
            try:
                log.info("retention: %s", await self.sweep())
            except Exception:
                log.exception("retention sweep failed; trying again tomorrow")
            await asyncio.sleep(self.interval_s)

    async def sweep(self) -> PruneReport:
        """One pass over everything older than the window."""
        cutoff = self.clock.now() - timedelta(days=self.days)
        report = PruneReport(deliveries=await self.store.prune_deliveries(cutoff))
        report.stored_logs = await self.store.prune_task_logs(cutoff)
        tasks: dict[int, Task | None] = {}

        async def task(task_id: int) -> Task | None:
            if task_id not in tasks:
                tasks[task_id] = await self.store.get_task(task_id)
            return tasks[task_id]

        for path, task_id in await asyncio.to_thread(_entries, self.data_dir / "logs", _LOG):
            found = await task(task_id)
            if (found is None or found.state.terminal) and _older(path, cutoff):
                report.freed_bytes += await asyncio.to_thread(_remove, path)
                report.logs += 1
        for path, task_id in await asyncio.to_thread(_entries, self.data_dir / "work", _CHECKOUT):
            found = await task(task_id)
            if found is None:
                done = _older(path, cutoff)
            else:
                done = found.state.terminal and (found.finished_at or cutoff) < cutoff
            if done:
                report.freed_bytes += await asyncio.to_thread(_remove, path)
                report.checkouts += 1
        if self.vcs is not None:
            before = await asyncio.to_thread(tree_size, self.vcs.mirrors)
            report.mirrors = len(await self.vcs.collect_garbage(max(1, int(self.days))))
            after = await asyncio.to_thread(tree_size, self.vcs.mirrors)
            report.freed_bytes += max(before - after, 0)
        return report


def _entries(directory: Path, pattern: re.Pattern[str]) -> list[tuple[Path, int]]:
    """Files or directories named by `pattern`, with the task id the name holds."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return [(directory / n, int(m.group(1))) for n in names if (m := pattern.fullmatch(n))]


def _older(path: Path, cutoff: datetime) -> bool:
    """Last changed before the cutoff."""
    try:
        return os.lstat(path).st_mtime < cutoff.timestamp()
    except FileNotFoundError:
        return False


def _remove(path: Path) -> int:
    """Delete a file or a whole tree (symlinks inside are removed, never followed)."""
    size = tree_size(path) if path.is_dir() else os.lstat(path).st_size
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    return size
