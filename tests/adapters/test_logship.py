"""The log shipper: batches to the store, keeps only the newest lines while it is down."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ghapp.agent import logship
from ghapp.agent.logship import LogShipper
from ghapp.agent.logview import AgentLogReader
from ghapp.core.model import STORED_LOG_CHARS
from ghapp.store.sqlite import SqliteTaskStore
from tests.contract.support import started


async def test_lines_reach_the_store_in_batches_and_the_rest_at_close(tmp_path: Path) -> None:
    store = SqliteTaskStore(tmp_path / "db.sqlite3")
    await store.migrate()
    try:
        task = await started(store)
        calls: list[str] = []

        async def ship(task_id: int, attempt: int, text: str) -> None:
            calls.append(text)
            await store.append_task_log(task_id, attempt, text, STORED_LOG_CHARS)

        shipper = LogShipper(ship, task.id, task.attempt, STORED_LOG_CHARS)
        for n in range(100):
            shipper.add([f"tool Bash: step {n}"])
        await asyncio.sleep(0.1)
        assert calls == []  # not a write per line
        shipper.add(["x" * logship.BATCH_CHARS])  # a full batch goes at once
        await asyncio.sleep(0.1)
        assert len(calls) == 1
        shipper.add(["  -> ok: done"])  # the agent goes quiet: it goes after INTERVAL_S
        await asyncio.sleep(logship.INTERVAL_S + 0.5)
        assert len(calls) == 2
        shipper.add(["result: success"])
        await shipper.close()
        assert len(calls) == 3
        lines = await AgentLogReader(store).tail(task)
        assert lines[0] == "tool Bash: step 0" and lines[-1] == "result: success"
        assert len(lines) == 103
        await asyncio.sleep(logship.INTERVAL_S + 0.2)
        assert len(calls) == 3  # nothing left armed after close
    finally:
        await store.close()


async def test_a_store_that_is_down_costs_one_warning_and_bounded_memory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shipped: list[str] = []

    async def down(task_id: int, attempt: int, text: str) -> None:
        shipped.append(text)
        raise ConnectionRefusedError("database is down")

    shipper = LogShipper(down, 7, 1, keep=100)
    for n in range(1000):
        shipper.add([f"line {n:04d}"])
    await shipper.close()
    await shipper.close()
    [text] = shipped  # only the newest lines were kept, and shipped once
    assert len(text) <= 100 and text.endswith("line 0999\n") and text.startswith("line ")
    warnings = [r for r in caplog.records if "cannot store log lines" in r.getMessage()]
    assert len(warnings) == 1 and shipper.failed
