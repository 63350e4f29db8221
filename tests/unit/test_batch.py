"""Group commit: each caller gets its own result, a failed batch fails only its callers, and
no more than `depth` batches are written at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from ghapp.store.batch import Batcher


class Writer:
    """A flush that holds each batch until the test lets it go; a batch with 13 fails."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.writing = 0
        self.most = 0
        self.release = asyncio.Event()

    async def flush(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        self.writing += 1
        self.most = max(self.most, self.writing)
        try:
            await self.release.wait()
            if 13 in items:
                raise RuntimeError("disk full")
            return [item * 10 for item in items]
        finally:
            self.writing -= 1


@pytest.mark.parametrize("depth", [1, 2])
async def test_at_most_depth_batches_are_written_at_once(depth: int) -> None:
    writer = Writer()
    batcher = Batcher(writer.flush, depth=depth)
    calls: dict[int, asyncio.Future[int]] = {}
    for wave in (range(0, 10), range(10, 20), range(20, 30)):
        calls.update({i: asyncio.ensure_future(batcher.submit(i)) for i in wave})
        await asyncio.sleep(0.01)  # the batches being written cannot take this wave
    writer.release.set()
    await asyncio.gather(*calls.values(), return_exceptions=True)

    assert writer.most == depth
    assert sorted(i for batch in writer.batches for i in batch) == list(range(30))
    failed = next(batch for batch in writer.batches if 13 in batch)
    for i, call in calls.items():
        if i in failed:
            assert isinstance(call.exception(), RuntimeError)
        else:
            assert call.result() == i * 10
