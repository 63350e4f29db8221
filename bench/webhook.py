"""Webhook intake throughput: the real ghapp server against a bare aiohttp 200 handler.

Usage: .venv/bin/python bench/webhook.py [--requests 20000] [--concurrency 64] [--client wrk]

Each server runs in its own process (one core), the load generator in another: wrk (Debian's
package, one thread, a Lua script giving every request its own delivery id) when it is
installed, else an aiohttp client in this process, which is slower than the servers and so
flatters the ratio. The real
server is ghapp as `python -m ghapp` would build it (SQLite store, inbox, runner); the
deliveries are `ping` events, which the inbox stores and then ignores. After the run every
delivery answered 202 is looked up in the database.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import shutil
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret"
PATH = "/api/github/webhooks"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_bare(port: int) -> None:
    """The baseline: aiohttp answering 200 and doing nothing else."""
    from aiohttp import web

    async def ok(_: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post(PATH, ok)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def real_env(port: int, data: Path) -> dict[str, str]:
    """Settings for a real ghapp that never reaches GitHub during the run."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MC_", "GITHUB_"))}
    env.update(
        WEBHOOK_SECRET=SECRET,
        APP_ID="1",
        PRIVATE_KEY=pem,
        HOST="127.0.0.1",
        PORT=str(port),
        MC_DATA_DIR=str(data),
        GITHUB_API_URL=f"http://127.0.0.1:{free_port()}",
        LOG_LEVEL="warning",
        PYTHONPATH=str(ROOT),
    )
    return env


async def wait_up(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"server on {port} did not start")


async def load(
    port: int, total: int, concurrency: int, prefix: str
) -> tuple[float, list[float], dict[int, int], list[str]]:
    """Send signed deliveries; returns elapsed, latencies, status counts and accepted ids."""
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    url = f"http://127.0.0.1:{port}{PATH}"
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    accepted: list[str] = []
    counter = iter(range(total))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for i in counter:
                delivery = f"{prefix}-{i}"
                headers = {
                    "Content-Type": "application/json",
                    "X-GitHub-Event": "ping",
                    "X-GitHub-Delivery": delivery,
                    "X-Hub-Signature-256": sig,
                }
                start = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                latencies.append(time.perf_counter() - start)
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if resp.status == 202:
                    accepted.append(delivery)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return elapsed, latencies, statuses, accepted


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


WRK_SCRIPT = """
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
function init(args)
  prefix = args[1] .. "-" .. tid .. "-"; counter = 0
  wrk.method = "POST"; wrk.body = args[3]
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-GitHub-Event"] = "ping"
  wrk.headers["X-Hub-Signature-256"] = args[2]
end
function request()
  counter = counter + 1
  wrk.headers["X-GitHub-Delivery"] = prefix .. counter
  return wrk.format()
end
function done(summary, latency, requests)
  io.write(string.format("RESULT %d %d %.3f %.3f %d\\n", summary.requests,
    summary.duration, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout))
end
"""


async def load_wrk(port: int, seconds: int, concurrency: int, prefix: str) -> dict[str, float]:
    """wrk for `seconds`; returns rps, p50, p99 (ms) and the error count."""
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1})
    sig = "sha256=" + hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(WRK_SCRIPT)
    proc = await asyncio.create_subprocess_exec(
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{seconds}s",
        "-s",
        fh.name,
        f"http://127.0.0.1:{port}{PATH}",
        "--",
        prefix,
        sig,
        body,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    os.unlink(fh.name)
    line = next(x for x in out.decode().splitlines() if x.startswith("RESULT"))
    requests, duration_us, p50, p99, errors = line.split()[1:]
    return {
        "requests": float(requests),
        "rps": float(requests) / (float(duration_us) / 1e6),
        "p50": float(p50),
        "p99": float(p99),
        "errors": float(errors),
    }


async def measure(kind: str, total: int, concurrency: int, data: Path) -> dict[str, object]:
    port = free_port()
    if kind == "bare":
        cmd = [sys.executable, __file__, "--serve-bare", str(port)]
        env = dict(os.environ)
    else:
        cmd = [sys.executable, "-m", "ghapp"]
        env = real_env(port, data)
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, cwd=data if kind == "real" else ROOT)
    try:
        await wait_up(port)
        await load(port, min(500, total), concurrency, f"warm-{kind}")  # warm-up
        if shutil.which("wrk") and CLIENT["name"] == "wrk":
            return {"wrk": await load_wrk(port, 10, concurrency, f"wrk{kind}")}
        elapsed, lat, statuses, accepted = await load(port, total, concurrency, f"run-{kind}")
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
    return {
        "rps": total / elapsed,
        "p50": pct(lat, 0.50),
        "p99": pct(lat, 0.99),
        "mean": statistics.fmean(lat) * 1000,
        "statuses": statuses,
        "accepted": accepted,
    }


CLIENT = {"name": "wrk"}


def report_wrk(
    concurrency: int, bare: dict[str, float], real: dict[str, float], stored: set[str]
) -> None:
    """Print the wrk run; every request wrk counted as answered 2xx must be in the inbox."""
    in_db = sum(1 for d in stored if d.startswith("wrkreal-"))
    print(f"client wrk, 1 thread, {concurrency} connections, 10 s per server")
    for name, r in (("bare aiohttp", bare), ("ghapp", real)):
        print(
            f"{name:>13}: {r['rps']:8.0f} req/s  p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms"
            f"  errors {r['errors']:.0f}"
        )
    ratio = real["rps"] / bare["rps"]
    lost = int(real["requests"] - real["errors"]) - in_db
    print(f"ratio ghapp/bare: {ratio:.2f} (target >= 0.5)")
    print(f"p99 ghapp: {real['p99']:.2f} ms (target < 50 ms)")
    print(f"answered {int(real['requests'])}, stored {in_db}, lost {max(lost, 0)} (target 0)")
    if lost > 0 or ratio < 0.5 or real["p99"] >= 50:
        print("TARGET MISSED")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--client", choices=["wrk", "python"], default="wrk")
    args = parser.parse_args()
    CLIENT["name"] = args.client if shutil.which("wrk") else "python"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        bare = await measure("bare", args.requests, args.concurrency, data)
        real = await measure("real", args.requests, args.concurrency, data)
        db = sqlite3.connect(data / "ghapp.sqlite3")
        stored = {row[0] for row in db.execute("SELECT id FROM deliveries")}
        db.close()
    if "wrk" in real:
        report_wrk(args.concurrency, bare["wrk"], real["wrk"], stored)  # type: ignore[arg-type]
        return
    accepted = real["accepted"]
    assert isinstance(accepted, list)
    lost = [d for d in accepted if d not in stored]
    print(f"requests={args.requests} concurrency={args.concurrency}")
    for name, r in (("bare aiohttp", bare), ("ghapp", real)):
        print(
            f"{name:>13}: {r['rps']:8.0f} req/s  p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms"
            f"  statuses {r['statuses']}"
        )
    ratio = float(real["rps"]) / float(bare["rps"])  # type: ignore[arg-type]
    print(f"ratio ghapp/bare: {ratio:.2f} (target >= 0.5)")
    print(f"p99 ghapp: {real['p99']:.2f} ms (target < 50 ms)")
    print(
        f"accepted {len(accepted)}, stored {len(accepted) - len(lost)}, lost {len(lost)} (target 0)"
    )
    if lost or ratio < 0.5 or float(real["p99"]) >= 50:  # type: ignore[arg-type]
        print("TARGET MISSED")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-bare":
        serve_bare(int(sys.argv[2]))
    else:
        asyncio.run(main())
