"""Reads the agent's stream-json task logs, off the event loop, for reports and /logs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ghapp.agent.stream import summaries

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


class AgentLogReader:
    """The LogReader port over stream-json logs."""

    async def tail(self, path: Path) -> list[str]:
        return await readable_tail(path)
