"""The one composition root: builds every adapter from Settings and wires the ports."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from ghapp.agent.claude import ClaudeWorker
from ghapp.agent.logview import AgentLogReader
from ghapp.config import Settings
from ghapp.core.model import TaskState, utcnow
from ghapp.core.ports import Messenger, TaskStore, Worker
from ghapp.core.report import NullMessenger, Reporter
from ghapp.core.runner import RunnerConfig, TaskRunner
from ghapp.core.tasks import Limits, TaskService
from ghapp.github.auth import AppAuth
from ghapp.github.forge import GitHubForge
from ghapp.github.redeliver import RedeliverySweep
from ghapp.github.webhooks import Context, Inbox
from ghapp.store.sqlite import SqliteTaskStore
from ghapp.telegram.bot import TelegramBot
from ghapp.web import WebDeps, create_app
from ghapp.workspace.git import GitWorkspace

log = logging.getLogger(__name__)


class SystemClock:
    """Wall-clock UTC."""

    def now(self) -> datetime:
        return utcnow()


@dataclass
class Ghapp:
    """Every running part of one ghapp process."""

    settings: Settings
    store: TaskStore
    service: TaskService
    runner: TaskRunner
    inbox: Inbox
    session: aiohttp.ClientSession | None = None
    extra_start: list[Any] = field(default_factory=list)
    before_runner: list[Callable[[], Awaitable[object]]] = field(default_factory=list)

    async def start(self) -> None:
        """Open the store, then process leftovers and start the runner."""
        await self.store.migrate()
        await self.inbox.start()
        for step in self.before_runner:
            await step()
        await self.runner.start()
        for part in self.extra_start:
            await part.start()

    async def stop(self) -> None:
        """Stop in reverse; tasks still running become crash orphans, requeued at start."""
        for part in reversed(self.extra_start):
            await part.stop()
        await self.runner.stop()
        await self.inbox.stop()
        await self.store.close()
        if self.session is not None:
            await self.session.close()

    async def health(self) -> dict[str, Any]:
        """Database, runner and queue depth for /healthz."""
        db_ok = False
        queued = running = -1
        try:
            db_ok = await self.store.ping()
            queued = await self.store.count(TaskState.QUEUED)
            running = await self.store.count(TaskState.RUNNING)
        except Exception:
            log.exception("health check: store failed")
        runner_ok = self.runner.alive
        return {
            "ok": db_ok and runner_ok,
            "database": "ok" if db_ok else "down",
            "runner": "ok" if runner_ok else "stopped",
            "queued": queued,
            "running": running,
        }


def prepare_data_dir(data_dir: Path) -> None:
    """ghapp's own files are private; the sandbox user may only traverse to its checkout."""
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o711)
    (data_dir / "logs").mkdir(exist_ok=True)
    os.chmod(data_dir / "logs", 0o700)


def build(
    settings: Settings,
    *,
    worker: Worker | None = None,
    messenger: Messenger | None = None,
    worker_env: dict[str, str] | None = None,
    poll_s: float = 5.0,
) -> Ghapp:
    """Wire the production adapters; tests pass a few overrides, never other code paths."""
    if settings.app_id is None or settings.private_key is None:
        raise ValueError("APP_ID and PRIVATE_KEY are required to run the GitHub App")
    prepare_data_dir(settings.data_dir)
    clock = SystemClock()
    log_reader = AgentLogReader()
    store = SqliteTaskStore(settings.sqlite_path)
    session = aiohttp.ClientSession()
    auth = AppAuth(session, settings.app_id, settings.private_key, settings.github_api_url)
    forge = GitHubForge(auth, write_interval_s=settings.write_interval_s)
    reporter = Reporter(forge, messenger or NullMessenger(), settings.command)
    limits = Limits(
        settings.daily_budget_usd,
        settings.task_budget_usd,
        settings.task_budget_max_usd,
        settings.command,
    )
    service = TaskService(store, forge, reporter, clock, limits)
    before_runner: list[Callable[[], Awaitable[object]]] = []
    if worker is None:
        if settings.worker_user is None:
            log.warning(
                "MC_WORKER_USER is not set: the agent runs as the service user. "
                "Development only; set MC_WORKER_USER in production."
            )
        worker = ClaudeWorker(
            settings.claude_bin,
            run_as=settings.worker_user,
            model=settings.model,
            anthropic_env=settings.anthropic_env,
            extra_env=worker_env,
            max_turns=settings.max_turns,
            instance=hashlib.sha256(str(settings.data_dir.resolve()).encode()).hexdigest()[:12],
        )
        before_runner.append(worker.reap_leftovers)
    runner = TaskRunner(
        store,
        forge,
        GitWorkspace(settings.data_dir, settings.worker_user),
        worker,
        reporter,
        clock,
        RunnerConfig(
            log_dir=settings.data_dir / "logs",
            concurrency=settings.concurrency,
            daily_budget_usd=settings.daily_budget_usd,
            soft_timeout_s=settings.soft_timeout_s,
            kill_after_s=settings.kill_after_s,
            grace_s=settings.grace_s,
            max_turns=settings.max_turns,
            poll_s=poll_s,
        ),
        logs=log_reader,
    )
    service.runner = runner
    ctx = Context(
        service, store, settings.trigger_label, settings.command, settings.task_budget_max_usd
    )
    inbox = Inbox(store, ctx, clock)
    app = Ghapp(settings, store, service, runner, inbox, session, before_runner=before_runner)
    app.extra_start.append(RedeliverySweep(auth, store))
    if settings.telegram_token:
        bot = TelegramBot(
            settings.telegram_token,
            settings.telegram_chat_ids,
            service,
            log_reader,
            api_url=settings.telegram_api_url,
        )
        if messenger is None:
            reporter.messenger = bot
        app.extra_start.append(bot)
    return app


def web_app(app: Ghapp) -> web.Application:
    """The aiohttp application serving webhooks and health for this ghapp."""
    return create_app(
        WebDeps(
            store=app.store,
            secret=app.settings.webhook_secret,
            webhook_path=app.settings.webhook_path,
            on_stored=app.inbox.wake,
            health=app.health,
            start=app.start,
            stop=app.stop,
        )
    )


def describe(settings: Settings) -> Sequence[str]:
    """Start-up lines that tell the operator what this process will do."""
    return (
        f"listening on {settings.host}:{settings.port}, webhooks at {settings.webhook_path}",
        f"store {settings.database_url}; GitHub API {settings.github_api_url}",
        f"agent {settings.claude_bin} as {settings.worker_user or 'the service user'}; "
        f"budget ${settings.daily_budget_usd:g}/day, ${settings.task_budget_usd:g}/task",
    )
