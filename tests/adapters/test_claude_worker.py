"""ClaudeWorker against the real CLI in its sandbox as the sandbox user, and stub binaries."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ghapp.agent.claude import RUN_MARKER, Book, ClaudeWorker, SandboxConfig
from ghapp.agent.procs import marked_pids
from ghapp.agent.sandbox import INSIDE_HOME, find_bwrap
from ghapp.core.ports import AgentOutcome, AgentRequest, StopReason
from tests.fakes.anthropic import ScriptedAnthropic
from tests.fakes.sandbox import require_claude, require_sandbox_user

API_KEY = "sk-ant-scripted-test-key"
SECRET = "ghapp-planted-secret-4b1d9e"
TOKEN = "ghs_FAKEinstallationTOKEN0123456789"


@dataclass(frozen=True)
class TaskDir:
    """A task laid out like ghapp does: checkout and HOME owned by the agent, log by us."""

    cwd: Path
    home: Path
    log: Path


def _run(*argv: str, cwd: Path | None = None) -> str:
    """A synchronous setup command (fixtures only)."""
    return subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True).stdout


def make_task(root: Path, name: str, owner: str | None) -> TaskDir:
    """Checkout (git repo with identity, one commit), HOME and log path for one task."""
    task = root / name
    task.mkdir(mode=0o711)
    cwd, home = task / "checkout", task / "home"
    cwd.mkdir()
    home.mkdir()
    _run("git", "init", "-q", "-b", "main", cwd=cwd)
    _run("git", "config", "user.name", "ghapp agent", cwd=cwd)
    _run("git", "config", "user.email", "agent@ghapp.invalid", cwd=cwd)
    (cwd / "README.md").write_text("# repo\n")
    _run("git", "add", "-A", cwd=cwd)
    _run("git", "commit", "-q", "-m", "init", cwd=cwd)
    if owner is not None:
        pw = pwd.getpwnam(owner)
        for path in (cwd, home):
            for dirpath, _, files in os.walk(path):
                for p in [dirpath, *(os.path.join(dirpath, f) for f in files)]:
                    os.chown(p, pw.pw_uid, pw.pw_gid)
    for path in (cwd, home):
        path.chmod(0o700)
    logs = root / "logs"
    logs.mkdir(mode=0o700, exist_ok=True)
    return TaskDir(cwd, home, logs / f"{name}.log")


@pytest.fixture
def root() -> Iterator[Path]:
    """A root-owned base directory the sandbox user may traverse but not list."""
    base = Path(tempfile.mkdtemp(prefix="ghapp-worker-"))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


Api = tuple[ScriptedAnthropic, str]


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    """The scripted Messages API and its base URL."""
    server = ScriptedAnthropic(slow_turn_s=3.0)
    url = await server.start()
    yield server, url
    await server.close()


def request(
    task: TaskDir, prompt: str, soft_timeout_s: float = 30.0, kill_after_s: float = 2.0
) -> AgentRequest:
    """An AgentRequest with test-sized limits and a $1 cap."""
    return AgentRequest(
        task_id=1,
        prompt=prompt,
        cwd=task.cwd,
        home=task.home,
        budget_usd=1.0,
        log_path=task.log,
        soft_timeout_s=soft_timeout_s,
        kill_after_s=kill_after_s,
    )


def sandboxing() -> SandboxConfig:
    """bwrap as production runs it (the tests need it installed: tests/run.sh does)."""
    bwrap = find_bwrap()
    assert bwrap is not None, "bubblewrap is not installed"
    return SandboxConfig(bwrap)


def real_worker(url: str, book: Book | None = None) -> ClaudeWorker:
    """The worker over the pinned CLI, sandboxed, as the sandbox user."""
    booking: dict[str, Any] = {"book": book} if book else {}
    return ClaudeWorker(
        str(require_claude()),
        run_as=require_sandbox_user(),
        anthropic_env={"ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": url},
        **booking,
        sandboxing=sandboxing(),
        extra_env={"CLAUDE_CODE_MAX_RETRIES": "0"},
        interrupt_grace_s=3.0,
        result_grace_s=2.0,
        instance=INSTANCE,
    )


async def git(cwd: Path, *args: str) -> str:
    """git output in an agent-owned checkout, read as root."""
    proc = await asyncio.create_subprocess_exec(
        "git", "-c", "safe.directory=*", "-C", str(cwd), *args,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return out.decode()


INSTANCE = f"worker-tests-{os.getpid()}"  # this run only: others may run beside it


def live_agent_pids(home: Path | None = None) -> list[int]:
    """Live processes (not zombies) of this module's agents: they must all be gone."""
    pids = []
    for pid in marked_pids(f"{RUN_MARKER}={INSTANCE}:", None, prefix=True):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            pids.append(pid)
    return pids


async def go(
    worker: ClaudeWorker, req: AgentRequest, stop_after: float | None = None
) -> tuple[AgentOutcome, float]:
    """Run once; returns the outcome and the wall time."""
    stop = asyncio.Event()
    if stop_after is not None:
        asyncio.get_running_loop().call_later(stop_after, stop.set)
    start = time.monotonic()
    outcome = await worker.run(req, stop)
    return outcome, time.monotonic() - start


# -- the real CLI as the sandbox user ----------------------------------------------------


async def test_commit_makes_a_real_commit_and_logs_every_line(root: Path, api: Api) -> None:
    _, url = api
    task = make_task(root, "t1", require_sandbox_user())
    out, took = await go(real_worker(url), request(task, "[scenario:commit] Fix issue #1"))
    assert out.completed and out.reason is None, out
    assert (out.subtype, out.exit_code, out.num_turns, out.stopped) == ("success", 0, 3, None)
    assert out.cost_usd > 0 and out.summary.startswith("Done: added hello.txt")
    assert (
        await git(task.cwd, "log", "-1", "--format=%s|%an")
    ).strip() == "Add hello.txt|ghapp agent"
    lines = task.log.read_text().splitlines()
    kinds = [json.loads(line)["type"] for line in lines]
    assert kinds[0] == "system" and kinds[-1] == "result" and kinds.count("assistant") == 4
    assert task.log.stat().st_mode & 0o777 == 0o600
    assert live_agent_pids(task.home) == []
    print(f"commit run: {took:.2f}s")


async def test_prompt_that_looks_like_a_flag_stays_a_prompt(root: Path, api: Api) -> None:
    task = make_task(root, "t1", require_sandbox_user())
    out, _ = await go(real_worker(api[1]), request(task, "--help [scenario:commit]"))
    assert out.completed, out
    assert "Add hello.txt" in await git(task.cwd, "log", "--oneline")


async def test_claims_success_without_changes(root: Path, api: Api) -> None:
    task = make_task(root, "t1", require_sandbox_user())
    head = await git(task.cwd, "rev-parse", "HEAD")
    out, _ = await go(real_worker(api[1]), request(task, "[scenario:no_changes] x"))
    assert out.completed and "committed" in out.summary  # the runner checks git, not words
    assert await git(task.cwd, "rev-parse", "HEAD") == head


async def test_writes_but_never_commits(root: Path, api: Api) -> None:
    task = make_task(root, "t1", require_sandbox_user())
    head = await git(task.cwd, "rev-parse", "HEAD")
    out, _ = await go(real_worker(api[1]), request(task, "[scenario:write_no_commit] x"))
    assert out.completed
    assert await git(task.cwd, "rev-parse", "HEAD") == head
    assert "?? hello.txt" in await git(task.cwd, "status", "--porcelain")


async def test_stalled_stream_hits_the_soft_timeout(root: Path, api: Api) -> None:
    task = make_task(root, "t1", require_sandbox_user())
    req = request(task, "[scenario:write_then_hang] x", soft_timeout_s=3.0)
    out, took = await go(real_worker(api[1]), req)
    assert (out.completed, out.stopped) == (False, "timeout"), out
    # 2.1.197 races on SIGINT: about half the time it exits 0 without its result line.
    assert out.subtype in ("error_during_execution", None)
    assert out.cost_usd > 0  # the SIGINT result's cost, else the estimate of the paid turn
    assert "soft timeout" in (out.reason or "")
    assert 3.0 <= took < 15.0  # 3 s timeout, 3 s for SIGINT, 2 s for SIGTERM, margin for load
    assert live_agent_pids(task.home) == []


async def test_stop_event_cancels_a_slow_run(root: Path, api: Api) -> None:
    task = make_task(root, "t1", require_sandbox_user())
    out, took = await go(real_worker(api[1]), request(task, "[scenario:slow] x"), stop_after=1.5)
    assert (out.completed, out.stopped) == (False, "cancelled"), out
    assert took < 12.0
    assert live_agent_pids(task.home) == []


async def test_api_error_fails_fast(root: Path, api: Api) -> None:
    task = make_task(root, "t1", require_sandbox_user())
    out, took = await go(real_worker(api[1]), request(task, "[scenario:api_error] x"))
    assert not out.completed and out.is_error and out.exit_code == 1
    assert "500" in (out.reason or "") and "agent error" in (out.reason or "")
    assert took < 20.0


async def test_over_budget_is_stopped_within_one_response(root: Path, api: Api) -> None:
    server, url = api
    task = make_task(root, "t1", require_sandbox_user())
    booked: list[float] = []

    async def book(task_id: int, attempt: int, cost: float) -> None:
        booked.append(cost)

    worker = real_worker(url, book)
    out, _ = await go(worker, request(task, "[scenario:over_budget] x"))
    assert (out.completed, out.stopped) == (False, StopReason.BUDGET), out
    # 2M input tokens at $5/M: the first response alone passes the $1 cap; nothing after it
    assert out.cost_usd == pytest.approx(10.001) and booked == [pytest.approx(10.001)]
    assert len([r for r in server.requests if r.get("tools")]) == 1
    assert "budget reached" in (out.reason or "")
    assert live_agent_pids() == []


async def test_a_forged_result_line_books_what_the_proxy_metered(root: Path, api: Api) -> None:
    _, url = api
    task = make_task(root, "t1", require_sandbox_user())
    booked: list[float] = []

    async def book(task_id: int, attempt: int, cost: float) -> None:
        booked.append(cost)

    worker = real_worker(url, book)
    out, _ = await go(worker, request(task, "[scenario:forge_result] x"))
    assert "forged: all done" in task.log.read_text()  # the line did reach ghapp's pipe
    # one response was served (the Bash call that forged the line): that is the cost
    assert out.cost_usd == pytest.approx(0.0015) and booked == [pytest.approx(0.0015)]
    assert live_agent_pids() == []


async def test_malicious_agent_sees_no_secrets(
    root: Path, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, url = api
    monkeypatch.setenv("GHAPP_TEST_SECRET", SECRET)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    user = require_sandbox_user()
    task = make_task(root, "t1", user)
    other = make_task(root, "t2", None)  # a finished task's checkout, handed back to ghapp
    (other.cwd / "private.txt").write_text("OTHER-TASK-DATA\n")
    key, db = root / "private-key.pem", root / "ghapp.sqlite3"
    key.write_text(f"-----BEGIN RSA PRIVATE KEY-----\n{SECRET}-key\n")
    db.write_text(f"SQLite format 3 {TOKEN}\n")
    for p in (key, db):
        p.chmod(0o600)
    task.log.parent.mkdir(exist_ok=True)
    reads = [key, db, task.log, f"/proc/{os.getpid()}/environ", other.cwd / "private.txt"]
    prompt = " ".join(
        ["[scenario:malicious]", *(f"[read:{p}]" for p in reads), f"[url:{url}/repos/o/r]"]
    )
    out, _ = await go(real_worker(url), request(task, prompt))
    assert out.completed, out
    results = server.tool_results()
    env_out, id_out = results[0], results[1]
    assert (
        f"HOME={INSIDE_HOME}" in env_out and "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1" in env_out
    )
    assert "GHAPP_TEST_SECRET" not in env_out and "GITHUB_TOKEN" not in env_out
    assert id_out.startswith(f"uid={pwd.getpwnam(user).pw_uid}(") and "groups=" in id_out
    assert len(id_out.split("groups=")[1].split(",")) == 1  # no supplementary groups
    for text in results[3 : 3 + len(reads)]:  # not even there: outside its sandbox
        assert "No such file" in text or "Permission denied" in text, text
    seen = server.seen()
    for planted in (SECRET, TOKEN, "OTHER-TASK-DATA", "BEGIN RSA PRIVATE KEY", API_KEY):
        assert planted not in seen  # the operator's model key included
    assert len(results) == 3 + len(reads) + 2  # git push and curl ran too
    assert "Couldn't connect" in results[-1]  # the host's loopback is not the sandbox's
    assert live_agent_pids() == []


# -- stub binaries: escalation, lingering, long lines, environment ---------------------------

INIT = '{"type":"system","subtype":"init","session_id":"s"}'
RESULT = '{"type":"result","subtype":"success","is_error":false,"total_cost_usd":0.5,"result":"ok","permission_denials":[]}'  # noqa: E501


def stub(tmp_path: Path, body: str) -> ClaudeWorker:
    """A worker whose 'CLI' is a shell script, run as the current user."""
    script = tmp_path / "bin" / "claude"
    script.parent.mkdir(exist_ok=True)
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return ClaudeWorker(str(script), run_as=None, anthropic_env={"ANTHROPIC_API_KEY": API_KEY},
                        sandboxing=sandboxing(), interrupt_grace_s=0.5, result_grace_s=0.5,
                        instance=INSTANCE)  # fmt: skip


def stub_task(tmp_path: Path) -> TaskDir:
    """Plain directories for stub runs."""
    (tmp_path / "co").mkdir()
    (tmp_path / "home").mkdir()
    return TaskDir(tmp_path / "co", tmp_path / "home", tmp_path / "logs" / "t.log")


@pytest.mark.parametrize(
    ("ignored", "status", "least_s"), [("INT", 143, 1.0), ("INT TERM", -9, 1.5)]
)
async def test_ignored_signals_escalate_and_kill_everything(
    tmp_path: Path, ignored: str, status: int, least_s: float
) -> None:
    body = f"trap '' {ignored}\necho '{INIT}'\nsetsid sleep 300 &\nwhile :; do sleep 1; done\n"
    task = stub_task(tmp_path)
    req = request(task, "x", soft_timeout_s=0.5, kill_after_s=0.5)
    out, took = await go(stub(tmp_path, body), req)
    assert (out.completed, out.stopped, out.exit_code) == (False, "timeout", status)
    assert f"exit status {status}" in (out.reason or "")
    assert least_s <= took < least_s + 6.0
    assert live_agent_pids(task.home) == []  # the setsid child left the group, still killed


async def test_lingering_after_result_is_killed(tmp_path: Path) -> None:
    task = stub_task(tmp_path)
    out, took = await go(stub(tmp_path, f"echo '{RESULT}'\nexec sleep 300\n"), request(task, "x"))
    # the result line claims $0.50; only what the proxy metered is the cost: nothing here
    assert out.completed and out.cost_usd == 0.0 and out.stopped is None
    assert took < 8.0


async def test_long_lines_and_missing_result(tmp_path: Path) -> None:
    text = "y" * 300_000
    usage = {"input_tokens": 1000, "output_tokens": 0}
    message = {"id": "m", "content": [{"type": "text", "text": text}], "usage": usage}
    line = json.dumps({"type": "assistant", "message": message})
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "line.json").write_text(line + "\n")  # the CLI's folder is visible
    body = f"cat {tmp_path}/bin/line.json\nfor i in $(seq 30); do echo err $i >&2; done\nexit 3\n"
    task = stub_task(tmp_path)
    out, _ = await go(stub(tmp_path, body), request(task, "x"))
    assert not out.completed and out.exit_code == 3
    assert "exit status 3" in (out.reason or "") and "err 30" in (out.reason or "")
    assert "err 10 " not in (out.reason or "") and "err 11" in (out.reason or "")
    assert out.cost_usd == 0.0  # usage the agent prints is not spend; the proxy saw none
    assert task.log.read_text() == line + "\n"


async def test_environment_is_built_from_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GHAPP_TEST_SECRET", SECRET)
    task = stub_task(tmp_path)
    body = f"env > \"$HOME/env.txt\"\necho '{RESULT}'\n"
    out, _ = await go(stub(tmp_path, body), request(task, "x"))
    assert out.completed
    env = dict(x.split("=", 1) for x in (task.home / "env.txt").read_text().splitlines())
    assert SECRET not in str(env)
    assert env["HOME"] == INSIDE_HOME and env["TMPDIR"] == "/tmp"
    # the agent's model credential is its attempt's token for ghapp's proxy, never the key
    assert env["ANTHROPIC_API_KEY"].startswith("mc-") and API_KEY not in str(env)
    assert env["ANTHROPIC_BASE_URL"].startswith("http://127.0.0.1:")
    assert env["HTTPS_PROXY"] == env["HTTP_PROXY"] == "http://127.0.0.1:3128"
    assert str(tmp_path / "bin") in env["PATH"].split(":")
    assert set(env) - {"PWD", "SHLVL", "_", "OLDPWD"} == {
        "PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "USER", "LOGNAME", "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
        "NO_PROXY", "no_proxy", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
        "DISABLE_AUTOUPDATER", "GHAPP_AGENT_RUN",
    }  # fmt: skip


async def test_fake_api_serves_fallbacks(api: Api) -> None:
    server, url = api
    prompt = {"role": "user", "content": [{"type": "text", "text": "[scenario:commit][cwd:/w]"}]}
    body = {"model": "m", "messages": [prompt], "tools": [{"name": "Write"}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/v1/messages?beta=true", json=body) as resp:
            message = await resp.json()
        async with http.post(f"{url}/v1/messages?beta=true", json={**body, "stream": True}) as r:
            events = (await r.text()).split("\n\n")
        async with http.post(f"{url}/v1/messages/count_tokens", json=body) as resp:
            assert (await resp.json())["input_tokens"] > 0
    assert message["stop_reason"] == "tool_use"
    assert message["content"][1]["input"]["file_path"] == "/w/hello.txt"
    assert events[0].startswith("event: message_start\ndata: {")
    assert events[-2] == 'event: message_stop\ndata: {"type": "message_stop"}'
    assert len(server.requests) == 2


async def test_reap_leftovers_kills_what_a_dead_ghapp_of_this_instance_left(
    tmp_path: Path,
) -> None:
    """The start-up reaper matches every run of its instance (it once matched none)."""
    env = {"PATH": "/usr/bin:/bin", RUN_MARKER: f"{INSTANCE}:deadbeef"}
    other = {"PATH": "/usr/bin:/bin", RUN_MARKER: "another-instance:deadbeef"}
    spawn = asyncio.create_subprocess_exec
    mine = await spawn("sleep", "300", env=env, start_new_session=True)
    theirs = await spawn("sleep", "300", env=other, start_new_session=True)
    try:
        worker = stub(tmp_path, "exit 0\n")
        assert await worker.reap_leftovers() >= 1
        assert await asyncio.wait_for(mine.wait(), 5) == -9
        assert theirs.returncode is None  # another ghapp's agent is not ours to kill
    finally:
        for proc in (mine, theirs):
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def test_the_prompt_goes_in_on_stdin_never_argv(tmp_path: Path) -> None:
    marker = "PROMPT-MARKER-X123"
    prompt = marker + " " + "🙂" * 60_000  # 240 KB: past one argv string's 128 KiB limit
    body = (
        'cat > "$HOME/stdin"\n'
        # the pattern does not match its own grep's command line
        'cat /proc/[0-9]*/cmdline | tr "\\0" "\\n" '
        '| grep -c "PROMPT-MARKER-[X]123" > "$HOME/argv"\n'
        f"echo '{RESULT}'\n"
    )
    task = stub_task(tmp_path)
    out, _ = await go(stub(tmp_path, body), request(task, prompt))
    assert out.completed, out
    assert (task.home / "stdin").read_text() == prompt
    assert (task.home / "argv").read_text().strip() == "0"
