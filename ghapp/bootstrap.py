"""The one composition root: builds every adapter from Settings and wires the ports."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp

from ghapp.agent.claude import ClaudeWorker
from ghapp.agent.factory import claude_worker, sandbox_checks
from ghapp.agent.logview import AgentLogReader
from ghapp.config import Settings
from ghapp.core.ci import CiPolicy, CiWatcher
from ghapp.core.model import utcnow
from ghapp.core.ports import (
    Checks,
    Clock,
    Forge,
    LogReader,
    Messenger,
    SettingsSource,
    TaskStore,
    Vcs,
    Worker,
)
from ghapp.core.report import NullMessenger, Reporter
from ghapp.core.runner import RunnerConfig, TaskRunner
from ghapp.core.tasks import Limits, TaskService
from ghapp.github.auth import AppAuth
from ghapp.github.forge import GitHubForge
from ghapp.github.redeliver import RedeliverySweep
from ghapp.github.webhooks import Context
from ghapp.inbox import Inbox
from ghapp.messaging.fanout import FanOut
from ghapp.process import Ghapp, Role
from ghapp.repo_settings import Caps
from ghapp.retention import DiskGauge, Retention
from ghapp.slack.bot import SlackBot
from ghapp.store.postgres import PostgresTaskStore
from ghapp.store.postgres.schema import TELEGRAM_LOCK
from ghapp.store.postgres.signals import PgLeader, PgListener
from ghapp.store.sqlite import SqliteTaskStore
from ghapp.telegram.bot import TelegramBot
from ghapp.workspace.git import GitWorkspace
from ghapp.workspace.settings import MirrorSettings

log = logging.getLogger(__name__)


class SystemClock:
    """Wall-clock UTC."""

    def now(self) -> datetime:
        return utcnow()


def task_blockers(settings: Settings) -> list[str]:
    """What makes every task fail on this host; /healthz is not ok while any remains."""
    problems = []
    if shutil.which(settings.claude_bin) is None:
        problems.append(f"CLAUDE_BIN: the Claude CLI {settings.claude_bin!r} is not installed")
    if not {"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"} & set(settings.anthropic_env):
        problems.append("ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN) is not set")
    return problems


@dataclass(frozen=True)
class Crew:
    """What a process that runs tasks adds to the core: checkouts, the agent, the runner's knobs."""

    vcs: Vcs
    worker: Worker
    config: RunnerConfig
    logs: LogReader | None = None
    checks: Checks | None = None


@dataclass(frozen=True)
class Core:
    """The core's objects wired to each other; `runner` is None where no tasks run."""

    reporter: Reporter
    service: TaskService
    runner: TaskRunner | None


def build_core(
    store: TaskStore,
    forge: Forge,
    clock: Clock,
    limits: Limits,
    messenger: Messenger | None = None,
    crew: Crew | None = None,
    settings: SettingsSource | None = None,
) -> Core:
    """Wire Reporter, TaskService and TaskRunner over given ports; production and tests alike."""
    reporter = Reporter(forge, messenger or NullMessenger(), limits.prefix)
    service = TaskService(store, forge, reporter, clock, limits, settings)
    runner = None
    if crew is not None:
        runner = TaskRunner(
            store,
            forge,
            crew.vcs,
            crew.worker,
            reporter,
            clock,
            crew.config,
            logs=crew.logs,
            settings=settings,
            checks=crew.checks,
        )
        service.runner = runner
    return Core(reporter, service, runner)


def prepare_data_dir(data_dir: Path) -> None:
    """ghapp's own files are private; the sandbox user may only traverse to its checkout."""
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o711)
    (data_dir / "logs").mkdir(exist_ok=True)
    os.chmod(data_dir / "logs", 0o700)


def store_pacer(
    store: TaskStore, clock: SystemClock, interval_s: float
) -> Callable[[int], Awaitable[float]]:
    """GitHub write slots from the store, so every process of a cluster shares the spacing."""

    async def pace(installation_id: int) -> float:
        now = clock.now()
        slot = await store.reserve_write(installation_id, now, interval_s)
        return (slot - now).total_seconds()

    return pace


def open_store(settings: Settings, intake: bool = False) -> TaskStore:
    """The store DATABASE_URL names: PostgreSQL for a cluster, else the embedded SQLite
    (whose deliveries a child process writes where this process takes webhooks in)."""
    if settings.is_postgres:
        return PostgresTaskStore(settings.database_url)
    secret = settings.webhook_secret if intake else None
    return SqliteTaskStore(settings.sqlite_path, intake_secret=secret)


def caps(settings: Settings) -> Caps:
    """The operator's limits over a repository's `.github/ghapp.yml`."""
    models = settings.models or ((settings.model,) if settings.model else ())
    return Caps(
        models=models,
        max_budget_usd=settings.task_budget_max_usd,
        max_turns=settings.max_turns,
        timeout_s=settings.soft_timeout_s,
        verify_timeout_max_s=settings.verify_timeout_max_s,
        protected_paths=settings.protected_paths,
    )


def build(
    settings: Settings,
    *,
    role: Role = Role.ALL,
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
    store = open_store(settings, intake=role.serves_webhooks)
    git = GitWorkspace(settings.data_dir, settings.worker_user)  # may refuse: before the session
    log_reader = AgentLogReader(store)
    session = aiohttp.ClientSession()
    auth = AppAuth(session, settings.app_id, settings.private_key, settings.github_api_url)
    forge = GitHubForge(
        auth,
        write_interval_s=settings.write_interval_s,
        pacer=store_pacer(store, clock, settings.write_interval_s),
        secrets=settings.secrets,
    )
    limits = Limits(
        settings.daily_budget_usd,
        settings.task_budget_usd,
        settings.task_budget_max_usd,
        settings.command,
    )
    repo_settings = MirrorSettings(git, caps(settings))
    crew = None
    if role.runs_tasks:
        try:
            crew = _crew(settings, store, clock, worker, worker_env, poll_s, git)
        except BaseException:
            session.detach()  # nothing was sent: no "Unclosed client session" after the error
            raise
    core = build_core(store, forge, clock, limits, messenger, crew, repo_settings)
    service, runner = core.service, core.runner
    before_runner: list[Callable[[], Awaitable[object]]] = []
    if runner is not None and isinstance(runner.worker, ClaudeWorker):
        before_runner.append(runner.worker.reap_leftovers)
    inbox = None
    if role.serves_webhooks:
        policy = CiPolicy(
            max_per_pr=settings.ci_fix_max,
            budget_usd=settings.task_budget_usd,
            author_email=git.author_email,
            prefix=settings.command,
            max_budget_usd=settings.task_budget_max_usd,
        )
        watcher = CiWatcher(store, forge, forge, repo_settings, service.submit, clock, policy)
        ctx = Context(
            service,
            settings.trigger_label,
            settings.command,
            settings.task_budget_max_usd,
            watcher,
        )
        inbox = Inbox(store, ctx, clock, settings.node_id, retry_s=settings.inbox_retry_s)
    app = Ghapp(
        settings, store, service, runner, inbox, session, before_runner=before_runner, role=role
    )
    app.disk = DiskGauge(settings.data_dir)
    vcs = runner.vcs if runner is not None and isinstance(runner.vcs, GitWorkspace) else None
    app.extra_start.append(Retention(store, settings.data_dir, settings.retention_days, clock, vcs))
    if role.serves_webhooks:
        app.extra_start.append(RedeliverySweep(auth, store))
        if isinstance(store, SqliteTaskStore):  # its writer process checks each delivery
            app.receive = store.receive
    if runner is not None and worker is None:
        app.blockers = task_blockers(settings)
        for problem in app.blockers:
            log.error("no task can run: %s", problem)
    if runner is not None and isinstance(store, PostgresTaskStore):
        app.extra_start.append(PgListener(store.dsn, runner.wake, runner.request_stop))
    _messaging(app, settings, forge, log_reader, core.reporter if messenger is None else None)
    return app


def _messaging(
    app: Ghapp,
    settings: Settings,
    forge: GitHubForge,
    log_reader: AgentLogReader,
    reporter: Reporter | None,
) -> None:
    """The chat adapters; notices go to all of them. With PostgreSQL every process may send,
    and only the elected one polls Telegram and holds Slack's Socket Mode connection."""
    cluster = isinstance(app.store, PostgresTaskStore)
    if settings.telegram_token:
        app.bot = TelegramBot(
            settings.telegram_token,
            settings.telegram_chat_ids,
            app.service,
            log_reader,
            api_url=settings.telegram_api_url,
            polling=not cluster,
            repos=forge,
            secrets=settings.secrets,
            user_ids=settings.telegram_user_ids,
        )
    if settings.slack_bot_token:
        app.slack = SlackBot(
            settings.slack_bot_token,
            settings.slack_channel_ids,
            app.service,
            log_reader,
            signing_secret=settings.slack_signing_secret,
            app_token=settings.slack_app_token,
            user_ids=settings.slack_user_ids,
            api_url=settings.slack_api_url,
            socket=not cluster,
            repos=forge,
            refs=app.store if isinstance(app.store, SqliteTaskStore | PostgresTaskStore) else None,
        )
    chats: list[TelegramBot | SlackBot] = [c for c in (app.bot, app.slack) if c is not None]
    if not chats:
        return
    if reporter is not None:
        reporter.messenger = chats[0] if len(chats) == 1 else FanOut(chats)
    app.extra_start.extend(chats)
    if isinstance(app.store, PostgresTaskStore):
        app.extra_start.append(
            PgLeader(
                app.store.dsn, TELEGRAM_LOCK, lambda: _lead(app, True), lambda: _lead(app, False)
            )
        )


async def _lead(app: Ghapp, on: bool) -> None:
    """Won or lost the messaging election: take up or give up the inbound connections."""
    if app.bot is not None:
        await app.bot.set_polling(on)
    if app.slack is not None:
        await app.slack.set_socket(on)


def _crew(
    settings: Settings,
    store: TaskStore,
    clock: SystemClock,
    worker: Worker | None,
    worker_env: dict[str, str] | None,
    poll_s: float,
    git: GitWorkspace,
) -> Crew:
    """The agent, mirrors and checkouts on this process's own disk, with the runner's settings."""
    if worker is None:
        worker = claude_worker(settings, store, clock, worker_env)
    config = RunnerConfig(
        log_dir=settings.data_dir / "logs",
        concurrency=settings.concurrency,
        daily_budget_usd=settings.daily_budget_usd,
        soft_timeout_s=settings.soft_timeout_s,
        kill_after_s=settings.kill_after_s,
        grace_s=settings.grace_s,
        max_turns=settings.max_turns,
        poll_s=poll_s,
        node=settings.node_id,
        lease_s=settings.lease_s,
        context_max_chars=settings.context_max_chars,
        max_attempts=settings.max_attempts,
    )
    checks = sandbox_checks(settings, worker)
    return Crew(git, worker, config, logs=AgentLogReader(store), checks=checks)
