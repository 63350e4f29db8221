"""The per-attempt sandbox against a hostile agent: a shell script in the CLI's place, run by
ClaudeWorker in bubblewrap as the sandbox user. Each escape must fail and leave nothing."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ghapp.agent.claude import ClaudeWorker, SandboxConfig
from ghapp.agent.egress import AllowList
from ghapp.agent.sandbox import AgentLimits, find_bwrap
from ghapp.core.ports import AgentOutcome, StopReason
from tests.adapters.test_claude_worker import RESULT, go, make_task, request
from tests.fakes.sandbox import host_page, require_sandbox_user
from tests.fakes.stack import shared_tmp

SLEEPER = "31415.9"  # a sleep no other process on the machine has on its command line


@pytest.fixture
def root() -> Iterator[Path]:
    base = shared_tmp("ghapp-sandbox-")
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def host_server() -> AsyncIterator[int]:
    """A server on the host's loopback that no agent may reach (but the proxy may, if told)."""
    async with host_page("HOST-SECRET-PAGE") as port:
        yield port


def hostile(bindir: Path, script: str, allow: str | None = "", **limits: int) -> ClaudeWorker:
    """A worker whose 'CLI' is this shell script, sandboxed as the sandbox user."""
    bindir.mkdir(mode=0o755, exist_ok=True)
    stub = bindir / "claude"
    stub.write_text("#!/bin/sh\n" + script)
    stub.chmod(0o755)
    bwrap = find_bwrap()
    assert bwrap is not None, "bubblewrap is not installed"
    config = SandboxConfig(bwrap, AgentLimits(**limits), AllowList.parse(allow), disk_poll_s=0.2)
    return ClaudeWorker(
        str(stub),
        run_as=require_sandbox_user(),
        sandboxing=config,
        interrupt_grace_s=0.5,
        result_grace_s=0.5,
        instance=f"sandbox-tests-{os.getpid()}",
    )


async def run(root: Path, script: str, **kw: object) -> tuple[AgentOutcome, str]:
    """Run the script once; returns the outcome and what it wrote to $HOME/out."""
    task = make_task(root, f"t{time.monotonic_ns()}", require_sandbox_user())
    worker = hostile(root / "bin", script + f"\necho '{RESULT}'\n", **kw)  # type: ignore[arg-type]
    out, _ = await go(worker, request(task, "x", soft_timeout_s=20, kill_after_s=1))
    path = task.home / "out"
    return out, path.read_text(errors="replace") if path.exists() else ""


def sleepers() -> list[int]:
    """Live processes running our marked sleep, wherever they went."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{name}/cmdline").read_bytes()
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if SLEEPER.encode() in cmd and state != "Z":
            found.append(int(name))
    return found


async def test_no_network_but_the_proxies(root: Path, host_server: int) -> None:
    probe = (
        "import socket\n"
        "for host, port in (('127.0.0.1', PORT), ('10.0.0.1', 80), ('169.254.169.254', 80)):\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=2); print('REACHED', host)\n"
        "    except OSError as e: print('blocked', host, e.errno)\n"
    ).replace("PORT", str(host_server))
    script = (
        f'cat > /tmp/p.py <<"EOF"\n{probe}EOF\n'
        'python3 /tmp/p.py > "$HOME/out" 2>&1\n'
        f"curl -sS -m 5 --noproxy '' -x http://127.0.0.1:3128 "
        f'http://127.0.0.1:{host_server}/ >> "$HOME/out" 2>&1\n'
        f'curl -sS -m 5 -p -x http://127.0.0.1:3128 https://evil.example/ >> "$HOME/out" 2>&1\n'
        f'curl -sS -m 5 -p -x http://127.0.0.1:3128 https://evil.example/ >> "$HOME/out" 2>&1\n'
        'cat /etc/resolv.conf >> "$HOME/out" 2>&1; getent hosts pypi.org >> "$HOME/out" 2>&1\n'
    )
    out, seen = await run(root, script)
    assert out.completed, out
    assert "REACHED" not in seen and "HOST-SECRET-PAGE" not in seen, seen
    assert seen.count("blocked") == 3
    assert "not in MC_AGENT_ALLOW_HOSTS" in seen  # the proxy's refusal, named
    assert out.egress_blocked == "blocked: evil.example ×2, 127.0.0.1 ×1"
    assert "pypi.org" not in seen.split("resolv.conf")[-1].split("\n", 1)[-1]  # no DNS


async def test_a_host_named_by_the_operator_is_reachable_through_the_proxy(
    root: Path, host_server: int
) -> None:
    script = (
        f"curl -sS -m 5 --noproxy '' -x http://127.0.0.1:3128 "
        f'http://127.0.0.1:{host_server}/plain > "$HOME/out" 2>&1\n'
    )
    out, seen = await run(root, script, allow=f"127.0.0.1:{host_server}")
    assert "HOST-SECRET-PAGE" in seen and out.egress_blocked == "", seen


async def test_nothing_of_the_host_is_visible(root: Path) -> None:
    planted = root / "ghapp.sqlite3"
    planted.write_text("PLANTED-DB-CONTENT")
    planted.chmod(0o644)  # readable by anyone: only the mount namespace hides it
    script = (
        f'{{ cat {planted}; ls {root}; ls /proc | grep -c "^[0-9]"; '
        f"cat /proc/{os.getpid()}/environ; ls /run /var /root /home; "
        'echo pid1=$(cat /proc/1/comm); touch /usr/x; unshare -U true; } > "$HOME/out" 2>&1\n'
    )
    out, seen = await run(root, script)
    assert out.completed, out
    assert "PLANTED-DB-CONTENT" not in seen and "ghapp.sqlite3: No such file" in seen
    assert "environ: No such file" in seen  # ghapp's own process does not exist in there
    lines = seen.splitlines()
    counts = [int(line) for line in lines if line.isdigit()]
    assert counts and counts[0] < 15, seen  # its own processes only, not the host's
    assert "pid1=bwrap" in seen
    assert "Read-only file system" in seen
    assert "unshare" in seen and ("No space left" in seen or "Operation not permitted" in seen)


async def test_nothing_outlives_the_attempt(root: Path) -> None:
    script = (
        # a new session, an empty environment, double-forked: out of every group and marker
        f"setsid env -i /bin/sh -c 'sleep {SLEEPER} & sleep {SLEEPER} &' &\n"
        f"nohup sleep {SLEEPER} >/dev/null 2>&1 &\n"
        "sleep 0.5\n"
    )
    out, _ = await run(root, script)
    assert out.completed
    await _none_sleeping()


async def test_process_limit_holds(root: Path) -> None:
    forker = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    while n < 60:\n"
        "        if os.fork() == 0:\n"
        f"            time.sleep(30)  # {SLEEPER}\n"
        "            os._exit(0)\n"
        "        n += 1\n"
        "except OSError as exc:\n"
        "    print('fork refused:', exc.strerror)\n"
        "print(f'started={n}', flush=True)\n"
    )
    script = (
        f'cat > /tmp/f.py <<"EOF"\n{forker}EOF\npython3 /tmp/f.py {SLEEPER} > "$HOME/out" 2>&1\n'
    )
    _, seen = await run(root, script, max_procs=20)
    assert "fork refused: Resource temporarily unavailable" in seen, seen
    assert int(seen.rsplit("started=", 1)[1].split()[0]) < 20
    await _none_sleeping()


async def _none_sleeping() -> None:
    deadline = time.monotonic() + 5
    while sleepers() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    assert sleepers() == []


async def test_disk_limit_stops_the_attempt(root: Path) -> None:
    script = (
        "dd if=/dev/zero of=big1 bs=1M count=15 2>/dev/null\n"
        "dd if=/dev/zero of=/tmp/big2 bs=1M count=15 2>/dev/null\n"
        "sleep 30\n"
    )
    start = time.monotonic()
    out, _ = await run(root, script, disk_mb=20)
    assert out.stopped is StopReason.DISK, out
    assert "disk limit" in (out.reason or "")
    assert time.monotonic() - start < 10


async def test_file_size_limit_holds(root: Path) -> None:
    script = 'dd if=/dev/zero of=big bs=1M count=50 > "$HOME/out" 2>&1; ls -l big >> "$HOME/out"\n'
    _, seen = await run(root, script, max_file_mb=8)
    assert str(8 << 20) in seen, seen  # cut at the limit (SIGXFSZ), never past it
    assert str(50 << 20) not in seen


async def test_concurrent_attempts_cannot_see_each_other(root: Path) -> None:
    first = make_task(root, "a", require_sandbox_user())
    (first.cwd / "notes.txt").write_text("TASK-A-PRIVATE")
    os.chown(first.cwd / "notes.txt", *_ids())
    spy = (
        "sleep 1\n"
        f'{{ cat {first.cwd}/notes.txt; ls /proc/*/cwd -l; cat /proc/*/cmdline | tr "\\0" " "; '
        'ls /workspace; } > "$HOME/out" 2>&1\n'
    )
    second = make_task(root, "b", require_sandbox_user())
    busy = hostile(root / "a-bin", "sleep 3\n" + f"echo '{RESULT}'\n")
    spy_worker = hostile(root / "b-bin", spy + f"echo '{RESULT}'\n")
    prompt_a = "TASK-A-PROMPT-TEXT"
    results = await asyncio.gather(
        go(busy, request(first, prompt_a)), go(spy_worker, request(second, "x"))
    )
    assert all(r[0].completed for r in results), results
    seen = (second.home / "out").read_text(errors="replace")
    assert "TASK-A-PRIVATE" not in seen and prompt_a not in seen, seen
    assert "notes.txt: No such file" in seen
    assert "README.md" in seen  # its own checkout is there


def _ids() -> tuple[int, int]:
    pw = pwd.getpwnam(require_sandbox_user())
    return pw.pw_uid, pw.pw_gid
