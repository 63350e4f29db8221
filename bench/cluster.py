"""Scale-out numbers: task starts per second and claim latency with 1, 2 and 4 worker
processes on one store, and webhook intake on PostgreSQL against SQLite, in one run.

Usage: .venv/bin/python bench/cluster.py [--tasks 600] [--concurrency 4] [--seconds 8]

Claims: the queue is filled with --tasks tasks, then N worker processes (each a real
TaskRunner on the store, --concurrency at once, with in-memory GitHub and git fakes and a
stand-in agent that returns at once) drain it. "Started/s" counts agent starts over the
drain; claim latency is the time of one successful claim_next call. The whole attempt
(claim, bookkeeping, lease renewals, finish) hits the store, as in production; only the
agent's minutes are gone, which is what makes the store the limit here.

Intake: `python -m ghapp --role web` on each store, loaded with signed `ping` deliveries
by wrk (when installed) or an aiohttp client; every 202 is checked in the database.

PostgreSQL is a throwaway cluster started here with fsync on (tests/fakes/postgres.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ghapp.core.model import NewTask, TaskSource, TaskState, utcnow  # noqa: E402
from ghapp.core.ports import AgentOutcome, AgentRequest, TaskStore  # noqa: E402
from ghapp.store.postgres import PostgresTaskStore  # noqa: E402
from ghapp.store.sqlite import SqliteTaskStore  # noqa: E402
from tests.fakes.postgres import PgServer  # noqa: E402

PATH = "/api/github/webhooks"


def open_store(url: str) -> TaskStore:
    if url.startswith("sqlite:///"):
        return SqliteTaskStore(url.removeprefix("sqlite:///"))
    return PostgresTaskStore(url)


# -- one worker process -----------------------------------------------------------------------
class InstantAgent:
    """Stands in for the CLI: one commit, no time."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    async def run(self, request: AgentRequest, stop: asyncio.Event) -> AgentOutcome:
        self.starts.append(time.time())
        return AgentOutcome(True, 0.001, "done")


async def worker_main(url: str, node: str, concurrency: int, log_dir: str) -> None:
    """Drain the queue with one TaskRunner; print start times and claim latencies as JSON."""
    from ghapp.bootstrap import SystemClock
    from ghapp.core.report import NullMessenger, Reporter
    from ghapp.core.runner import RunnerConfig, TaskRunner
    from tests.fakes.memory import MemoryForge, MemoryVcs

    store = open_store(url)
    await store.migrate()
    latencies: list[float] = []
    claim = store.claim_next

    async def timed_claim(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = await claim(*args, **kwargs)
        if result.task is not None:
            latencies.append(time.perf_counter() - start)
        return result

    store.claim_next = timed_claim  # type: ignore[method-assign]
    agent = InstantAgent()
    vcs = MemoryVcs(Path(log_dir) / node)
    vcs.commits = ["c1 work"]

    async def keep_commits(*_: Any) -> bool:  # every checkout "has" the agent's commit
        vcs.commits = ["c1 work"]
        return False

    vcs.rescue = keep_commits  # type: ignore[method-assign]
    forge = MemoryForge()
    runner = TaskRunner(
        store,
        forge,
        vcs,
        agent,
        Reporter(forge, NullMessenger(), "/mc"),
        SystemClock(),
        RunnerConfig(
            log_dir=Path(log_dir) / node,
            concurrency=concurrency,
            daily_budget_usd=1e9,
            node=node,
            poll_s=0.05,
            progress_s=3600,
        ),
    )
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the parent says go
    cpu = time.process_time()
    await runner.start()
    idle = 0
    while idle < 20:  # stop after ~1 s with nothing queued and nothing running here
        await asyncio.sleep(0.05)
        busy = runner.running_ids or await store.count(TaskState.QUEUED)
        idle = 0 if busy else idle + 1
    await runner.stop()
    cpu = time.process_time() - cpu
    await store.close()
    print(json.dumps({"starts": agent.starts, "claims": latencies, "cpu": cpu}), flush=True)


# -- the parent -------------------------------------------------------------------------------
async def fill(url: str, tasks: int) -> None:
    store = open_store(url)
    await store.migrate()
    for i in range(tasks):
        new = NewTask(TaskSource.LABEL, f"bench/r{i % 50}", 1, i, "bench", "go", 1.0)
        await store.create_task(new, utcnow())
    await store.close()


async def claims_run(
    url: str, workers: int, tasks: int, concurrency: int, tmp: Path
) -> dict[str, float]:
    """Fill the queue, let `workers` processes drain it; rates and latency percentiles."""
    await fill(url, tasks)
    procs = []
    for n in range(workers):
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--worker",
                url,
                f"w{n}",
                str(concurrency),
                str(tmp),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        )
    for proc in procs:
        assert proc.stdout is not None
        assert (await proc.stdout.readline()).strip() == b"ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
    starts: list[float] = []
    claims: list[float] = []
    cpu = 0.0
    for proc in procs:
        out, _ = await proc.communicate()
        data = json.loads(out.decode().strip().splitlines()[-1])
        starts += data["starts"]
        claims += data["claims"]
        cpu += data["cpu"]
    check = open_store(url)
    await check.migrate()
    done = await check.count(TaskState.SUCCEEDED)
    await check.close()
    starts.sort()
    span = starts[-1] - starts[0]
    return {
        "started": len(starts),
        "succeeded": done,
        "rate": (len(starts) - 1) / span if span > 0 else float("inf"),
        "p50": statistics.median(claims) * 1000,
        "p99": sorted(claims)[int(0.99 * (len(claims) - 1))] * 1000,
        "cores": cpu / span if span > 0 else 0.0,  # of the workers alone, during the drain
    }


def env_for(port: int, data: Path, url: str) -> dict[str, str]:
    """bench/webhook.py's web process, on the store at `url`."""
    sys.path.insert(0, str(ROOT / "bench"))
    import webhook

    env = webhook.real_env(port, data)
    env.update(DATABASE_URL=url, LOG_LEVEL="error")
    return env


async def intake_run(url: str, data: Path, seconds: int, concurrency: int) -> dict[str, float]:
    """Requests per second and latency of `python -m ghapp --role web` on this store."""
    sys.path.insert(0, str(ROOT / "bench"))
    import webhook  # bench/webhook.py: the same load generators

    port = webhook.free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ghapp", "--role", "web", env=env_for(port, data, url), cwd=data
    )
    try:
        await webhook.wait_up(port)
        await webhook.load(port, 300, concurrency, "warm")
        if shutil.which("wrk"):
            result = await webhook.load_wrk(port, seconds, concurrency, "wrk")
        else:
            total = seconds * 500
            elapsed, lat, _, _ = await webhook.load(port, total, concurrency, "run")
            result = {
                "requests": float(total),
                "rps": total / elapsed,
                "p50": webhook.pct(lat, 0.5),
                "p99": webhook.pct(lat, 0.99),
                "errors": 0.0,
            }
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
    return result


def stored(url: str, pg: PgServer) -> int:
    """Deliveries in the store, read directly."""
    if url.startswith("sqlite:///"):
        db = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return int(db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0])
        finally:
            db.close()
    return int(pg.psql("SELECT COUNT(*) FROM deliveries", url.rsplit("/", 1)[1]))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    pg = PgServer.start(durable=True)
    tmp = Path(tempfile.mkdtemp(prefix="ghapp-bench-"))
    try:
        print(
            f"{args.tasks} tasks, runner concurrency {args.concurrency} per process, stand-in agent"
        )
        print(
            f"{'store':>10} {'workers':>7} {'started/s':>10} {'claim p50':>10} {'claim p99':>10}"
            f" {'worker CPU':>11}"
        )
        for backend in ("postgres", "sqlite"):
            for workers in (1, 2, 4):
                name = f"claims_{backend}_{workers}"
                if backend == "postgres":
                    url = pg.dsn(pg.create_database(name))
                else:
                    url = f"sqlite:///{tmp / name}.sqlite3"
                r = await claims_run(url, workers, args.tasks, args.concurrency, tmp)
                assert r["started"] == r["succeeded"] == args.tasks, r
                print(
                    f"{backend:>10} {workers:>7} {r['rate']:>10.0f} "
                    f"{r['p50']:>8.1f}ms {r['p99']:>8.1f}ms {r['cores']:>7.2f} cores"
                )
        print(f"\nwebhook intake, {args.connections} connections, {args.seconds} s each")
        for backend in ("postgres", "sqlite"):
            data = tmp / f"intake-{backend}"
            data.mkdir()
            if backend == "postgres":
                url = pg.dsn(pg.create_database("intake"))
            else:
                url = f"sqlite:///{data / 'ghapp.sqlite3'}"
            r = await intake_run(url, data, args.seconds, args.connections)
            in_db = stored(url, pg) - 300  # minus the warm-up
            lost = int(r["requests"] - r["errors"]) - in_db
            print(
                f"{backend:>10}: {r['rps']:8.0f} req/s  p50 {r['p50']:6.2f} ms  "
                f"p99 {r['p99']:6.2f} ms  answered {int(r['requests'])}, lost {max(lost, 0)}"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        pg.stop()


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--worker":
        asyncio.run(worker_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]))
    else:
        asyncio.run(main())
