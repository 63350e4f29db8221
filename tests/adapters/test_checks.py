"""Setup and verify commands in the agent's real sandbox (bubblewrap, the sandbox user)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ghapp.agent.checks import SandboxChecks
from ghapp.agent.claude import SandboxConfig, agent_identity
from ghapp.agent.egress import AllowList
from ghapp.agent.sandbox import AgentLimits, find_bwrap
from ghapp.core.ports import Workspace
from tests.adapters.test_claude_worker import make_task
from tests.fakes.sandbox import host_page, require_sandbox_user
from tests.fakes.stack import shared_tmp


@pytest.fixture
def root() -> Iterator[Path]:
    base = shared_tmp("ghapp-checks-")
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def host_server() -> AsyncIterator[int]:
    """A page on the host's loopback: only a proxied setup command may fetch it."""
    async with host_page("HOST-PAGE") as port:
        yield port


def checks(allow: str = "") -> SandboxChecks:
    bwrap = find_bwrap()
    assert bwrap is not None, "bubblewrap is not installed"
    config = SandboxConfig(bwrap, AgentLimits(), AllowList.parse(allow))
    return SandboxChecks(agent_identity(require_sandbox_user()), config, instance="checks-tests")


def workspace(root: Path) -> Workspace:
    task = make_task(root, f"t{time.monotonic_ns()}", require_sandbox_user())
    return Workspace(task.cwd, task.home, "mc/1-x", "base", "start")


async def test_each_command_reports_pass_fail_duration_and_the_tail(root: Path) -> None:
    ws = workspace(root)
    results = await checks().run(
        ["test -f README.md", "seq 1 80; id -un; exit 3", "true"],
        ws,
        network=False,
        timeout_s=30,
        stop=asyncio.Event(),
        keep_going=True,
    )
    ok, bad, last = results
    assert ok.passed and last.passed and not bad.passed and not bad.timed_out
    lines = bad.tail.splitlines()
    assert len(lines) == 50 and lines[-2] == require_sandbox_user()  # as the agent's user
    assert lines[-1] == "[ghapp: exit status 3]" and lines[0] == "33"
    assert all(r.duration_s > 0 for r in results)


async def test_setup_stops_at_the_first_failure(root: Path) -> None:
    ws = workspace(root)
    results = await checks().run(
        ["false", "touch ran"],
        ws,
        network=True,
        timeout_s=30,
        stop=asyncio.Event(),
        keep_going=False,
    )
    assert [r.passed for r in results] == [False] and not (ws.path / "ran").exists()


async def test_a_command_over_its_time_is_killed_with_everything_it_started(root: Path) -> None:
    ws = workspace(root)
    started = time.monotonic()
    [result] = await checks().run(
        ["(sleep 2718.28 &) ; sleep 2718.28"],
        ws,
        network=False,
        timeout_s=1,
        stop=asyncio.Event(),
        keep_going=True,
    )
    assert result.timed_out and not result.passed and time.monotonic() - started < 15
    assert "stopped after 1 s" in result.tail
    await asyncio.sleep(0.5)
    assert marked("2718.28") == []


def marked(needle: str) -> list[str]:
    """Live processes whose command line holds the needle."""
    alive = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if needle.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                alive.append(pid)
        except OSError:
            continue
    return alive


async def test_verify_has_no_network_setup_has_the_agents(root: Path, host_server: int) -> None:
    ws = workspace(root)
    proxy = "${http_proxy:-http://127.0.0.1:3128}"
    fetch = f"curl -sS --max-time 5 --noproxy '' --proxy {proxy} http://127.0.0.1:{host_server}/"
    runner = checks(allow=f"127.0.0.1:{host_server}")
    [offline] = await runner.run(
        [fetch], ws, network=False, timeout_s=30, stop=asyncio.Event(), keep_going=True
    )
    assert not offline.passed and "HOST-PAGE" not in offline.tail
    direct = f"curl -sS --max-time 5 http://127.0.0.1:{host_server}/"
    [online, straight] = await runner.run(
        [fetch, direct], ws, network=True, timeout_s=30, stop=asyncio.Event(), keep_going=True
    )
    assert online.passed, online.tail
    assert not straight.passed  # only through the egress proxy, never around it


async def test_stop_ends_a_running_command(root: Path) -> None:
    ws = workspace(root)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.5, stop.set)
    started = time.monotonic()
    results = await checks().run(
        ["sleep 60", "true"], ws, network=False, timeout_s=120, stop=stop, keep_going=True
    )
    assert len(results) == 1 and not results[0].passed and time.monotonic() - started < 15


async def test_the_environment_holds_nothing_of_ghapps(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    ws = workspace(root)
    [result] = await checks().run(
        ["env; exit 1"], ws, network=False, timeout_s=30, stop=asyncio.Event(), keep_going=True
    )
    assert "sk-ant-secret" not in result.tail and "ANTHROPIC" not in result.tail
    assert "CI=true" in result.tail and f"USER={pwd.getpwnam(require_sandbox_user()).pw_name}" in (
        result.tail
    )
