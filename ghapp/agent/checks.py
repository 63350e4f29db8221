"""The Checks port: a repository's setup and verify commands in the agent's own sandbox,
as the agent's user, with the agent's network (setup) or none at all (verify)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence

from ghapp.agent import sandbox
from ghapp.agent.cgroup import AttemptCgroup
from ghapp.agent.claude import RUN_MARKER, SAFE_PATH, SandboxConfig
from ghapp.agent.egress import EgressProxy
from ghapp.agent.jail import Identity, Jail
from ghapp.agent.procs import exit_status, pump
from ghapp.core.gate import TAIL_LINES, CheckResult
from ghapp.core.ports import Workspace

log = logging.getLogger(__name__)
MAX_LINE_CHARS = 2000


class SandboxChecks:
    """Each command runs as `/bin/sh -c COMMAND` in a fresh jail on the task's checkout."""

    def __init__(
        self,
        identity: Identity,
        sandboxing: SandboxConfig,
        *,
        instance: str = "ghapp",
    ) -> None:
        self.identity, self.sandboxing = identity, sandboxing
        self._instance = instance

    async def run(
        self,
        commands: Sequence[str],
        ws: Workspace,
        *,
        network: bool,
        timeout_s: float,
        stop: asyncio.Event,
        keep_going: bool,
    ) -> list[CheckResult]:
        """Run the commands in order; a failure ends the run unless keep_going."""
        marker = f"{RUN_MARKER}={self._instance}:{uuid.uuid4().hex}"
        bridges = (sandbox.EGRESS_SOCKET,) if network else ()
        lim = self.sandboxing.limits
        cgroup = None
        if self.sandboxing.memory_cgroups:  # the agent's memory and process caps, as for it
            cgroup = AttemptCgroup(f"checks-{marker[-12:]}", lim.memory_mb, lim.max_procs)
        jail = await asyncio.to_thread(
            Jail.open,
            self.identity,
            ws.path,
            ws.home,
            self.sandboxing.bwrap,
            lim,
            (),
            cgroup,
            marker,
            bridges,
        )
        egress = EgressProxy(self.sandboxing.allow, label="checks") if network else None
        try:
            proxy = ""
            if egress is not None:
                where = jail.socket(sandbox.EGRESS_SOCKET) if jail.sandboxed else None
                proxy = await egress.start(where)
                if where is not None:
                    os.chmod(where, 0o666)
            elif not jail.sandboxed:
                log.warning("MC_SANDBOX=none: verify commands run with the host's network")
            env = self._env(jail, proxy)
            results: list[CheckResult] = []
            for command in commands:
                result = await self._one(jail, command, env, timeout_s, stop)
                results.append(result)
                if stop.is_set() or (not result.passed and not keep_going):
                    break
            return results
        finally:
            if egress is not None:
                await egress.close()
            await jail.close()

    def _env(self, jail: Jail, proxy: str) -> dict[str, str]:
        """Built from nothing, like the agent's: no secret of ghapp's, no model token."""
        name, _, value = jail.marker.partition("=")
        inside = jail.sandboxed
        env = {
            "PATH": ":".join(SAFE_PATH),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "USER": self.identity.name,
            "LOGNAME": self.identity.name,
            "HOME": sandbox.INSIDE_HOME if inside else str(jail.dirs.home),
            "TMPDIR": "/tmp" if inside else str(jail.dirs.tmp),
            "CI": "true",
            name: value,
        }
        if proxy:
            url = f"http://127.0.0.1:{sandbox.EGRESS_PORT}" if inside else proxy
            for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
                env[key] = url
            env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        return env

    async def _one(
        self,
        jail: Jail,
        command: str,
        env: Mapping[str, str],
        timeout_s: float,
        stop: asyncio.Event,
    ) -> CheckResult:
        """One command: its exit, duration and output tail; over time or stopped, killed."""
        started = time.monotonic()
        lines: deque[str] = deque(maxlen=TAIL_LINES)
        try:
            proc = await asyncio.create_subprocess_exec(
                *jail.argv(["/bin/sh", "-c", command], env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=jail.dirs.checkout,
                env=dict(env),
                start_new_session=True,
            )
        except OSError as exc:
            return CheckResult(command, False, 0.0, f"cannot start: {exc}")
        assert proc.stdout is not None
        reader = asyncio.create_task(
            pump(proc.stdout, lambda b: lines.append(b.decode("utf-8", "replace")[:MAX_LINE_CHARS]))
        )
        exited = asyncio.ensure_future(exit_status(proc))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({exited, stopped}, timeout=timeout_s, return_when="FIRST_COMPLETED")
            timed_out = not exited.done()
            if timed_out:
                await asyncio.to_thread(jail.kill, proc.pid)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):  # not wait_for: it can swallow a cancel
                        await asyncio.shield(exited)
        finally:
            stopped.cancel()
            if not exited.done():
                await asyncio.to_thread(jail.kill, proc.pid)
            await asyncio.wait({reader}, timeout=2)
            reader.cancel()
        duration = time.monotonic() - started
        code = exited.result() if exited.done() and not exited.cancelled() else None
        if timed_out and not stop.is_set():
            lines.append(f"[ghapp: stopped after {timeout_s:g} s]")
        passed = code == 0 and not timed_out
        if not passed and code is not None and not timed_out:
            lines.append(f"[ghapp: exit status {code}]")
        return CheckResult(
            command, passed, duration, "\n".join(lines), timed_out and not stop.is_set()
        )
