"""What the sandbox and the metering proxy add, each against a baseline in the same run.

Usage (as root, with the sandbox user of tests/run.sh): .venv/bin/python bench/sandbox.py

1. Attempt start: ClaudeWorker.run() until the first instruction of a stand-in CLI (a
   shell script that records the time and prints a result), in the bwrap sandbox as the
   sandbox user, against the same worker with MC_SANDBOX=none. Both build the proxies,
   the environment and the task log; the difference is the sandbox (target: < 300 ms).
2. Model requests: a streamed Messages API response from the scripted upstream, through
   the metering proxy against straight to the upstream; added latency per request and
   time to first streamed byte (target: p50 added < 5 ms, first byte unchanged).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ghapp.agent.claude import ClaudeWorker, SandboxConfig  # noqa: E402
from ghapp.agent.metering import Account, MeteringProxy, Upstream  # noqa: E402
from ghapp.agent.prices import load_prices  # noqa: E402
from ghapp.agent.sandbox import find_bwrap  # noqa: E402
from tests.adapters.test_claude_worker import RESULT, make_task, request  # noqa: E402
from tests.fakes.anthropic import ScriptedAnthropic  # noqa: E402
from tests.fakes.sandbox import WORKER_USER  # noqa: E402
from tests.fakes.stack import shared_tmp  # noqa: E402


def p50(values: list[float]) -> float:
    return statistics.median(values) * 1000


async def start_times(root: Path, sandboxed: bool, runs: int) -> list[float]:
    """Seconds from run() to the stand-in CLI's first line, per run."""
    bindir = root / ("bin-sb" if sandboxed else "bin-none")
    bindir.mkdir(mode=0o755)
    stub = bindir / "claude"
    stub.write_text(f"#!/bin/sh\ndate +%s.%N > \"$HOME/started\"\necho '{RESULT}'\n")
    stub.chmod(0o755)
    bwrap = find_bwrap() if sandboxed else None
    worker = ClaudeWorker(
        str(stub), run_as=WORKER_USER, sandboxing=SandboxConfig(bwrap), instance="bench"
    )
    took = []
    for i in range(runs):
        task = make_task(root, f"{'sb' if sandboxed else 'none'}-{i}", WORKER_USER)
        begin = time.time()
        out = await worker.run(request(task, "x"), asyncio.Event())
        assert out.completed, out
        took.append(float((task.home / "started").read_text()) - begin)
    return took


async def request_times(url: str, token: str, runs: int) -> tuple[list[float], list[float]]:
    """Whole-response and first-content-byte times of streamed requests, per run."""
    msg = {"role": "user", "content": [{"type": "text", "text": "[scenario:commit]"}]}
    body = {"model": "claude-opus-4-8", "messages": [msg], "tools": [{}], "stream": True}
    totals, firsts = [], []
    async with aiohttp.ClientSession() as http:
        for _ in range(runs):
            begin = time.perf_counter()
            async with http.post(
                f"{url}/v1/messages?beta=true", json=body, headers={"x-api-key": token}
            ) as resp:
                first = None
                async for chunk in resp.content.iter_any():
                    if first is None and b"content_block" in chunk:
                        first = time.perf_counter() - begin
                totals.append(time.perf_counter() - begin)
                firsts.append(first or totals[-1])
    return totals, firsts


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=15)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    root = shared_tmp("ghapp-bench-sandbox-")
    bare = await start_times(root, False, args.starts)
    boxed = await start_times(root, True, args.starts)
    added = p50(boxed) - p50(bare)
    print(
        f"attempt start, p50 of {args.starts}: no sandbox {p50(bare):.0f} ms, "
        f"sandbox {p50(boxed):.0f} ms; the sandbox adds {added:.0f} ms (target < 300)"
    )

    api = ScriptedAnthropic()
    upstream_url = await api.start()
    account = Account(cap_usd=1e9)

    async def book(cost: float) -> None:
        pass

    async with aiohttp.ClientSession() as session:
        upstream = Upstream(upstream_url, {"x-api-key": "sk-ant-bench"})
        proxy = MeteringProxy(account, upstream, load_prices(None), session, book)
        proxy_url = await proxy.start()
        await request_times(upstream_url, "x", 20)  # warm both paths up
        await request_times(proxy_url, account.token, 20)
        direct, direct_first = await request_times(upstream_url, "x", args.requests)
        metered, metered_first = await request_times(proxy_url, account.token, args.requests)
        await proxy.close()
    await api.close()
    extra = p50(metered) - p50(direct)
    print(
        f"model request, p50 of {args.requests}: direct {p50(direct):.2f} ms, "
        f"through the proxy {p50(metered):.2f} ms; added {extra:.2f} ms (target < 5)"
    )
    print(
        f"first streamed byte, p50: direct {p50(direct_first):.2f} ms, "
        f"through the proxy {p50(metered_first):.2f} ms "
        f"(ratio {p50(metered_first) / p50(direct_first):.2f})"
    )
    print(f"metered {account.responses} responses, ${account.spent_usd:.4f}")
    if added >= 300 or extra >= 5:
        print("TARGET MISSED")


if __name__ == "__main__":
    asyncio.run(main())
