"""gidgethub routers, one per feature, and the inbox that feeds stored deliveries to them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from gidgethub import routing, sansio

from ghapp.core.model import Installation, TaskState
from ghapp.core.ports import Clock, TaskStore
from ghapp.core.tasks import TaskService
from ghapp.github import events

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """What every handler gets: the service and the trigger settings."""

    service: TaskService
    store: TaskStore
    label: str
    prefix: str
    max_budget: float


triggers = routing.Router()
lifecycle = routing.Router()
installs = routing.Router()


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
    await _cancel_issue_task(event, ctx, "the issue was closed")


@lifecycle.register("pull_request", action="closed")
async def on_pr_closed(event: sansio.Event, ctx: Context) -> None:
    fate = events.pr_fate(event.data)
    if fate is None:
        return
    repo, number, outcome = fate
    task = await ctx.store.task_for_pr(repo, number)
    if task is not None:
        await ctx.service.reporter.notify(outcome, f"Task #{task.id}: pull request {outcome}", task)
    while task is not None:  # the follow-ups and the task that opened the PR
        if task.state is TaskState.SUCCEEDED:
            await ctx.service.reporter.track(await ctx.store.update(task.id, pr_fate=outcome))
        parent = task.parent_task_id
        task = await ctx.store.get_task(parent) if parent is not None else None


def _repo_names(items: Any) -> list[str]:
    return [r["full_name"] for r in items or [] if isinstance(r, dict) and "full_name" in r]


@installs.register("installation")
async def on_installation(event: sansio.Event, ctx: Context) -> None:
    inst = event.data.get("installation") or {}
    if not isinstance(inst, dict) or not isinstance(inst.get("id"), int):
        return
    action = event.data.get("action")
    if action == "deleted":
        await ctx.store.remove_installation(inst["id"])
    elif action in ("created", "new_permissions_accepted", "unsuspend"):
        account = (inst.get("account") or {}).get("login", "")
        repos = tuple(_repo_names(event.data.get("repositories")))
        await ctx.store.upsert_installation(Installation(inst["id"], account, repos))


@installs.register("installation_repositories")
async def on_installation_repos(event: sansio.Event, ctx: Context) -> None:
    inst = event.data.get("installation") or {}
    if not isinstance(inst, dict) or not isinstance(inst.get("id"), int):
        return
    known = {i.id for i in await ctx.store.installations()}
    if inst["id"] not in known:
        account = (inst.get("account") or {}).get("login", "")
        await ctx.store.upsert_installation(Installation(inst["id"], account, ()))
    await ctx.store.set_installation_repos(
        inst["id"],
        _repo_names(event.data.get("repositories_added")),
        _repo_names(event.data.get("repositories_removed")),
    )


router = routing.Router(triggers, lifecycle, installs)


class Inbox:
    """Processes stored deliveries in order, off the request path, and again after a crash."""

    def __init__(
        self,
        store: TaskStore,
        ctx: Context,
        clock: Clock,
        attempts: int = 3,
        retry_delay_s: float = 2.0,
    ) -> None:
        self.store, self.ctx, self.clock = store, ctx, clock
        self.attempts, self.retry_delay_s = attempts, retry_delay_s
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None

    def wake(self) -> None:
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

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.process_pending()
            except Exception:
                log.exception("inbox processing failed; will retry")
                await asyncio.sleep(self.retry_delay_s)
                self._wake.set()

    async def process_pending(self) -> int:
        """Dispatch every unprocessed delivery; returns how many were handled."""
        handled = 0
        while batch := await self.store.pending_deliveries(100):
            for delivery in batch:
                error = await self._dispatch(delivery.id, delivery.event, delivery.body)
                await self.store.mark_delivery(delivery.id, self.clock.now(), error)
                handled += 1
        return handled

    async def _dispatch(self, delivery_id: str, event_name: str, body: bytes) -> str | None:
        """Route one delivery, retrying transient failures a few times; returns the error."""
        try:
            data = json.loads(body)
        except ValueError:
            return "unparsable body"
        event = sansio.Event(data, event=event_name, delivery_id=delivery_id)
        for attempt in range(1, self.attempts + 1):
            try:
                await router.dispatch(event, self.ctx)
                return None
            except Exception as exc:
                log.exception(
                    "delivery %s (%s) failed, attempt %s", delivery_id, event_name, attempt
                )
                if attempt == self.attempts:
                    return f"{type(exc).__name__}: {exc}"[:500]
                await asyncio.sleep(self.retry_delay_s * attempt)
        return None
