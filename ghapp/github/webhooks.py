"""gidgethub routers, one per feature: each handler translates an event and calls the service."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from gidgethub import routing, sansio

from ghapp.core.ci import CiWatcher
from ghapp.core.model import Installation
from ghapp.core.tasks import TaskService
from ghapp.github import events

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """What every handler gets: the service and the trigger settings."""

    service: TaskService
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


@lifecycle.register("issues", action="unlabeled")
async def on_unlabeled(event: sansio.Event, ctx: Context) -> None:
    label = event.data.get("label") or {}
    ref = events.issue_ref(event.data)
    if isinstance(label, dict) and label.get("name") == ctx.label and ref is not None:
        log.info("%s#%s unlabeled: %s", *ref, await ctx.service.label_removed(*ref, ctx.label))


@lifecycle.register("issues", action="closed")
async def on_issue_closed(event: sansio.Event, ctx: Context) -> None:
    closed = events.closed_by(event.data)
    if closed is not None:
        log.info("%s#%s closed: %s", closed[0], closed[2], await ctx.service.issue_closed(*closed))


@lifecycle.register("pull_request", action="closed")
async def on_pr_closed(event: sansio.Event, ctx: Context) -> None:
    fate = events.pr_fate(event.data)
    if fate is not None:
        log.info("PR %s#%s closed: %s", fate[0], fate[1], await ctx.service.pr_closed(*fate))


@installs.register("installation")
async def on_installation(event: sansio.Event, ctx: Context) -> None:
    change = events.installation_change(event.data)
    if change is not None:
        inst_id, account, repos, _ = change
        action = str(event.data.get("action") or "")
        done = await ctx.service.installation_changed(
            action, Installation(inst_id, account, tuple(repos))
        )
        log.info("installation %s %s: %s", inst_id, action, done)


@installs.register("installation_repositories")
async def on_installation_repos(event: sansio.Event, ctx: Context) -> None:
    change = events.installation_change(event.data)
    if change is not None:
        inst_id, account, added, removed = change
        await ctx.service.repositories_changed(Installation(inst_id, account, ()), added, removed)


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
