"""What lets several ghapp processes share one store: roles and the claiming inbox."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from enum import StrEnum

from ghapp.core.ports import Clock, TaskStore
from ghapp.github.webhooks import INBOX_RETRY_S, Context, Inbox

DELIVERY_LEASE_S = 300.0  # how long claimed deliveries stay this process's
DELIVERY_BATCH = 100  # claimed at once (one write), then handled one by one
DISPATCH_MARGIN_S = 60.0  # no delivery starts later than this before its claim runs out
INBOX_SWEEP_S = 60.0  # look for deliveries a dead process had claimed, even when idle


class Role(StrEnum):
    """What one process does: everything, or one half of a scaled-out cluster."""

    ALL = "all"
    WEB = "web"  # webhooks (and the inbox behind them)
    WORKER = "worker"  # the task runner

    @property
    def serves_webhooks(self) -> bool:
        return self is not Role.WORKER

    @property
    def runs_tasks(self) -> bool:
        return self is not Role.WEB


class ClaimingInbox(Inbox):
    """The inbox of one node: deliveries are claimed first, so no two processes handle one.

    A process that dies holding claims loses them when they expire; one restarted with
    the same node id takes its own back at once.
    """

    def __init__(
        self,
        store: TaskStore,
        ctx: Context,
        clock: Clock,
        node: str,
        *,
        lease_s: float = DELIVERY_LEASE_S,
        sweep_s: float = INBOX_SWEEP_S,
        retry_s: float = INBOX_RETRY_S,
    ) -> None:
        super().__init__(store, ctx, clock, retry_s=retry_s)
        # A deferred delivery waits at most this long after a restart, too.
        self.node, self.lease_s, self.sweep_s = node, lease_s, min(sweep_s, retry_s / 10)
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Process leftovers, follow new deliveries, and look again now and then."""
        await super().start()
        self._ticker = asyncio.create_task(self._tick(), name="ghapp-inbox-sweep")

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await super().stop()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_s)
            self.wake()

    async def process_pending(self, batches: float = math.inf) -> int:
        """Dispatch deliveries this node can claim, a batch at a time; returns how many."""
        handled = 0
        while batches > 0 and (
            batch := await self.store.claim_deliveries(
                self.node, self.clock.now(), self.lease_s, DELIVERY_BATCH
            )
        ):
            batches -= 1
            # Past the deadline, claim again: the rest are still ours and come back renewed.
            deadline = time.monotonic() + self.lease_s - min(DISPATCH_MARGIN_S, self.lease_s / 2)
            handled += await self.handle(batch, deadline)
        return handled
