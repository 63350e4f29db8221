"""The production write spacing (MC_WRITE_INTERVAL_S=1) end to end: a task from label to PR
with every write to GitHub at least a second apart, and no lease warning on success."""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator

import pytest

from ghapp.core.model import TaskState
from tests.e2e.test_triggers import labeled, tasks
from tests.fakes.stack import CommittingWorker, Stack, close_stack, eventually, make_stack


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    s = await make_stack(worker_user=None)
    yield s
    await close_stack(s)


async def test_default_spacing_from_label_to_pr_without_a_lease_warning(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "ghapp")
    app = await stack.start(worker=CommittingWorker(), write_interval_s=1.0)
    assert app.settings.write_interval_s == 1.0
    assert await stack.deliver("issues", labeled()) == 202

    async def succeeded() -> bool:
        return [t.state for t in await tasks(stack)] == [TaskState.SUCCEEDED]

    await eventually(succeeded, within=60)
    assert app.runner is not None
    await app.runner.drain()
    writes = [
        r
        for r in stack.github.log
        if r.method in ("POST", "PATCH") and r.auth == "token" and ".git/" not in r.path
    ]
    assert len(writes) >= 5  # comment, reaction, PR, edits, rocket
    gaps = [b.at - a.at for a, b in itertools.pairwise(writes)]
    assert min(gaps) >= 0.95, gaps
    assert len(stack.github.pulls) == 1
    assert "lease lost" not in caplog.text, caplog.text
