"""ClaudeWorker: runs the Claude Code CLI as the sandbox user, logs its stream, enforces limits."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
import signal
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from ghapp.agent.stream import ResultInfo, StreamError, StreamState, clip
from ghapp.core.model import GhappError
from ghapp.core.ports import AgentOutcome, AgentRequest

log = logging.getLogger(__name__)

SAFE_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
DEFAULT_PERMISSION_FLAGS = ("--permission-mode", "bypassPermissions")
RUN_MARKER = "GHAPP_AGENT_RUN"  # tags every process of a run, even ones that leave its group
READ_CHUNK = 1 << 16
MAX_PARSED_LINE = 16 << 20
PIPE_DRAIN_S = 2.0
SUMMARY_CHARS = 8000


def _dirs_of(binary: str) -> list[str]:
    """Directories the CLI needs on PATH: its own (as linked and resolved) and node's."""
    dirs = [os.path.dirname(binary), os.path.dirname(os.path.realpath(binary))]
    node = shutil.which("node")
    if node:
        dirs.append(os.path.dirname(node))
    return [d for d in dirs if d]


def marked_pids(marker: str, uid: int | None) -> list[int]:
    """Live processes whose environment carries this run's marker (orphans included).

    A marker ending in "=" matches every run: how a restarted ghapp finds agents that
    outlived the previous process.
    """
    needle = marker.encode()
    match = (lambda entry: entry.startswith(needle)) if marker.endswith("=") else needle.__eq__
    found: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if uid is not None and os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/environ", "rb") as fh:
                if any(match(entry) for entry in fh.read().split(b"\0")):
                    found.append(int(name))
        except OSError:
            continue
    return found


def _kill_marked(marker: str, uid: int | None) -> int:
    """SIGKILL every marked process until none is left; returns how many were found."""
    total = 0
    for _ in range(20):
        pids = marked_pids(marker, uid)
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


class ClaudeWorker:
    """The Worker port over the real CLI; never raises for agent failures."""

    def __init__(
        self,
        claude_bin: str,
        *,
        run_as: str | None,
        model: str | None = None,
        anthropic_env: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        permission_flags: Sequence[str] = DEFAULT_PERMISSION_FLAGS,
        interrupt_grace_s: float = 10.0,
        result_grace_s: float = 5.0,
        max_turns: int | None = None,
        stderr_lines: int = 20,
        instance: str = "ghapp",
    ) -> None:
        """Resolve the binary and the OS user once, so a bad setting fails at start-up."""
        self._bin = shutil.which(claude_bin) or claude_bin
        self._model = model
        self._anthropic_env = dict(anthropic_env or {})
        self._extra_env = dict(extra_env or {})
        self._permission_flags = list(permission_flags)
        self._interrupt_grace_s = interrupt_grace_s
        self._result_grace_s = result_grace_s
        self._max_turns = max_turns
        self._stderr_lines = stderr_lines
        self._instance = instance
        path = [*_dirs_of(self._bin), *SAFE_PATH]
        self._path = ":".join(dict.fromkeys(path))
        me = pwd.getpwuid(os.geteuid())
        self._spawn: dict[str, Any] = {}
        self._sudo = False
        self._uid: int | None = os.geteuid()
        self._user = me.pw_name
        if run_as is not None and run_as != me.pw_name:
            try:
                target = pwd.getpwnam(run_as)
            except KeyError:
                raise GhappError(f"MC_WORKER_USER {run_as!r} is not an OS user") from None
            self._user, self._uid = run_as, target.pw_uid
            if os.geteuid() == 0:
                self._spawn = {"user": target.pw_uid, "group": target.pw_gid, "extra_groups": []}
            else:
                self._sudo = True

    async def reap_leftovers(self) -> int:
        """Kill agents that a crashed ghapp of this instance left running; before requeueing."""
        return await asyncio.to_thread(_kill_marked, f"{RUN_MARKER}={self._instance}:", self._uid)

    def _env(self, request: AgentRequest, marker: str) -> dict[str, str]:
        """The agent's whole environment, built from nothing: no ghapp secret can leak in."""
        name, _, value = marker.partition("=")
        env = {
            "PATH": self._path,
            "HOME": str(request.home),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "USER": self._user,
            "LOGNAME": self._user,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            name: value,
        }
        env.update(self._anthropic_env)
        env.update(self._extra_env)
        return env

    def _argv(self, request: AgentRequest, env: Mapping[str, str]) -> list[str]:
        """The command line; the prompt goes last after `--` so no text can become a flag."""
        argv = [self._bin, "-p", "--output-format", "stream-json", "--verbose"]
        argv += ["--max-budget-usd", f"{request.budget_usd:g}", "--no-session-persistence"]
        turns = request.max_turns or self._max_turns
        if turns:
            argv += ["--max-turns", str(turns)]
        if self._model:
            argv += ["--model", self._model]
        argv += [*self._permission_flags, "--", request.prompt]
        if self._sudo:
            keep = ",".join(sorted(env))
            argv = ["sudo", "-n", "-u", self._user, f"--preserve-env={keep}", "--", *argv]
        return argv

    async def run(self, request: AgentRequest, stop: asyncio.Event) -> AgentOutcome:
        """Run the CLI to its end, the soft timeout or `stop`; nothing it started survives."""
        if stop.is_set():
            return AgentOutcome(
                completed=False, cost_usd=0.0, reason="cancelled", stopped="cancelled"
            )
        marker = f"{RUN_MARKER}={self._instance}:{uuid.uuid4().hex}"
        env = self._env(request, marker)
        state = StreamState()
        tail: deque[str] = deque(maxlen=self._stderr_lines)
        result_seen = asyncio.Event()
        try:
            logfile = await asyncio.to_thread(_open_log, request.log_path)
        except OSError as exc:
            return AgentOutcome(completed=False, cost_usd=0.0, reason=f"cannot open log: {exc}")
        with logfile:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self._argv(request, env),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    cwd=request.cwd,
                    env=env,
                    start_new_session=True,
                    **self._spawn,
                )
            except (OSError, ValueError) as exc:
                return AgentOutcome(completed=False, cost_usd=0.0, reason=f"cannot start: {exc}")
            log.info("task %s: agent pid %s as %s", request.task_id, proc.pid, self._user)

            def on_line(raw: bytes) -> None:
                """Log the line as it arrives, then learn from it; never stop reading."""
                try:
                    logfile.write(raw + b"\n")
                    logfile.flush()
                except OSError as exc:  # a full disk must not stall the agent's pipe
                    log.warning("task %s: log write failed: %s", request.task_id, exc)
                if len(raw) > MAX_PARSED_LINE:
                    return
                try:
                    state.feed(raw.decode("utf-8", "replace"))
                except StreamError:
                    return
                if state.result is not None:
                    result_seen.set()

            assert proc.stdout is not None and proc.stderr is not None
            readers = [
                asyncio.create_task(_pump(proc.stdout, on_line)),
                asyncio.create_task(_pump(proc.stderr, lambda b: tail.append(_text(b)))),
            ]
            stopped: str | None = None
            try:
                stopped = await self._supervise(proc, request, stop, result_seen)
            finally:
                await self._reap(proc, marker)  # leftovers die first, so the pipes reach EOF
                await asyncio.wait(readers, timeout=PIPE_DRAIN_S)
                for task in readers:
                    task.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
        outcome = _outcome(state, proc.returncode, stopped, list(tail), request)
        log.info("task %s: agent done: %s", request.task_id, outcome.reason or "completed")
        return outcome

    async def _supervise(
        self,
        proc: asyncio.subprocess.Process,
        request: AgentRequest,
        stop: asyncio.Event,
        result_seen: asyncio.Event,
    ) -> str | None:
        """Wait for exit; on timeout or stop: SIGINT, then SIGTERM, then SIGKILL the group."""
        exited = asyncio.ensure_future(_exit_status(proc))
        stopping = asyncio.ensure_future(stop.wait())
        finished = asyncio.ensure_future(result_seen.wait())
        try:
            await asyncio.wait(
                {exited, stopping, finished},
                timeout=request.soft_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if exited.done():
                return None
            if finished.done() and not stopping.done():
                if not await _exits(exited, self._result_grace_s):
                    log.warning("task %s: agent lingers after its result", request.task_id)
                return None
            stopped = "cancelled" if stop.is_set() else "timeout"
            steps = (
                (signal.SIGINT, self._interrupt_grace_s),
                (signal.SIGTERM, request.kill_after_s),
                (signal.SIGKILL, 5.0),
            )
            for sig, wait_s in steps:
                _signal_group(proc.pid, sig)
                if await _exits(exited, wait_s):
                    break
            return stopped
        finally:
            for fut in (exited, stopping, finished):
                fut.cancel()

    async def _reap(self, proc: asyncio.subprocess.Process, marker: str) -> None:
        """Kill the group and every marked process, then collect the exit status."""
        _signal_group(proc.pid, signal.SIGKILL)
        try:
            left = await asyncio.to_thread(_kill_marked, marker, self._uid)
        except OSError:
            left = 0
        if left:
            log.warning("killed %d leftover agent processes", left)
        try:
            await asyncio.wait_for(_exit_status(proc), timeout=10.0)
        except TimeoutError:
            log.error("agent pid %s did not exit after SIGKILL", proc.pid)


def _open_log(path: Path) -> BinaryIO:
    """Open the task log for appending, readable by ghapp only (never by the agent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "ab")


def _text(raw: bytes) -> str:
    """A stderr line for the failure reason."""
    return clip(raw.decode("utf-8", "replace"), 500)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal the agent's process group, ignoring one that is already gone."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def _exit_status(proc: asyncio.subprocess.Process) -> int:
    """Exit status as soon as the process ends (proc.wait() also waits for its pipes)."""
    # returncode is set by the child watcher at exit; a detached grandchild can hold the
    # pipes open forever, so polling it is the reliable signal.
    while proc.returncode is None:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return proc.returncode


async def _exits(exited: asyncio.Future[int], wait_s: float) -> bool:
    """Whether the process ends within `wait_s` seconds."""
    await asyncio.wait({exited}, timeout=max(wait_s, 0.0))
    return exited.done()


async def _pump(stream: asyncio.StreamReader, handle: Callable[[bytes], None]) -> None:
    """Split a pipe into lines of any length (stream-json lines exceed 64 KiB)."""
    buf = bytearray()
    scan = 0
    while chunk := await stream.read(READ_CHUNK):
        buf += chunk
        start = 0
        while (nl := buf.find(b"\n", scan)) >= 0:
            handle(bytes(buf[start:nl]))
            start = scan = nl + 1
        del buf[:start]
        scan = len(buf)
    if buf:
        handle(bytes(buf))


def _outcome(
    state: StreamState,
    code: int | None,
    stopped: str | None,
    stderr: list[str],
    request: AgentRequest,
) -> AgentOutcome:
    """Turn what the stream said into the port's outcome; the cost is kept in every case."""
    res = state.result
    status = f"exit status {code}"
    halt = f"stopped ({stopped})" if stopped else ""
    if stopped == "timeout":
        halt = f"stopped: soft timeout of {request.soft_timeout_s:g}s"
    if res is None:
        why = [halt or "the agent ended without a result line", status]
        if stderr:
            why.append("stderr: " + " | ".join(stderr))
        return AgentOutcome(
            completed=False,
            cost_usd=state.cost_usd,
            reason="; ".join(why),
            exit_code=code,
            stopped=stopped,
        )
    reason = None if res.success else "; ".join(p for p in (halt, _why(res), status) if p)
    return AgentOutcome(
        completed=res.success,
        cost_usd=state.cost_usd,
        summary=res.text[:SUMMARY_CHARS],
        reason=reason,
        subtype=res.subtype,
        is_error=res.is_error,
        permission_denials=res.permission_denials,
        exit_code=code,
        stopped=stopped,
        num_turns=res.num_turns,
    )


def _why(res: ResultInfo) -> str:
    """Why a result is not a success, in the CLI's own words."""
    if res.subtype != "success":
        detail = "; ".join(res.errors) or res.terminal_reason or ""
        return clip(f"{res.subtype}: {detail}" if detail else res.subtype, 1000)
    if res.is_error:
        return clip(f"agent error: {res.text or 'no detail'}", 1000)
    return f"{res.permission_denials} tool call(s) denied permission"
