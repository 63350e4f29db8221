"""Process plumbing for the agent: bounded line reading, exit polling, signals, leftovers."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

READ_CHUNK = 1 << 16
MAX_LINE = 1 << 20  # longer lines are cut here: an agent cannot make ghapp buffer without bound


def marked_pids(marker: str, uid: int | None, prefix: bool = False) -> list[int]:
    """Live processes whose environment carries the marker (or, with `prefix`, starts with it)."""
    needle = marker.encode()
    found: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if uid is not None and os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/environ", "rb") as fh:
                entries = fh.read().split(b"\0")
        except OSError:
            continue
        if any(e.startswith(needle) if prefix else e == needle for e in entries):
            found.append(int(name))
    return found


def kill_marked(marker: str, uid: int | None, prefix: bool = False) -> int:
    """SIGKILL every marked process until none is left; returns how many were found."""
    total = 0
    for _ in range(20):
        pids = [p for p in marked_pids(marker, uid, prefix) if p != os.getpid()]
        if not pids:
            break
        total += len(pids)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)
    return total


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal a process group, ignoring one that is already gone."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def signal_pid(pid: int, sig: signal.Signals) -> None:
    """Signal one process, ignoring one that is already gone."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def exit_status(proc: asyncio.subprocess.Process) -> int:
    """Exit status as soon as the process ends (proc.wait() also waits for its pipes)."""
    while proc.returncode is None:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return proc.returncode


async def exits(exited: asyncio.Future[int], wait_s: float) -> bool:
    """Whether the process ends within `wait_s` seconds."""
    await asyncio.wait({exited}, timeout=max(wait_s, 0.0))
    return exited.done()


async def pump(stream: asyncio.StreamReader, handle: Callable[[bytes], None]) -> None:
    """Split a pipe into lines; a line past MAX_LINE is handed over cut, the rest dropped."""
    buf = bytearray()
    scan = 0
    dropping = False
    while chunk := await stream.read(READ_CHUNK):
        buf += chunk
        start = 0
        while (nl := buf.find(b"\n", scan)) >= 0:
            if not dropping:
                handle(bytes(buf[start:nl]))
            dropping = False
            start = scan = nl + 1
        del buf[:start]
        scan = len(buf)
        if len(buf) > MAX_LINE and not dropping:
            handle(bytes(buf[:MAX_LINE]))
            dropping = True
        if dropping:
            buf.clear()
            scan = 0
    if buf and not dropping:
        handle(bytes(buf))


def descendants(pid: int) -> list[int]:
    """Live descendants of a process, parents before children (from /proc's children lists)."""
    found: list[int] = []
    queue = [pid]
    while queue:
        current = queue.pop(0)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{current}/task/{tid}/children") as fh:
                    kids = [int(k) for k in fh.read().split()]
            except OSError:
                continue
            found += kids
            queue += kids
    return found


def command_name(pid: int) -> str:
    """A process's command name, empty when it is gone."""
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def descendants_signal(pid: int, sig: signal.Signals, skip: str) -> None:
    """Signal the outermost descendants not named `skip` (inside bwrap: the relay)."""
    top: set[int] = set()
    for child in descendants(pid):
        if command_name(child) == skip:
            continue
        parent = _parent(child)
        if parent == pid or command_name(parent) == skip:
            top.add(child)
    for child in top:
        signal_pid(child, sig)


def _parent(pid: int) -> int:
    """A process's parent pid, 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0
