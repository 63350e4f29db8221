"""Reads task logs for reports and /logs: the tail shared in the store, or a local file."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ghapp.agent.stream import summaries
from ghapp.core.model import STORED_LOG_CHARS, Task, TaskState
from ghapp.core.ports import TaskStore

TAIL_BYTES = 2_000_000


def _read_tail(path: Path, limit: int) -> list[str]:
    """The last `limit` bytes of a file as lines; a cut first line is dropped."""
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        start = max(0, size - limit)
        handle.seek(start)
        data = handle.read()
    # JSON lines end at "\n" only: splitlines() would also break at U+2028 and friends.
    lines = data.decode("utf-8", errors="replace").split("\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines[1:] if start > 0 and lines else lines


async def readable_tail(path: Path) -> list[str]:
    """Readable summaries of the end of a stream-json log; OSError when it cannot be read."""
    raw = await asyncio.to_thread(_read_tail, path, TAIL_BYTES)
    return summaries(raw)


def stored_lines(text: str) -> list[str]:
    """The lines of a stored tail; a first line the store's cap cut is dropped."""
    lines = text.split("\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines[1:] if len(text) >= STORED_LOG_CHARS and lines else lines


class AgentLogReader:
    """The LogReader port: the tail every node shares in the store, else this node's file."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store

    async def tail(self, task: Task) -> list[str]:
        text = await self.store.task_log(task.id, task.attempt)
        if text is not None:
            return stored_lines(text)
        if not task.log_path:
            return []
        try:  # an attempt from before the store kept logs, or lines not shipped yet
            return await readable_tail(Path(task.log_path))
        except FileNotFoundError:
            if task.state is TaskState.RUNNING:  # on another node, its first lines on their way
                return []
            raise
