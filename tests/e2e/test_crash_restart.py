"""kill -9 of a real ghapp process mid-run: its sandboxed agent dies with it; after a restart
the task ends with one PR."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ghapp.agent.claude import RUN_MARKER
from ghapp.agent.factory import agent_instance
from ghapp.agent.procs import marked_pids
from ghapp.core.model import TaskState
from ghapp.store.sqlite import SqliteTaskStore
from tests.conftest import payload
from tests.fakes.anthropic import ScriptedAnthropic
from tests.fakes.ghapp_process import GhappProcess, alive, free_port, writer_pids
from tests.fakes.sandbox import require_claude, require_sandbox_user
from tests.fakes.stack import REPO, Stack, close_stack, eventually, ghapp_env, make_stack


@pytest.fixture
async def setup() -> AsyncIterator[tuple[Stack, ScriptedAnthropic, GhappProcess]]:
    user, claude = require_sandbox_user(), require_claude()
    api = ScriptedAnthropic(slow_turn_s=2.0)
    base = await api.start()
    stack = await make_stack(
        worker_user=user,
        claude_bin=str(claude),
        anthropic_env={"ANTHROPIC_BASE_URL": base, "ANTHROPIC_API_KEY": "sk-ant-test-key"},
    )
    port = free_port()
    stack.external_url = f"http://127.0.0.1:{port}/api/github/webhooks"
    proc = GhappProcess(ghapp_env(stack, port), stack.root, stack.root / "ghapp.log")
    yield stack, api, proc
    await proc.stop()
    if stack.session is not None:
        await stack.session.close()
        stack.session = None
    await api.close()
    await close_stack(stack)


async def test_sigkill_during_the_agent_run_then_restart(
    setup: tuple[Stack, ScriptedAnthropic, GhappProcess],
) -> None:
    stack, api, ghapp = setup
    await ghapp.start()
    data = payload("issues.labeled", id=1)
    data["label"]["name"] = "mc-auto"
    # The first run stalls forever: an agent that would outlive ghapp if anything let it.
    data["issue"]["body"] = "Fix the typo. [scenario:hang_once]"
    assert await stack.deliver("issues", data, "crash-delivery") == 202
    await eventually(lambda: any(r.get("tools") for r in api.requests), within=30)
    marker = f"{RUN_MARKER}={agent_instance(stack.settings.data_dir)}:"
    agents = marked_pids(marker, None, prefix=True)
    assert agents, "the agent should be running"
    assert ghapp.proc is not None
    writers = writer_pids(ghapp.proc.pid)
    assert len(writers) == 1, "deliveries are written by one child process"
    await ghapp.kill()  # the main process only: its sandbox must take every agent with it
    await eventually(lambda: not [p for p in agents + writers if alive(p)], within=5)
    assert not [p for p in marked_pids(marker, None, prefix=True) if alive(p)]

    await ghapp.start()
    store = SqliteTaskStore(stack.settings.sqlite_path)
    await store.migrate()
    try:

        async def done() -> bool:
            task = await store.latest_task_for(REPO, 1)
            return task is not None and task.state.terminal

        await eventually(done, within=120)
        task = await store.latest_task_for(REPO, 1)
        assert task is not None
        assert task.state is TaskState.SUCCEEDED, task.failure_reason
        assert task.attempt == 2 and task.delivery_id == "crash-delivery"
        prs = [p for p in stack.github.pulls.values() if p.head == task.branch]
        assert len(prs) == 1 and "Closes #1" in prs[0].body
        assert await store.count(TaskState.RUNNING) == 0
        assert await store.pending_deliveries() == []
        assert len(await store.list_tasks()) == 1
    finally:
        await store.close()
