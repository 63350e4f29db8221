"""Group commit: each caller gets its own result, a failed batch fails only its callers, and
one batch is written at a time (what arrives meanwhile waits for the next)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

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


async def test_one_batch_is_written_at_a_time() -> None:
    writer = Writer()
    batcher = Batcher(writer.flush)
    calls: dict[int, asyncio.Future[int]] = {}
    for wave in (range(0, 10), range(10, 20), range(20, 30)):
        calls.update({i: asyncio.ensure_future(batcher.submit(i)) for i in wave})
        await asyncio.sleep(0.01)  # the batches being written cannot take this wave
    writer.release.set()
    await asyncio.gather(*calls.values(), return_exceptions=True)

    assert writer.most == 1
    # the waves that came while the first was written went, together, in the next
    assert writer.batches == [list(range(10)), list(range(10, 30))]
    failed = next(batch for batch in writer.batches if 13 in batch)
    for i, call in calls.items():
        if i in failed:
            assert isinstance(call.exception(), RuntimeError)
        else:
            assert call.result() == i * 10
