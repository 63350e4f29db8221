"""What ghapp reads from the agent is bounded: lines, and the task log on disk."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ghapp.agent.procs import MAX_LINE, pump
from ghapp.agent.tasklog import TaskLog


async def lines_of(*chunks: bytes) -> list[bytes]:
    reader = asyncio.StreamReader()
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    got: list[bytes] = []
    await pump(reader, got.append)
    return got


async def test_a_line_without_end_is_cut_not_buffered() -> None:
    huge = b"x" * (MAX_LINE * 3)  # as `cat /dev/zero > /proc/<cli>/fd/1` would send
    got = await lines_of(b"first\n", huge[: MAX_LINE + 5], huge[MAX_LINE + 5 :], b"\nlast\n")
    assert got == [b"first", b"x" * MAX_LINE, b"last"]


async def test_lines_split_across_reads_come_out_whole() -> None:
    assert await lines_of(b"ab", b"c\nde", b"f\n", b"tail") == [b"abc", b"def", b"tail"]


def test_task_log_keeps_its_tail_under_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "task.log"
    with TaskLog(path, max_bytes=1 << 16) as log:
        for i in range(5000):
            log.write(f"line {i:05d} ".encode() + b"y" * 40)
    data = path.read_bytes()
    assert len(data) <= 1 << 16
    lines = data.decode().splitlines()
    assert lines[-1].startswith("line 04999") and lines[0].startswith("line ")
    assert all(len(line) == len(lines[-1]) for line in lines)  # cut at line boundaries
    assert path.stat().st_mode & 0o777 == 0o600
