"""Pushes GitHub refuses (a protected branch, a file over the size limit): the task fails
with GitHub's reason, and nothing is half-done. Workflow files ghapp refuses itself
(tests/e2e/test_verify_gate.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from ghapp.core.model import TaskState
from ghapp.core.ports import AgentOutcome, AgentRequest
from tests.e2e.test_triggers import labeled, tasks
from tests.fakes.stack import REPO, Stack, close_stack, eventually, make_stack


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    s = await make_stack(worker_user=None)
    yield s
    await close_stack(s)


@dataclass
class FileWorker:
    """An in-process agent that commits one file of the given path and size."""

    path: str
    size: int = 20
    requests: list[AgentRequest] = field(default_factory=list)

    async def run(self, request: AgentRequest, stop: asyncio.Event) -> AgentOutcome:
        self.requests.append(request)
        target = request.cwd / self.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"x" * self.size)
        for argv in (["git", "add", "-A"], ["git", "commit", "-qm", f"add {self.path}"]):
            proc = await asyncio.create_subprocess_exec(*argv, cwd=request.cwd)
            assert await proc.wait() == 0
        return AgentOutcome(True, 0.01, "done")


async def _run_task(stack: Stack, worker: FileWorker) -> str:
    """Trigger one task and wait for its end; returns its failure reason."""
    app = await stack.start(worker=worker)
    assert await stack.deliver("issues", labeled()) == 202

    async def ended() -> bool:
        return any(t.state.terminal for t in await tasks(stack))

    await eventually(ended, within=30)
    [task] = await tasks(stack)
    assert task.state is TaskState.FAILED, task
    assert stack.github.pulls == {}  # no PR
    rc, _ = await stack.github._git(
        REPO, "rev-parse", "--verify", "-q", f"refs/heads/{task.branch}"
    )
    assert rc != 0, "the refused branch must not exist on GitHub"
    assert app.runner is not None
    await app.runner.drain()
    [tracking] = [c for c in stack.comments(1) if "MissionControl task #" in c]
    reason = task.failure_reason or ""
    assert reason.startswith("the push failed: ") and "internal error" not in tracking
    return reason


async def test_a_protected_branch_refuses_the_push(stack: Stack) -> None:
    stack.github.push_rules.protected = {"mc/*"}
    reason = await _run_task(stack, FileWorker("notes.txt"))
    assert "GH006: Protected branch update failed" in reason


async def test_a_file_over_the_size_limit_refuses_the_whole_push(stack: Stack) -> None:
    stack.github.push_rules.max_file_bytes = 1024 * 1024
    reason = await _run_task(stack, FileWorker("big.bin", size=2 * 1024 * 1024))
    assert "GH001: Large files detected" in reason and "big.bin" in reason
