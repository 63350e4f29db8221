"""Reads the agent's stream-json task logs, off the event loop, for reports and /logs."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from ghapp.agent.stream import StreamError, StreamState, summaries

TAIL_BYTES = 2_000_000
COST_BYTES = 50_000_000


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


def _cost(path: Path) -> float | None:
    """The best cost the log tells (reported, else estimated from usage)."""
    state = StreamState()
    try:
        lines = _read_tail(path, COST_BYTES)
    except OSError:
        return None
    for line in lines:
        with contextlib.suppress(StreamError):
            state.feed(line)
    return state.cost_usd


async def cost_so_far(path: Path) -> float | None:
    """Cost of a running attempt read from its log; None when there is no log yet."""
    return await asyncio.to_thread(_cost, path)


class AgentLogReader:
    """The LogReader port over stream-json logs."""

    async def tail(self, path: Path) -> list[str]:
        return await readable_tail(path)

    async def cost(self, path: Path) -> float | None:
        return await cost_so_far(path)
