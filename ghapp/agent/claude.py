"""ClaudeWorker: runs the Claude Code CLI in its attempt's sandbox, meters it, enforces limits."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
import signal
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import aiohttp

from ghapp.agent import sandbox
from ghapp.agent.cgroup import AttemptCgroup
from ghapp.agent.egress import AllowList, EgressProxy
from ghapp.agent.jail import Identity, Jail
from ghapp.agent.logship import LogShipper, Ship
from ghapp.agent.metering import Account, MeteringProxy, Upstream
from ghapp.agent.outcome import outcome_of
from ghapp.agent.prices import PriceTable, load_prices
from ghapp.agent.procs import exit_status, exits, kill_marked, pump
from ghapp.agent.stream import StreamError, StreamState, clip
from ghapp.agent.tasklog import DEFAULT_MAX_BYTES, TaskLog
from ghapp.core.model import STORED_LOG_CHARS, GhappError
from ghapp.core.ports import AgentOutcome, AgentRequest, StopReason

log = logging.getLogger(__name__)

SAFE_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
DEFAULT_PERMISSION_FLAGS = ("--permission-mode", "bypassPermissions")
RUN_MARKER = "GHAPP_AGENT_RUN"  # tags every process of a run, even ones that leave its group
MAX_PARSED_LINE = 16 << 20
PIPE_DRAIN_S = 2.0
Book = Callable[[int, int, float], Awaitable[object]]


async def _no_book(task_id: int, attempt: int, cost: float) -> None:
    """For tests that run a worker without a store."""


@dataclass(frozen=True)
class SandboxConfig:
    """MC_SANDBOX and the per-attempt limits, egress allowlist and disk watch."""

    bwrap: str | None = None  # None: MC_SANDBOX=none
    limits: sandbox.AgentLimits = field(default_factory=sandbox.AgentLimits)
    allow: AllowList = field(default_factory=lambda: AllowList.parse(None))
    memory_cgroups: bool = False
    disk_poll_s: float = 2.0


def agent_identity(run_as: str | None) -> Identity:
    """The OS user the agent runs as, resolved once so a bad name fails at start-up."""
    me = pwd.getpwuid(os.geteuid())
    if run_as is None or run_as == me.pw_name:
        return Identity(me.pw_name, me.pw_uid, me.pw_gid, "")
    try:
        target = pwd.getpwnam(run_as)
    except KeyError:
        raise GhappError(
            f"MC_WORKER_USER: there is no OS user {run_as!r}; create it (README, "
            '"The sandbox user") or unset MC_WORKER_USER for development'
        ) from None
    switch = "setpriv" if os.geteuid() == 0 else "sudo"
    return Identity(run_as, target.pw_uid, target.pw_gid, switch)


class ClaudeWorker:
    """The Worker port over the real CLI; never raises for agent failures."""

    def __init__(
        self,
        claude_bin: str,
        *,
        run_as: str | None,
        model: str | None = None,
        anthropic_env: Mapping[str, str] | None = None,
        prices: PriceTable | None = None,
        book: Book = _no_book,
        ship_log: Ship | None = None,
        sandboxing: SandboxConfig | None = None,
        extra_env: Mapping[str, str] | None = None,
        permission_flags: Sequence[str] = DEFAULT_PERMISSION_FLAGS,
        repo_settings: bool = False,
        interrupt_grace_s: float = 10.0,
        result_grace_s: float = 5.0,
        max_turns: int | None = None,
        stderr_lines: int = 20,
        log_max_bytes: int = DEFAULT_MAX_BYTES,
        instance: str = "ghapp",
    ) -> None:
        """Resolve the binary and the OS user once, so a bad setting fails at start-up."""
        self._bin = os.path.realpath(shutil.which(claude_bin) or claude_bin)
        self._model = model
        self._upstream = Upstream.from_env(anthropic_env or {})
        self._prices = prices or load_prices(None)
        self._book = book
        self._ship_log = ship_log
        self.sandboxing = sandboxing or SandboxConfig()
        self._extra_env = dict(extra_env or {})
        self._permission_flags = list(permission_flags)
        self._repo_settings = repo_settings
        self._interrupt_grace_s = interrupt_grace_s
        self._result_grace_s = result_grace_s
        self._max_turns = max_turns
        self._stderr_lines = stderr_lines
        self._log_max_bytes = log_max_bytes
        self._instance = instance
        self._cli_dirs = [sandbox.cli_root(self._bin)]
        path = [str(self._cli_dirs[0]), os.path.dirname(self._bin), *SAFE_PATH]
        self._path = ":".join(dict.fromkeys(path))
        self.identity = agent_identity(run_as)

    async def reap_leftovers(self) -> int:
        """Kill agents that a crashed ghapp of this instance left running; before requeueing."""
        prefix = f"{RUN_MARKER}={self._instance}:"
        return await asyncio.to_thread(kill_marked, prefix, self.identity.uid, True)

    def _env(self, jail: Jail, token: str, proxies: Mapping[str, str]) -> dict[str, str]:
        """The agent's whole environment, built from nothing: it holds no secret of ghapp's."""
        name, _, value = jail.marker.partition("=")
        env = {
            "PATH": self._path,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "USER": self.identity.name,
            "LOGNAME": self.identity.name,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            name: value,
        }
        if jail.sandboxed:
            env.update(sandbox.inside_env(token))
        else:
            env.update(
                HOME=str(jail.dirs.home),
                TMPDIR=str(jail.dirs.tmp),
                ANTHROPIC_BASE_URL=proxies["model"],
                ANTHROPIC_API_KEY=token,
                HTTP_PROXY=proxies["egress"],
                HTTPS_PROXY=proxies["egress"],
                NO_PROXY="127.0.0.1,localhost",
            )
        env.update(self._extra_env)
        return env

    def _cli(self, request: AgentRequest) -> list[str]:
        """The CLI's command line; the prompt is not on it (stdin), so no text becomes a flag."""
        argv = [self._bin, "-p", "--output-format", "stream-json", "--verbose"]
        argv += ["--max-budget-usd", f"{request.budget_usd:g}", "--no-session-persistence"]
        if not self._repo_settings:  # a repository's .claude/ settings and .mcp.json don't apply
            argv += ["--setting-sources", "user", "--strict-mcp-config"]
        turns = request.max_turns or self._max_turns
        if turns:
            argv += ["--max-turns", str(turns)]
        model = request.model or self._model
        if model:
            argv += ["--model", model]
        return [*argv, *self._permission_flags]

    async def run(self, request: AgentRequest, stop: asyncio.Event) -> AgentOutcome:
        """Run the CLI to its end, a limit or `stop`; nothing it started survives."""
        if stop.is_set():
            return AgentOutcome(False, 0.0, reason="cancelled", stopped=StopReason.CANCELLED)
        marker = f"{RUN_MARKER}={self._instance}:{uuid.uuid4().hex}"
        cgroup = None
        if self.sandboxing.memory_cgroups:
            name = f"task-{request.task_id}-{marker[-8:]}"
            lim = self.sandboxing.limits
            cgroup = AttemptCgroup(name, lim.memory_mb, lim.max_procs)
        try:
            jail = await asyncio.to_thread(
                Jail.open,
                self.identity,
                request.cwd,
                request.home,
                self.sandboxing.bwrap,
                self.sandboxing.limits,
                self._cli_dirs,
                cgroup,
                marker,
            )
        except OSError as exc:
            return AgentOutcome(False, 0.0, reason=f"cannot prepare the sandbox: {exc}")
        try:
            return await self._metered(request, stop, jail)
        finally:
            await jail.close()

    async def _metered(
        self, request: AgentRequest, stop: asyncio.Event, jail: Jail
    ) -> AgentOutcome:
        """Serve the attempt's model and egress proxies around one run of the CLI."""
        account = Account(cap_usd=request.budget_usd)
        label = f"task {request.task_id}"

        async def book(cost: float) -> None:
            await self._book(request.task_id, request.attempt, cost)

        egress = EgressProxy(self.sandboxing.allow, label=label)
        async with aiohttp.ClientSession() as session:
            meter = MeteringProxy(account, self._upstream, self._prices, session, book, label)
            try:
                where = {
                    "model": await meter.start(
                        jail.socket(sandbox.MODEL_SOCKET) if jail.sandboxed else None
                    ),
                    "egress": await egress.start(
                        jail.socket(sandbox.EGRESS_SOCKET) if jail.sandboxed else None
                    ),
                }
                if jail.sandboxed:
                    for name in (sandbox.MODEL_SOCKET, sandbox.EGRESS_SOCKET):
                        os.chmod(jail.socket(name), 0o666)
                outcome = await self._spawn(request, stop, jail, account, where)
            finally:
                await egress.close()
                await meter.close()
        return replace(outcome, cost_usd=account.spent_usd, egress_blocked=egress.summary())

    async def _spawn(
        self,
        request: AgentRequest,
        stop: asyncio.Event,
        jail: Jail,
        account: Account,
        where: Mapping[str, str],
    ) -> AgentOutcome:
        """Start the sandboxed CLI with the prompt on stdin; read its stream until it ends."""
        env = self._env(jail, account.token, where)
        state = StreamState()
        tail: deque[str] = deque(maxlen=self._stderr_lines)
        result_seen = asyncio.Event()
        try:
            logfile = await asyncio.to_thread(TaskLog, request.log_path, self._log_max_bytes)
        except OSError as exc:
            return AgentOutcome(False, 0.0, reason=f"cannot open log: {exc}")
        shipper = None
        if self._ship_log is not None:
            shipper = LogShipper(self._ship_log, request.task_id, request.attempt, STORED_LOG_CHARS)
        with logfile:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *jail.argv(self._cli(request), env),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    cwd=request.cwd,
                    env=env,
                    start_new_session=True,
                )
            except (OSError, ValueError) as exc:
                return AgentOutcome(False, 0.0, reason=f"cannot start: {exc}")
            log.info(
                "task %s: agent pid %s as %s%s",
                request.task_id,
                proc.pid,
                self.identity.name,
                " in a sandbox" if jail.sandboxed else " WITHOUT a sandbox",
            )

            def on_line(raw: bytes) -> None:
                """Log the line as it arrives, then learn from it; never stop reading."""
                logfile.write(raw)
                if len(raw) > MAX_PARSED_LINE:
                    return
                try:
                    readable = state.feed(raw.decode("utf-8", "replace"))
                except StreamError:
                    return
                if shipper is not None:
                    shipper.add(readable)
                if state.result is not None:
                    result_seen.set()

            assert proc.stdout is not None and proc.stderr is not None
            readers = [
                asyncio.create_task(_feed(proc, request.prompt)),
                asyncio.create_task(pump(proc.stdout, on_line)),
                asyncio.create_task(pump(proc.stderr, lambda b: tail.append(_text(b)))),
            ]
            stopped: StopReason | None = None
            try:
                stopped = await self._supervise(proc, request, stop, result_seen, account, jail)
            finally:
                left = await asyncio.to_thread(jail.kill, proc.pid)
                if left:
                    log.warning("killed %d leftover agent processes", left)
                await _collect(proc)
                await asyncio.wait(readers, timeout=PIPE_DRAIN_S)
                for task in readers:
                    task.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
                if shipper is not None:
                    await shipper.close()
        if stopped is None and account.cap_reached.is_set():
            if state.result is None or not state.result.success:
                stopped = StopReason.BUDGET  # the CLI stopped on the proxy's refusal
        outcome = outcome_of(state, proc.returncode, stopped, list(tail), request, account)
        reported = state.result.cost_usd if state.result else None
        log.info(
            "task %s: agent done: %s; metered $%.4f (the CLI said %s)",
            request.task_id,
            outcome.reason or "completed",
            account.spent_usd,
            "nothing" if reported is None else f"${reported:.4f}",
        )
        return outcome

    async def _supervise(
        self,
        proc: asyncio.subprocess.Process,
        request: AgentRequest,
        stop: asyncio.Event,
        result_seen: asyncio.Event,
        account: Account,
        jail: Jail,
    ) -> StopReason | None:
        """Wait for exit; on a limit or stop: SIGINT, then SIGTERM, then kill the sandbox."""
        disk = asyncio.Event()
        watch = asyncio.create_task(self._watch_disk(jail, disk))
        waits = {
            "exit": asyncio.ensure_future(exit_status(proc)),
            "stop": asyncio.ensure_future(stop.wait()),
            "result": asyncio.ensure_future(result_seen.wait()),
            "budget": asyncio.ensure_future(account.cap_reached.wait()),
            "disk": asyncio.ensure_future(disk.wait()),
        }
        exited = waits["exit"]
        try:
            await asyncio.wait(
                set(waits.values()),
                timeout=request.soft_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if exited.done():
                return None
            if waits["result"].done() and not waits["stop"].done():
                if not await exits(exited, self._result_grace_s):
                    log.warning("task %s: agent lingers after its result", request.task_id)
                return None
            if waits["stop"].done():
                stopped = StopReason.CANCELLED
            elif waits["disk"].done():
                stopped = StopReason.DISK
            elif waits["budget"].done():
                stopped = StopReason.BUDGET
            else:
                stopped = StopReason.TIMEOUT
            steps = (
                (signal.SIGINT, self._interrupt_grace_s),
                (signal.SIGTERM, request.kill_after_s),
            )
            for sig, wait_s in steps:
                jail.interrupt(proc.pid, sig)
                if await exits(exited, wait_s):
                    break
            return stopped
        finally:
            watch.cancel()
            for fut in waits.values():
                fut.cancel()

    async def _watch_disk(self, jail: Jail, over: asyncio.Event) -> None:
        """Stop the attempt once checkout, home and tmp together pass MC_AGENT_DISK_MB."""
        limit = self.sandboxing.limits.disk_mb << 20
        while True:
            await asyncio.sleep(self.sandboxing.disk_poll_s)
            used = await asyncio.to_thread(jail.usage_bytes)
            if used > limit:
                log.warning("agent over its disk limit: %d MB", used >> 20)
                over.set()
                return


async def _feed(proc: asyncio.subprocess.Process, prompt: str) -> None:
    """Write the prompt to the CLI's stdin and close it (never argv: no E2BIG, no /proc leak)."""
    assert proc.stdin is not None
    try:
        proc.stdin.write(prompt.encode("utf-8", "replace"))
        await proc.stdin.drain()
        proc.stdin.close()
        await proc.stdin.wait_closed()
    except (ConnectionError, OSError):
        pass


async def _collect(proc: asyncio.subprocess.Process) -> None:
    """Wait for the killed process's exit status."""
    try:
        async with asyncio.timeout(10.0):  # not wait_for: on 3.11 it can swallow a cancel
            await exit_status(proc)
    except TimeoutError:
        log.error("agent pid %s did not exit after SIGKILL", proc.pid)


def _text(raw: bytes) -> str:
    """A stderr line for the failure reason."""
    return clip(raw.decode("utf-8", "replace"), 500)
