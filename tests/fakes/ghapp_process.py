"""A real `python -m ghapp` child process that tests can SIGKILL, restart and inspect.

The one live-process fake: the e2e, chaos and cluster suites and bench/scale.py start ghapp
through it, with a role for cluster nodes, a start counter for repeated kills, a log per
process and a clean-up of the agents a killed process left behind.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import sys
from pathlib import Path
from typing import Any

import aiohttp

from ghapp.agent.claude import RUN_MARKER
from ghapp.agent.factory import agent_instance
from ghapp.agent.procs import kill_marked, marked_pids
from tests.fakes.stack import eventually


def alive(pid: int) -> bool:
    """A live process, not a zombie waiting for a reaper that PID 1 may never be."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agent_pids(data_dir: Path) -> list[int]:
    """Live processes of the agents a ghapp of this data directory started (any depth)."""
    marker = f"{RUN_MARKER}={agent_instance(data_dir)}:"
    return [pid for pid in marked_pids(marker, None, prefix=True) if alive(pid)]


def kill_agents(data_dir: Path) -> int:
    """SIGKILL every agent process started by a ghapp of this data directory; how many."""
    return kill_marked(f"{RUN_MARKER}={agent_instance(data_dir)}:", None, prefix=True)


def writer_pids(parent: int) -> list[int]:
    """Live delivery writers (ghapp/store/sqlite/writer.py) that process `parent` started."""
    found = []
    for task in Path(f"/proc/{parent}/task").glob("*"):
        for kid in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{kid}/cmdline").read_bytes()
            except OSError:
                continue  # it just ended
            if b"ghapp.store.sqlite.writer" in cmdline and alive(int(kid)):
                found.append(int(kid))
    return found


class GhappProcess:
    """`python -m ghapp` as a child process that a test can SIGKILL and start again."""

    def __init__(self, env: dict[str, str], cwd: Path, log: Path, role: str = "all") -> None:
        self.env, self.cwd, self.log, self.role = env, cwd, log, role
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.kills = 0

    @property
    def port(self) -> int:
        return int(self.env["PORT"])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return Path(self.env["MC_DATA_DIR"])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, within: float = 60.0) -> None:
        """Start the process and wait until /healthz answers 200 (or kill() ended it)."""
        assert not self.running, "ghapp is already running"
        out = self.log.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ghapp",
            "--role",
            self.role,
            env=self.env,
            cwd=self.cwd,
            stdout=out,
            stderr=out,
            stdin=asyncio.subprocess.DEVNULL,
        )
        out.close()
        self.starts += 1
        proc, kills = self.proc, self.kills

        async def healthy() -> bool:
            if proc.returncode is not None:
                if self.kills > kills:  # a trap killed it while it started: fine
                    return True
                raise AssertionError(f"ghapp exited with {proc.returncode}; see {self.log}")
            return (await self.health()).get("ok") is True

        await eventually(healthy, within=within)

    async def health(self) -> dict[str, Any]:
        """The /healthz report, or {} while the server does not answer."""
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with (
                aiohttp.ClientSession(timeout=timeout) as s,
                s.get(f"{self.base_url}/healthz") as r,
            ):
                data: dict[str, Any] = await r.json()
                return data
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return {}

    async def kill(self) -> None:
        """SIGKILL: no handler runs, no finally, no flush; the OS closes its sockets."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            self.kills += 1
        await self.proc.wait()

    async def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 30 s)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    def kill_agents(self) -> int:
        """SIGKILL, by pid, the agents this process started; none should outlive it."""
        return kill_agents(self.data_dir)


def read_db(path: Path, query: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    """Rows of one query against ghapp's SQLite file, read directly (not through ghapp)."""
    conn = sqlite3.connect(path, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute(query, params))
    finally:
        conn.close()
