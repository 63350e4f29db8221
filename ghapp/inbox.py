"""The inbox: stored webhook deliveries, claimed by one node and fed to the routers in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta

import orjson
from gidgethub import sansio

from ghapp.core.model import LOCAL_NODE, Delivery, GhappError
from ghapp.core.ports import Clock, NoticeKind, TaskStore
from ghapp.github.auth import github_unavailable
from ghapp.github.webhooks import Context, router

log = logging.getLogger(__name__)
# Intake goes first: the inbox starts when no webhook is being taken in and deliveries have
# paused this long, or this late at most, and then takes one batch; under a flood the rest
# waits in the store, not in memory.
QUIET_S = 0.02
MAX_WAIT_S = 1.0
INBOX_RETRY_S = 6 * 3600.0  # how long a delivery waits out a GitHub outage (MC_INBOX_RETRY_S)
MAX_BACKOFF_S = 60.0  # never longer than this between two tries
DELIVERY_LEASE_S = 300.0  # how long claimed deliveries stay this process's
DELIVERY_BATCH = 100  # claimed at once (one write), then handled one by one
DISPATCH_MARGIN_S = 60.0  # no delivery starts later than this before its claim runs out
INBOX_SWEEP_S = 60.0  # look for deliveries a dead process had claimed, even when idle


class Intake:
    """How many webhook requests the web layer is taking in right now."""

    def __init__(self) -> None:
        self.in_flight = 0

    def busy(self) -> bool:
        return self.in_flight > 0


def backoff_s(age_s: float, retry_s: float) -> float:
    """Wait before the next try: half the delivery's age, at most a minute (or retry_s / 10)."""
    return min(MAX_BACKOFF_S, retry_s / 10, max(1.0, age_s / 2))


@dataclass(frozen=True)
class _Outage:
    """GitHub could not be reached while handling a delivery: try it again later."""

    error: str


class Inbox:
    """Processes stored deliveries off the request path, again after a crash, and after
    a GitHub outage: GitHub got its 202 and will not redeliver, so ghapp keeps trying.

    Deliveries are claimed first, so no two processes handle one (a single process is a
    cluster of one). A process that dies holding claims loses them when they expire; one
    restarted with the same node id takes its own back at once.
    """

    def __init__(
        self,
        store: TaskStore,
        ctx: Context,
        clock: Clock,
        node: str = LOCAL_NODE,
        *,
        attempts: int = 3,
        retry_delay_s: float = 2.0,
        retry_s: float = INBOX_RETRY_S,
        lease_s: float = DELIVERY_LEASE_S,
        sweep_s: float = INBOX_SWEEP_S,
    ) -> None:
        self.store, self.ctx, self.clock = store, ctx, clock
        self.attempts, self.retry_delay_s, self.retry_s = attempts, retry_delay_s, retry_s
        # A deferred delivery waits at most this long after a restart, too.
        self.node, self.lease_s, self.sweep_s = node, lease_s, min(sweep_s, retry_s / 10)
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._woken = 0.0  # monotonic time of the last wake (a delivery was stored)
        self._due: float | None = None  # loop time of the earliest deferred delivery
        self.intake = Intake()

    def wake(self) -> None:
        self._woken = time.monotonic()
        self._wake.set()

    async def start(self) -> None:
        """Process what a previous run left, follow new deliveries, and look again now and then."""
        self._loop = asyncio.create_task(self._run(), name="ghapp-inbox")
        self.wake()
        self._ticker = asyncio.create_task(self._tick(), name="ghapp-inbox-sweep")

    async def stop(self) -> None:
        for part in (self._ticker, self._loop):
            if part is not None:
                part.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await part

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_s)
            self.wake()

    async def _quiet(self) -> None:
        """Wait for a pause in intake (or MAX_WAIT_S): answering GitHub comes first."""
        for _ in range(round(MAX_WAIT_S / QUIET_S)):
            if not self.intake.busy() and time.monotonic() - self._woken >= QUIET_S:
                return
            await asyncio.sleep(QUIET_S)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow stop()'s cancel
            timeout = None if self._due is None else max(0.0, self._due - loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            await self._quiet()
            self._wake.clear()
            if self._due is not None and loop.time() >= self._due:
                self._due = None  # due now; a wake for new intake keeps a later one scheduled
            try:
                if await self.process_pending(batches=1):
                    self._wake.set()  # there may be more
            except Exception:
                log.exception("inbox processing failed; will retry")
                await asyncio.sleep(self.retry_delay_s)
                self._wake.set()

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

    async def handle(self, batch: list[Delivery], deadline: float = math.inf) -> int:
        """Dispatch in order until `deadline` (monotonic); returns how many were handled.

        Each mark is written as soon as its delivery is handled, in the store's next group
        commit rather than a transaction of its own; all are durable before this returns.
        """
        marks: list[asyncio.Future[None]] = []
        handled = 0
        try:
            for delivery in batch:
                if time.monotonic() > deadline:
                    break
                mark = await self._handle(delivery)
                await asyncio.sleep(0)  # a request that arrived meanwhile is answered first
                if mark is not None:
                    marks.append(asyncio.ensure_future(mark))
                handled += 1
        finally:
            await asyncio.gather(*marks)
        return handled

    async def _handle(self, delivery: Delivery) -> Awaitable[None] | None:
        """Dispatch one delivery; its mark to write, or None when it waits out an outage."""
        outcome = await self._dispatch(delivery.id, delivery.event, delivery.body)
        now = self.clock.now()
        if not isinstance(outcome, _Outage):
            return self.store.mark_delivery(delivery.id, now, outcome)
        age = (now - delivery.received_at).total_seconds()
        if age >= self.retry_s:
            error = f"gave up after {age:.0f} s: {outcome.error}"
            log.error("delivery %s (%s) failed: %s", delivery.id, delivery.event, error)
            await self.ctx.service.reporter.notify(
                NoticeKind.DELIVERY_FAILED,
                f"GitHub delivery {delivery.id} ({delivery.event}) was dropped: GitHub could "
                f"not be reached for {age / 60:.0f} min (MC_INBOX_RETRY_S). Last error: "
                f"{outcome.error[:200]}",
            )
            return self.store.mark_delivery(delivery.id, now, error[:500])
        wait = backoff_s(age, self.retry_s)
        log.warning(
            "delivery %s (%s): GitHub unavailable (%s); trying again in %.0f s",
            delivery.id,
            delivery.event,
            outcome.error,
            wait,
        )
        await self.store.defer_delivery(
            delivery.id, now + timedelta(seconds=wait), outcome.error[:500]
        )
        due = asyncio.get_running_loop().time() + wait
        self._due = due if self._due is None else min(self._due, due)
        return None

    async def _dispatch(
        self, delivery_id: str, event_name: str, body: bytes
    ) -> str | _Outage | None:
        """Route one delivery; the error that ends it, or an _Outage to try again later."""
        try:
            data = orjson.loads(body)  # the only parse: the web layer stores the bytes as signed
        except orjson.JSONDecodeError:
            return "unparsable body"
        event = sansio.Event(data, event=event_name, delivery_id=delivery_id)
        for attempt in range(1, self.attempts + 1):
            try:
                await router.dispatch(event, self.ctx)
                return None
            except GhappError as exc:  # the payload itself is wrong: retrying cannot help
                return str(exc)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
                if github_unavailable(exc):
                    status = getattr(exc, "status_code", None)
                    return _Outage(f"GitHub {int(status)}: {exc}" if status else error)
                log.exception(
                    "delivery %s (%s) failed, attempt %s", delivery_id, event_name, attempt
                )
                if attempt == self.attempts:
                    return error
                await asyncio.sleep(self.retry_delay_s * attempt)
        return None
