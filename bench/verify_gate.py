"""The verify gate's overhead on a warm task: `verify: ['true']` against no settings file.

Usage: .venv/bin/python bench/verify_gate.py [--rounds 5]

Two repositories on one fake GitHub, both with warm mirrors: one without
`.github/ghapp.yml` (today's behaviour) and one whose file runs `true` as its only verify
command, in the agent's sandbox with the network off. The agent is a stand-in that makes
one real commit at once, so the times are ghapp's own: webhook -> PR opened. Rounds
alternate between the two so machine noise falls on both alike; medians are compared.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.task_overhead import CommittingAgent  # noqa: E402
from ghapp.process import Ghapp  # noqa: E402
from tests.conftest import payload  # noqa: E402
from tests.fakes.git_http import make_bare_repo  # noqa: E402
from tests.fakes.stack import Stack, close_stack, eventually, make_stack  # noqa: E402

PLAIN, GATED = "Codertocat/Plain", "Codertocat/Gated"
GATE = "version: 1\nverify:\n  - 'true'\non_red: draft\n"


async def one_task(stack: Stack, app: Ghapp, repo: str, n: int) -> float:
    """Seconds from the label's delivery to the PR being recorded."""
    number = stack.github.add_issue(repo, f"Task {n}", "benchmark")
    data = payload("issues.labeled", id=1)
    data["label"]["name"] = "mc-auto"
    data["repository"]["full_name"] = repo
    data["issue"]["number"] = number
    started = time.perf_counter()
    assert await stack.deliver("issues", data) == 202

    async def has_pr() -> bool:
        task = await app.store.latest_task_for(repo, number)
        return task is not None and (task.pr_url is not None or task.state.terminal)

    await eventually(has_pr, within=300)
    task = await app.store.latest_task_for(repo, number)
    assert task is not None and task.pr_url, task and task.failure_reason
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    stack = await make_stack(worker_user=None)
    try:
        git_root = stack.root / "git"
        make_bare_repo(git_root, PLAIN, {"README.md": "plain\n"})
        make_bare_repo(git_root, GATED, {"README.md": "gated\n", ".github/ghapp.yml": GATE})
        for repo in (PLAIN, GATED):
            stack.github.add_repo(repo, installation_id=1)
            stack.github.set_permission(repo, "Codertocat", "admin")
        app = await stack.start(worker=CommittingAgent())
        times: dict[str, list[float]] = {PLAIN: [], GATED: []}
        for repo in (PLAIN, GATED):  # warm both mirrors first
            await one_task(stack, app, repo, 0)
        for n in range(1, args.rounds + 1):
            for repo in (PLAIN, GATED) if n % 2 else (GATED, PLAIN):
                times[repo].append(await one_task(stack, app, repo, n))
        plain, gated = statistics.median(times[PLAIN]), statistics.median(times[GATED])
        gated_pr = next(p for p in stack.github.pulls.values() if p.repo == GATED)
        assert "✅ `true`: passed" in gated_pr.body, gated_pr.body
        print(f"warm task, webhook -> PR, median of {args.rounds}:")
        print(f"  no settings file        {plain:6.2f} s")
        print(f"  verify: ['true']        {gated:6.2f} s")
        print(f"  gate overhead {gated - plain:+.2f} s; gated/plain {gated / plain:.2f}x")
    finally:
        await close_stack(stack)


if __name__ == "__main__":
    asyncio.run(main())
