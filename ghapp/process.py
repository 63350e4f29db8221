"""One ghapp process: its role, its running parts, and what it serves over HTTP."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import aiohttp
from aiohttp import web

from ghapp.config import Settings
from ghapp.core.model import TaskState
from ghapp.core.ports import TaskStore
from ghapp.core.runner import TaskRunner
from ghapp.core.tasks import TaskService
from ghapp.github.signature import Receive
from ghapp.inbox import Inbox
from ghapp.retention import DiskGauge
from ghapp.slack.bot import EVENTS_PATH, SlackBot
from ghapp.telegram.bot import TelegramBot
from ghapp.web import WebDeps, create_app

log = logging.getLogger(__name__)


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


@dataclass
class Ghapp:
    """Every running part of one ghapp process; a role leaves some of them out."""

    settings: Settings
    store: TaskStore
    service: TaskService
    runner: TaskRunner | None
    inbox: Inbox | None
    session: aiohttp.ClientSession | None = None
    extra_start: list[Any] = field(default_factory=list)
    before_runner: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    role: Role = Role.ALL
    bot: TelegramBot | None = None
    slack: SlackBot | None = None
    disk: DiskGauge | None = None
    blockers: list[str] = field(default_factory=list)  # why no task can run on this host
    receive: Receive | None = None  # how webhooks are checked and stored, if not in the loop

    async def start(self) -> None:
        """Open the store, then process leftovers and start the runner."""
        await self.store.migrate()
        if self.inbox is not None:
            await self.inbox.start()
        if self.runner is not None:
            for step in self.before_runner:
                await step()
            await self.runner.start()
        for part in self.extra_start:
            await part.start()

    async def stop(self) -> None:
        """Stop in reverse; running tasks give their leases up, so any node resumes them."""
        for part in reversed(self.extra_start):
            await part.stop()
        if self.runner is not None:
            await self.runner.stop()
        if self.inbox is not None:
            await self.inbox.stop()
        await self.store.close()
        if self.session is not None:
            await self.session.close()

    async def health(self) -> dict[str, Any]:
        """Database, runner, Telegram and queue depth for /healthz."""
        db_ok = False
        queued = running = -1
        try:
            db_ok = await self.store.ping()
            queued = await self.store.count(TaskState.QUEUED)
            running = await self.store.count(TaskState.RUNNING)
        except Exception:
            log.exception("health check: store failed")
        runner_ok = self.runner is None or self.runner.alive
        runner = "off" if self.runner is None else "ok" if runner_ok else "stopped"
        tasks = "off" if self.runner is None else "; ".join(self.blockers) or "ok"
        telegram = "off"
        if self.bot is not None:
            telegram = "polling" if self.bot.polling else "standby"
        disk: dict[str, Any] | str = "off"
        if self.disk is not None:
            try:
                disk = await self.disk.report()
            except OSError as exc:
                disk = f"unknown: {exc.strerror}"
        return {
            "ok": db_ok and runner_ok and not self.blockers,
            "database": "ok" if db_ok else "down",
            "runner": runner,
            "tasks": tasks,
            "telegram": telegram,
            "slack": self.slack.mode if self.slack is not None else "off",
            "role": self.role.value,
            "node": self.settings.node_id,
            "queued": queued,
            "running": running,
            "disk": disk,
        }


def web_app(app: Ghapp) -> web.Application:
    """The aiohttp application serving webhooks and health for this ghapp."""
    if app.inbox is None:
        raise ValueError(f"a {app.role.value} process serves no webhooks")
    return create_app(
        WebDeps(
            store=app.store,
            secret=app.settings.webhook_secret,
            webhook_path=app.settings.webhook_path,
            on_stored=app.inbox.wake,
            intake=app.inbox.intake,
            receive=app.receive,
            health=app.health,
            start=app.start,
            stop=app.stop,
            posts={EVENTS_PATH: app.slack.handle} if app.slack is not None else {},
        )
    )


def health_app(app: Ghapp) -> web.Application:
    """What a worker serves on PORT: /healthz only, for the supervisor's checks."""

    async def healthz(_: web.Request) -> web.Response:
        report = await app.health()
        return web.json_response(report, status=200 if report.get("ok") else 503)

    async def startup(_: web.Application) -> None:
        await app.start()

    async def cleanup(_: web.Application) -> None:
        await app.stop()

    server = web.Application()
    server.router.add_get("/healthz", healthz)
    server.on_startup.append(startup)
    server.on_cleanup.append(cleanup)
    return server


def describe(settings: Settings, role: Role = Role.ALL) -> Sequence[str]:
    """Start-up lines that tell the operator what this process will do."""
    serving = f"webhooks at {settings.webhook_path}" if role.serves_webhooks else "/healthz only"
    return (
        f"role {role.value} as node {settings.node_id}; "
        f"listening on {settings.host}:{settings.port}, {serving}",
        f"store {settings.database_label}; GitHub API {settings.github_api_url}",
        f"agent {settings.claude_bin} as {settings.worker_user or 'the service user'}; "
        f"budget ${settings.daily_budget_usd:g}/day, ${settings.task_budget_usd:g}/task",
    )
