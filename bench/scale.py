"""ghapp's resident memory at scale, and GitHub API requests and token mints per task.

Usage: .venv/bin/python bench/scale.py [--queued 10000] [--finished 200,1000] [--api-tasks 20]

Every memory figure is VmRSS from /proc/<pid>/status of a real `python -m ghapp` process
(the production entry point, against fake GitHub with git over smart HTTP):

1. idle: a fresh data dir, nothing queued;
2. queued: --queued tasks inserted into the store before start, with a daily budget too
   small for any of them, so they all stay queued (the runner waits for budget);
3. history: tasks run to completion by a stand-in CLI (a shell script that commits and
   prints a stream-json result); RSS is taken, idle, after each checkpoint of finished
   tasks. Growth per 1,000 finished tasks shows whether memory grows with history.

Then, in-process (bootstrap.build, the same wiring), --api-tasks label webhooks run through
the whole flow with a committing stand-in agent, and FakeGitHub's counters give the API
requests, git HTTP requests and installation-token mints per task. Each issue carries a
short conversation (three comments by two people), so the reading of it is counted too.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ghapp.core.model import NewTask, TaskSource, utcnow  # noqa: E402
from ghapp.core.ports import AgentOutcome, AgentRequest  # noqa: E402
from ghapp.core.transitions import queued  # noqa: E402
from ghapp.store.sqlite import SqliteTaskStore  # noqa: E402
from ghapp.store.sqlite.store import to_db  # noqa: E402
from tests.conftest import payload  # noqa: E402
from tests.fakes.ghapp_process import GhappProcess, free_port  # noqa: E402
from tests.fakes.github import FakeGitHub  # noqa: E402
from tests.fakes.stack import REPO, Stack, close_stack, eventually, ghapp_env, make_stack  # noqa: E402

TERMINAL = ("succeeded", "failed", "cancelled")
# A $1 day: the inserted tasks carry a $5 cap each, so none fits and all stay queued.
WAITING = {"MC_DAILY_BUDGET_USD": "1", "MC_TASK_BUDGET_USD": "1", "MC_TASK_BUDGET_MAX_USD": "1"}

STUB_CLI = """#!/bin/sh
# Stand-in for the Claude CLI: one commit in the task checkout, then a stream-json result.
echo '{"type":"system","subtype":"init","session_id":"bench","model":"stub","cwd":"'"$PWD"'"}'
echo "work $$" > "change-$$.txt"
git add -A >/dev/null 2>&1 && git commit -qm "stand-in work" >/dev/null 2>&1
echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"done",'\
'"total_cost_usd":0.001,"permission_denials":[]}'
"""


def status_kb(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS) and thread count of a process, in kB (threads: count)."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


async def settled_rss(pid: int, settle_s: float = 3.0, samples: int = 5) -> dict[str, int]:
    """RSS once the process has been quiet for a moment: the last of a few samples."""
    await asyncio.sleep(settle_s)
    last: dict[str, int] = {}
    for _ in range(samples):
        last = status_kb(pid)
        await asyncio.sleep(0.4)
    return last


def mb(kb: int) -> str:
    return f"{kb / 1024:7.1f} MB"


def insert_queued(db: Path, first: int, count: int, repo: str = REPO) -> None:
    """Queued first attempts on issues first..first+count-1, in one transaction.

    Uses the store's own values (transitions.queued, to_db), as create_task does.
    """
    now = utcnow()
    values = [
        queued(
            NewTask(
                source=TaskSource.LABEL,
                repo=repo,
                installation_id=1,
                issue_number=n,
                requester="Codertocat",
                instructions="",
                budget_usd=5.0,
                title=f"Scale task {n}",
                body="benchmark",
            ),
            now,
        )
        for n in range(first, first + count)
    ]
    columns = list(values[0])
    params = [tuple(to_db(value) for value in row.values()) for row in values]
    sql = f"INSERT INTO tasks ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    conn = sqlite3.connect(db, timeout=30)
    try:
        with conn:
            conn.executemany(sql, params)
    finally:
        conn.close()


def count(db: Path, where: str = "1=1") -> int:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM tasks WHERE {where}").fetchone()[0])
    finally:
        conn.close()


async def migrate(db: Path) -> None:
    store = SqliteTaskStore(db)
    await store.migrate()
    await store.close()


async def real_process(stack: Stack, **env: str) -> GhappProcess:
    """`python -m ghapp` against the stack's fakes, its output in a log file."""
    port = free_port()
    # A model credential, though the stand-in CLI never asks the API: without one /healthz
    # says no task can run and the process never counts as started.
    full = ghapp_env(stack, port, LOG_LEVEL="warning", ANTHROPIC_API_KEY="sk-ant-unused", **env)
    proc = GhappProcess(full, stack.root, stack.root / f"ghapp-{port}.log")
    t0 = time.perf_counter()
    await proc.start(within=120)
    proc.started_in = time.perf_counter() - t0  # type: ignore[attr-defined]
    return proc


async def phase_idle_and_queued(queued: int) -> dict[str, Any]:
    stack = await make_stack(worker_user=None, claude_bin="/bin/false")
    result: dict[str, Any] = {}
    try:
        db = stack.settings.sqlite_path
        await migrate(db)
        ghapp = await real_process(stack, **WAITING)
        assert ghapp.proc is not None
        result["idle"] = await settled_rss(ghapp.proc.pid)
        await ghapp.stop()

        t0 = time.perf_counter()
        insert_queued(db, 1000, queued)
        result["insert_s"] = time.perf_counter() - t0
        ghapp = await real_process(stack, **WAITING)
        assert ghapp.proc is not None
        result["queued_start_s"] = ghapp.started_in  # type: ignore[attr-defined]
        result["queued"] = await settled_rss(ghapp.proc.pid, settle_s=6.0)
        health = await ghapp.health()
        result["queued_health"] = {k: health.get(k) for k in ("ok", "queued", "running")}
        t0 = time.perf_counter()
        for _ in range(20):
            await ghapp.health()
        result["healthz_ms"] = (time.perf_counter() - t0) / 20 * 1000
        await ghapp.stop()
        result["still_queued"] = count(db, "state = 'queued'")
    finally:
        await close_stack(stack)
    return result


async def phase_history(checkpoints: list[int], concurrency: int) -> dict[str, Any]:
    stack = await make_stack(worker_user=None, claude_bin="claude")
    result: dict[str, Any] = {"points": []}
    try:
        stub = stack.root / "bin" / "claude"
        stub.parent.mkdir()
        stub.write_text(STUB_CLI)
        stub.chmod(0o755)
        for n in range(2, max(checkpoints) + 1):
            stack.github.add_issue(REPO, f"Scale task {n}", "benchmark")
        db = stack.settings.sqlite_path
        await migrate(db)
        ghapp = await real_process(
            stack,
            CLAUDE_BIN=str(stub),
            MC_CONCURRENCY=str(concurrency),
            MC_DAILY_BUDGET_USD="1000",
        )
        assert ghapp.proc is not None
        result["start"] = await settled_rss(ghapp.proc.pid, settle_s=1.0)
        done = 0
        t0 = time.perf_counter()
        requests0, mints0 = stack.github.requests, stack.github.token_mints
        for target in checkpoints:
            insert_queued(db, done + 1, target - done)

            def finished(target: int = target) -> bool:
                return count(db, f"state IN {TERMINAL}") >= target

            await eventually(finished, within=3600)
            done = target
            elapsed = time.perf_counter() - t0
            rss = await settled_rss(ghapp.proc.pid, settle_s=2.0)
            result["points"].append((target, rss, elapsed))
            print(f"  history: {target:5d} finished after {elapsed:6.1f} s, RSS {mb(rss['VmRSS'])}")
        result["succeeded"] = count(db, "state = 'succeeded'")
        result["requests"] = stack.github.requests - requests0
        result["mints"] = stack.github.token_mints - mints0
        result["seconds"] = time.perf_counter() - t0
        await ghapp.stop()
    finally:
        await close_stack(stack)
    return result


class CommittingAgent:
    """Stands in for the CLI in-process: one real commit, at once."""

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, request: AgentRequest, stop: asyncio.Event) -> AgentOutcome:
        self.runs += 1
        (request.cwd / f"change-{self.runs}.txt").write_text("work\n")
        for argv in (["git", "add", "-A"], ["git", "commit", "-qm", "agent work"]):
            proc = await asyncio.create_subprocess_exec(*argv, cwd=request.cwd)
            assert await proc.wait() == 0
        return AgentOutcome(True, 0.01, "made a change")


def endpoint(method: str, path: str) -> str:
    """A request's route shape: numbers and repository names folded."""
    if ".git/" in path:
        return f"{method} <git> {path.split('.git/', 1)[1].split('?')[0]}"
    path = re.sub(r"/repos/[^/]+/[^/]+", "/repos/{repo}", path)
    return f"{method} {re.sub(r'/[0-9]+', '/{n}', path)}"


async def phase_api(tasks: int) -> dict[str, Any]:
    stack = await make_stack(worker_user=None)
    github: FakeGitHub = stack.github
    try:
        for n in range(2, tasks + 1):
            github.add_issue(REPO, f"API task {n}", "benchmark")
        github.set_permission(REPO, "maint", "write")
        for n in range(1, tasks + 1):
            for user, text in (("maint", "use v2"), ("stranger", "+1"), ("maint", "and a test")):
                github.add_comment(REPO, n, text, user)
        agent = CommittingAgent()
        app = await stack.start(worker=agent)
        # Warm-up: the first task clones the mirror and mints the first token.
        await deliver_label(stack, 1)
        await eventually(lambda: pr_count(github) >= 1, within=120)
        await asyncio.sleep(0.5)
        first = Counter(endpoint(r.method, r.path) for r in github.log)
        first_mints = github.token_mints
        log0, requests0, mints0 = len(github.log), github.requests, github.token_mints
        t0 = time.perf_counter()
        for n in range(2, tasks + 1):
            assert await deliver_label(stack, n) == 202
        await eventually(lambda: pr_count(github) >= tasks, within=600)

        async def all_tracked() -> bool:
            done = [await app.store.latest_task_for(REPO, n) for n in range(1, tasks + 1)]
            return all(t is not None and t.state.value == "succeeded" for t in done)

        await eventually(all_tracked, within=120)
        await asyncio.sleep(0.5)
        measured = tasks - 1
        by_route = Counter(endpoint(r.method, r.path) for r in github.log[log0:])
        api = sum(n for route, n in by_route.items() if "<git>" not in route)
        return {
            "tasks": measured,
            "seconds": time.perf_counter() - t0,
            "requests": github.requests - requests0,
            "api": api,
            "git": sum(n for route, n in by_route.items() if "<git>" in route),
            "mints": github.token_mints - mints0,
            "routes": by_route,
            "first_api": sum(n for route, n in first.items() if "<git>" not in route),
            "first_git": sum(n for route, n in first.items() if "<git>" in route),
            "first_mints": first_mints,
        }
    finally:
        await close_stack(stack)


def pr_count(github: FakeGitHub) -> int:
    return len(github.pulls)


async def deliver_label(stack: Stack, number: int) -> int:
    data = payload("issues.labeled", id=1)
    data["label"]["name"] = "mc-auto"
    data["issue"]["number"] = number
    data["issue"]["title"] = f"API task {number}"
    data["issue"]["updated_at"] = utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")  # labelled now
    return await stack.deliver("issues", data)


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--finished", default="200,600,1000", help="checkpoints, comma-separated")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--api-tasks", type=int, default=20)
    parser.add_argument(
        "--max-growth-kb", type=float, default=20.0, help="fail above this RSS per finished task"
    )
    args = parser.parse_args()
    checkpoints = sorted(int(x) for x in args.finished.split(","))
    started = time.perf_counter()

    print(f"1-2. idle, then {args.queued:,} queued tasks (real process)")
    q = await phase_idle_and_queued(args.queued)
    idle, queued = q["idle"]["VmRSS"], q["queued"]["VmRSS"]
    print(f"  idle                 RSS {mb(idle)}  (peak {mb(q['idle']['VmHWM'])}, "
          f"{q['idle']['Threads']} threads)")  # fmt: skip
    print(f"  {args.queued:,} queued        RSS {mb(queued)}  (peak {mb(q['queued']['VmHWM'])}, "
          f"{q['queued']['Threads']} threads); start to healthy {q['queued_start_s']:.1f} s; "
          f"/healthz {q['healthz_ms']:.1f} ms; {q['queued_health']}")  # fmt: skip
    per_task = (queued - idle) / args.queued * 1024
    print(f"  queued - idle        {mb(queued - idle)}  = {per_task:.0f} bytes per queued task; "
          f"{q['still_queued']:,} still queued at stop (budget kept them waiting)")  # fmt: skip

    print(f"3. history: tasks finished by a stand-in CLI, concurrency {args.concurrency}")
    h = await phase_history(checkpoints, args.concurrency)
    points = h["points"]
    print(f"  before any task      RSS {mb(h['start']['VmRSS'])}")
    for target, rss, elapsed in points:
        print(f"  after {target:5d} finished RSS {mb(rss['VmRSS'])}  (peak {mb(rss['VmHWM'])}, "
              f"{rss['Threads']} threads, {elapsed:.0f} s)")  # fmt: skip
    for (a_n, a_rss, _), (b_n, b_rss, _) in itertools.pairwise(points):
        step = (b_rss["VmRSS"] - a_rss["VmRSS"]) / (b_n - a_n) * 1024
        print(f"  {a_n:5d} -> {b_n:5d} finished: {step:6.0f} bytes per finished task")
    (lo_n, lo, _), (hi_n, hi, _) = points[0], points[-1]
    growth = (hi["VmRSS"] - lo["VmRSS"]) / (hi_n - lo_n)
    print(
        f"  {lo_n} -> {hi_n} finished: {mb(hi['VmRSS'] - lo['VmRSS'])} "
        f"= {growth * 1024:.0f} bytes per finished task; ratio {hi['VmRSS'] / lo['VmRSS']:.3f}"
    )
    n = max(checkpoints)
    print(
        f"  {h['succeeded']}/{n} succeeded in {h['seconds']:.0f} s "
        f"({n / h['seconds']:.1f} tasks/s); per task (no webhook, no permission check): "
        f"{h['requests'] / n:.1f} fake-GitHub requests, {h['mints'] / n:.3f} token mints"
    )

    print(f"4. GitHub traffic per task: {args.api_tasks} label webhooks, in-process, warm mirror")
    a = await phase_api(args.api_tasks)
    t = a["tasks"]
    print(f"  per task: {a['api'] / t:.1f} REST API requests, {a['git'] / t:.1f} git HTTP "
          f"requests, {a['mints'] / t:.2f} token mints ({a['mints']} for {t} tasks, "
          f"{a['seconds'] / t:.2f} s/task)")  # fmt: skip
    print(f"  start-up + first task (cold mirror): {a['first_api']} REST API requests, "
          f"{a['first_git']} git HTTP requests, {a['first_mints']} token mints")  # fmt: skip
    for route, hits in sorted(a["routes"].items(), key=lambda kv: -kv[1]):
        print(f"    {hits / t:5.2f}  {route}")
    print(f"total bench time {time.perf_counter() - started:.0f} s")
    if growth > args.max_growth_kb:  # "memory does not grow with history" is broken
        print(f"FAIL: {growth:.1f} KB of RSS per finished task (> {args.max_growth_kb:g} KB)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
