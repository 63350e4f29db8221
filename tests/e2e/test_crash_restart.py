"""kill -9 of a real ghapp process mid-run: after a restart the task ends with one PR."""

from __future__ import annotations

import asyncio
import pwd
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from ghapp.agent.claude import RUN_MARKER, marked_pids
from ghapp.core.model import TaskState
from ghapp.store.sqlite import SqliteTaskStore
from tests.conftest import payload
from tests.fakes.anthropic import ScriptedAnthropic
from tests.fakes.sandbox import require_claude, require_sandbox_user
from tests.fakes.stack import REPO, Stack, close_stack, eventually, ghapp_env, make_stack


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


class GhappProcess:
    """`python -m ghapp` as a child process that a test can SIGKILL."""

    def __init__(self, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.env, self.cwd, self.log = env, cwd, log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        out = self.log.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ghapp",
            env=self.env,
            cwd=self.cwd,
            stdout=out,
            stderr=out,
            stdin=asyncio.subprocess.DEVNULL,
        )
        out.close()
        url = f"http://127.0.0.1:{self.env['PORT']}/healthz"

        async def healthy() -> bool:
            try:
                async with aiohttp.ClientSession() as s, s.get(url) as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(healthy, within=30)

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@pytest.fixture
async def setup() -> AsyncIterator[tuple[Stack, ScriptedAnthropic, GhappProcess]]:
    user, claude = require_sandbox_user(), require_claude()
    api = ScriptedAnthropic(slow_turn_s=2.0)
    base = await api.start()
    stack = await make_stack(
        worker_user=user,
        claude_bin=str(claude),
        anthropic_env={"ANTHROPIC_BASE_URL": base, "ANTHROPIC_API_KEY": "sk-ant-test-key"},
    )
    port = free_port()
    stack.external_url = f"http://127.0.0.1:{port}/api/github/webhooks"
    proc = GhappProcess(ghapp_env(stack, port), stack.root, stack.root / "ghapp.log")
    yield stack, api, proc
    await proc.stop()
    if stack.session is not None:
        await stack.session.close()
        stack.session = None
    await api.close()
    await close_stack(stack)


async def test_sigkill_during_the_agent_run_then_restart(
    setup: tuple[Stack, ScriptedAnthropic, GhappProcess],
) -> None:
    stack, api, ghapp = setup
    worker_uid = pwd.getpwnam(stack.settings.worker_user or "").pw_uid
    await ghapp.start()
    data = payload("issues.labeled", id=1)
    data["label"]["name"] = "mc-auto"
    data["issue"]["body"] = "Fix the typo. [scenario:slow]"
    assert await stack.deliver("issues", data, "crash-delivery") == 202
    # Wait until the agent is in its first turn, then kill ghapp without warning.
    await eventually(lambda: any(r.get("tools") for r in api.requests), within=30)
    await ghapp.kill()
    orphans = marked_pids(f"{RUN_MARKER}=", worker_uid)
    assert orphans, "the agent outlives a SIGKILLed ghapp (its own session)"

    await ghapp.start()
    store = SqliteTaskStore(stack.settings.sqlite_path)
    await store.migrate()
    try:

        async def done() -> bool:
            task = await store.latest_task_for(REPO, 1)
            return task is not None and task.state.terminal

        await eventually(done, within=120)
        task = await store.latest_task_for(REPO, 1)
        assert task is not None
        assert task.state is TaskState.SUCCEEDED, task.failure_reason
        assert task.attempt == 2 and task.delivery_id == "crash-delivery"
        prs = [p for p in stack.github.pulls.values() if p.head == task.branch]
        assert len(prs) == 1 and "Closes #1" in prs[0].body
        assert await store.count(TaskState.RUNNING) == 0
        assert await store.pending_deliveries() == []
        assert len(await store.list_tasks()) == 1
        # The agent the dead process left behind was killed by the new one.
        assert not [pid for pid in orphans if alive(pid)]
    finally:
        await store.close()
