"""gidgethub routers, one per feature, and the inbox that feeds stored deliveries to them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from gidgethub import routing, sansio

from ghapp.core.ci import CiWatcher
from ghapp.core.model import Delivery, GhappError, Installation, TaskState
from ghapp.core.ports import Clock, NoticeKind, TaskStore
from ghapp.core.tasks import TaskService
from ghapp.github import events
from ghapp.github.auth import github_unavailable

log = logging.getLogger(__name__)
# Intake goes first: the inbox starts when no webhook is being taken in and deliveries have
# paused this long, or this late at most, and then takes one batch; under a flood the rest
# waits in the store, not in memory.
QUIET_S = 0.02
MAX_WAIT_S = 1.0


class Intake:
    """How many webhook requests the web layer is taking in right now."""

    def __init__(self) -> None:
        self.in_flight = 0

    def busy(self) -> bool:
        return self.in_flight > 0


@dataclass(frozen=True)
class Context:
    """What every handler gets: the service and the trigger settings."""

    service: TaskService
    store: TaskStore
    label: str
    prefix: str
    max_budget: float
    ci: CiWatcher | None = None


triggers = routing.Router()
lifecycle = routing.Router()
installs = routing.Router()
checks = routing.Router()


@checks.register("check_suite", action="completed")
@checks.register("check_run", action="completed")
async def on_check_completed(event: sansio.Event, ctx: Context) -> None:
    signal = events.ci_signal(event.data, event.delivery_id)
    if signal is not None and ctx.ci is not None:
        outcome = await ctx.ci.on_check(signal)
        log.info("%s on %s %s: %s", event.event, signal.repo, signal.head_sha[:12], outcome)


@triggers.register("issues", action="labeled")
async def on_labeled(event: sansio.Event, ctx: Context) -> None:
    trig = events.label_trigger(event.data, ctx.label, event.delivery_id)
    if trig is not None:
        log.info(
            "label trigger on %s#%s: %s", trig.repo, trig.number, await ctx.service.handle(trig)
        )


@triggers.register("issue_comment", action="created")
async def on_comment(event: sansio.Event, ctx: Context) -> None:
    trig = events.comment_trigger(event.data, ctx.prefix, ctx.max_budget, event.delivery_id)
    if trig is not None:
        log.info("comment on %s#%s: %s", trig.repo, trig.number, await ctx.service.handle(trig))


@triggers.register("pull_request_review", action="submitted")
async def on_review(event: sansio.Event, ctx: Context) -> None:
    trig = events.review_trigger(event.data, ctx.prefix, ctx.max_budget, event.delivery_id)
    if trig is not None:
        log.info("review on %s#%s: %s", trig.repo, trig.number, await ctx.service.handle(trig))


@triggers.register("pull_request_review_comment", action="created")
async def on_review_comment(event: sansio.Event, ctx: Context) -> None:
    trig = events.review_comment_trigger(event.data, ctx.prefix, ctx.max_budget, event.delivery_id)
    if trig is not None:
        log.info(
            "review comment on %s#%s: %s", trig.repo, trig.number, await ctx.service.handle(trig)
        )


async def _cancel_issue_task(event: sansio.Event, ctx: Context, why: str) -> None:
    """Removing the label or closing the issue stops its active task."""
    ref = events.issue_ref(event.data)
    if ref is None:
        return
    task = await ctx.store.active_task_for(*ref)
    if task is not None:
        await ctx.service.cancel(task.id, why)


@lifecycle.register("issues", action="unlabeled")
async def on_unlabeled(event: sansio.Event, ctx: Context) -> None:
    label = event.data.get("label") or {}
    if isinstance(label, dict) and label.get("name") == ctx.label:
        await _cancel_issue_task(event, ctx, f"the {ctx.label} label was removed")


@lifecycle.register("issues", action="closed")
async def on_issue_closed(event: sansio.Event, ctx: Context) -> None:
    closed = events.closed_by(event.data)
    if closed is not None:
        log.info("%s#%s closed: %s", closed[0], closed[2], await ctx.service.issue_closed(*closed))


@lifecycle.register("pull_request", action="closed")
async def on_pr_closed(event: sansio.Event, ctx: Context) -> None:
    fate = events.pr_fate(event.data)
    if fate is None:
        return
    repo, number, outcome = fate
    task = await ctx.store.task_for_pr(repo, number)
    if task is not None:
        await ctx.service.reporter.notify(
            NoticeKind(outcome), f"Task #{task.id}: pull request {outcome}", task
        )
    while task is not None:  # the follow-ups and the task that opened the PR
        if task.state is TaskState.SUCCEEDED:
            await ctx.service.reporter.track(await ctx.store.update(task.id, pr_fate=outcome))
        parent = task.parent_task_id
        task = await ctx.store.get_task(parent) if parent is not None else None


@installs.register("installation")
async def on_installation(event: sansio.Event, ctx: Context) -> None:
    change = events.installation_change(event.data)
    if change is None:
        return
    inst_id, account, repos, _ = change
    action = event.data.get("action")
    if action == "deleted":
        await ctx.store.remove_installation(inst_id)
    elif action in ("created", "new_permissions_accepted", "unsuspend"):
        await ctx.store.upsert_installation(Installation(inst_id, account, tuple(repos)))


@installs.register("installation_repositories")
async def on_installation_repos(event: sansio.Event, ctx: Context) -> None:
    change = events.installation_change(event.data)
    if change is None:
        return
    inst_id, account, added, removed = change
    if inst_id not in {i.id for i in await ctx.store.installations()}:
        await ctx.store.upsert_installation(Installation(inst_id, account, ()))
    await ctx.store.set_installation_repos(inst_id, added, removed)


class _Router(routing.Router):
    """gidgethub's Router, ignoring an `action` it could not look up (a list or object)."""

    async def dispatch(self, event: sansio.Event, *args: Any, **kwargs: Any) -> None:
        data = event.data
        action = data.get("action") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(action, str | None):
            log.info("ignored %s delivery %s: unroutable action", event.event, event.delivery_id)
            return
        await super().dispatch(event, *args, **kwargs)


router = _Router(triggers, lifecycle, installs, checks)


INBOX_RETRY_S = 6 * 3600.0  # how long a delivery waits out a GitHub outage (MC_INBOX_RETRY_S)
MAX_BACKOFF_S = 60.0  # never longer than this between two tries


def backoff_s(age_s: float, retry_s: float) -> float:
    """Wait before the next try: half the delivery's age, at most a minute (or retry_s / 10)."""
    return min(MAX_BACKOFF_S, retry_s / 10, max(1.0, age_s / 2))


@dataclass(frozen=True)
class _Outage:
    """GitHub could not be reached while handling a delivery: try it again later."""

    error: str


class Inbox:
    """Processes stored deliveries off the request path, again after a crash, and after
    a GitHub outage: GitHub got its 202 and will not redeliver, so ghapp keeps trying."""

    def __init__(
        self,
        store: TaskStore,
        ctx: Context,
        clock: Clock,
        attempts: int = 3,
        retry_delay_s: float = 2.0,
        retry_s: float = INBOX_RETRY_S,
    ) -> None:
        self.store, self.ctx, self.clock = store, ctx, clock
        self.attempts, self.retry_delay_s, self.retry_s = attempts, retry_delay_s, retry_s
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._woken = 0.0  # monotonic time of the last wake (a delivery was stored)
        self._due: float | None = None  # loop time of the earliest deferred delivery
        self.intake = Intake()

    def wake(self) -> None:
        self._woken = time.monotonic()
        self._wake.set()

    async def start(self) -> None:
        """Process what a previous run left, then follow new deliveries."""
        self._loop = asyncio.create_task(self._run(), name="ghapp-inbox")
        self.wake()

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop

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
        """Dispatch unprocessed deliveries, a batch at a time; returns how many were handled."""
        handled = 0
        while batches > 0 and (batch := await self.store.pending_deliveries(100)):
            handled += await self.handle(batch)
            batches -= 1
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
