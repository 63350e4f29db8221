"""Real `python -m ghapp --role ...` processes, and a fake Bot API that records who polls."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.ghapp_process import kill_agents
from tests.fakes.stack import eventually
from tests.fakes.telegram import FakeTelegram


class Proc:
    """One ghapp process of the cluster; a test can SIGKILL it and start it again."""

    def __init__(self, name: str, role: str, env: dict[str, str], cwd: Path) -> None:
        self.name, self.role, self.env, self.cwd = name, role, env, cwd
        self.log = cwd / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def data_dir(self) -> Path:
        return Path(self.env["MC_DATA_DIR"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['PORT']}"

    async def start(self) -> None:
        """Start and wait until /healthz answers 200."""
        out = self.log.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ghapp", "--role", self.role,
            env=self.env, cwd=self.cwd, stdout=out, stderr=out,
            stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        out.close()
        proc = self.proc

        async def healthy() -> bool:
            if proc.returncode is not None:
                raise AssertionError(f"{self.name} exited with {proc.returncode}; see {self.log}")
            return (await self.health()).get("ok") is True

        await eventually(healthy, within=60)

    async def health(self) -> dict[str, Any]:
        """The /healthz report, or {} while nothing answers."""
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with (
                aiohttp.ClientSession(timeout=timeout) as s,
                s.get(f"{self.url}/healthz") as r,
            ):
                data: dict[str, Any] = await r.json()
                return data
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return {}

    async def kill(self) -> None:
        """SIGKILL: no clean-up runs; the OS closes its sockets (database sessions included)."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
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


class NamingTelegram(FakeTelegram):
    """The fake Bot API, reachable at /<caller>/bot<token>/...: it records who polled when."""

    def __init__(self) -> None:
        super().__init__()
        self.polls: list[tuple[str, float]] = []

    def api_url(self, caller: str) -> str:
        return f"{self.url}/{caller}"

    async def start(self) -> None:
        self._changed = asyncio.Condition()
        app = web.Application(middlewares=[self._outage])
        app.router.add_route("*", "/{caller}/bot{token}/{method}", self._named)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await self._listen()

    async def _named(self, request: web.Request) -> web.Response:
        if request.match_info["method"] == "getUpdates":
            self.polls.append((request.match_info["caller"], time.monotonic()))
        return await self._dispatch(request)

    def pollers(self, since: float = 0.0, until: float = float("inf")) -> set[str]:
        """Who called getUpdates in a time window."""
        return {who for who, at in self.polls if since <= at <= until}
