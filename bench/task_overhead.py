"""ghapp's own overhead per task on a ~50 MB repository, cold mirror against warm mirror.

Usage: .venv/bin/python bench/task_overhead.py [--size-mb 50]

Measures, with the agent's own time excluded (the agent is a stand-in that makes one real
commit at once): webhook -> agent spawn (intake, permission check, claim, mirror fetch,
private checkout), and agent exit -> PR open (rescue, verify, push over smart HTTP, PR).
The first task fetches the repository cold; the second runs on the warm mirror.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ghapp.core.ports import AgentOutcome, AgentRequest  # noqa: E402
from tests.conftest import payload  # noqa: E402
from tests.fakes.git_http import make_bare_repo  # noqa: E402
from tests.fakes.stack import REPO, close_stack, eventually, make_stack  # noqa: E402


class CommittingAgent:
    """Stands in for the CLI: one real commit, timestamps around it."""

    def __init__(self) -> None:
        self.spawned: list[float] = []
        self.exited: list[float] = []

    async def run(self, request: AgentRequest, stop: asyncio.Event) -> AgentOutcome:
        self.spawned.append(time.perf_counter())
        (request.cwd / f"change-{len(self.spawned)}.txt").write_text("work\n")
        for argv in (["git", "add", "-A"], ["git", "commit", "-qm", "agent work"]):
            proc = await asyncio.create_subprocess_exec(*argv, cwd=request.cwd)
            assert await proc.wait() == 0
        self.exited.append(time.perf_counter())
        return AgentOutcome(True, 0.01, "made a change")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=float, default=50)
    args = parser.parse_args()
    stack = await make_stack(worker_user=None)
    try:
        git_root = stack.root / "git"
        big = "Codertocat/Big"
        make_bare_repo(git_root, big, {"README.md": "big\n"}, size_mb=args.size_mb)
        stack.github.add_repo(big, installation_id=1)
        stack.github.set_permission(big, "Codertocat", "admin")
        agent = CommittingAgent()
        app = await stack.start(worker=agent)
        rows = []
        for n in (1, 2):
            number = stack.github.add_issue(big, f"Task {n}", "benchmark")
            data = payload("issues.labeled", id=1)
            data["label"]["name"] = "mc-auto"
            data["repository"]["full_name"] = big
            data["issue"]["number"] = number
            t0 = time.perf_counter()
            assert await stack.deliver("issues", data) == 202
            await eventually(lambda n=n: len(agent.exited) >= n, within=600)

            async def has_pr(number: int = number) -> bool:
                task = await app.store.latest_task_for(big, number)
                return task is not None and task.pr_url is not None

            await eventually(has_pr, within=600)
            t3 = time.perf_counter()
            rows.append((agent.spawned[-1] - t0, t3 - agent.exited[-1]))
        cold, warm = rows
        print(f"repository ~{args.size_mb:g} MB ({REPO} stack, {big})")
        print(f"cold: webhook->spawn {cold[0]:6.2f} s   exit->PR {cold[1]:6.2f} s")
        print(f"warm: webhook->spawn {warm[0]:6.2f} s   exit->PR {warm[1]:6.2f} s")
        ratio = cold[0] / warm[0]
        print(f"warm start {warm[0]:.2f} s (target < 2 s); cold/warm {ratio:.1f}x (target >= 5x)")
        if warm[0] >= 2 or ratio < 5:
            print("TARGET MISSED")
    finally:
        await close_stack(stack)


if __name__ == "__main__":
    asyncio.run(main())
