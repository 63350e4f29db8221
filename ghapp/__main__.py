"""`python -m ghapp`: serve (default; setup mode first when APP_ID is unset), check, prune
(what is older than MC_RETENTION_DAYS, once), migrate-store (copy the SQLite store into
PostgreSQL), backup (a consistent copy of the SQLite store, safe while ghapp runs) or
check-config PATH (validate a repository's .github/ghapp.yml, e.g. in its own CI).

`--role web` serves webhooks only, `--role worker` runs tasks only (and /healthz on PORT);
the default runs both. Several processes share one queue through DATABASE_URL=postgresql://.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from ghapp import check
from ghapp.bootstrap import SystemClock, build, open_store
from ghapp.config import POSTGRES_SCHEMES, ConfigError, Settings, environment, load_settings
from ghapp.core.model import GhappError
from ghapp.github.setup import SetupConfig, serve_setup, setup_config
from ghapp.logs import setup_logging
from ghapp.process import Role, describe, health_app, web_app
from ghapp.retention import PruneReport, Retention, disk_usage, megabytes
from ghapp.web import SERVER_OPTIONS
from ghapp.workspace.git import GitWorkspace


async def run(settings: Settings, role: Role = Role.ALL) -> None:
    """Serve until SIGINT or SIGTERM, then stop every part in order."""
    if role is not Role.ALL and not settings.is_postgres:
        logging.getLogger("ghapp").warning(
            "--role %s with SQLite: every process must share this machine's database file; "
            "use DATABASE_URL=postgresql://... to spread them over machines",
            role.value,
        )
    app = build(settings, role=role)
    server = web_app(app) if role.serves_webhooks else health_app(app)
    runner = web.AppRunner(server, access_log=None, **SERVER_OPTIONS)
    try:
        await runner.setup()
    except BaseException:
        await app.store.close()  # its thread would keep the process alive
        if app.session is not None:  # no "Unclosed client session" after the error line
            await app.session.close()
        raise
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    for line in describe(settings, role):
        logging.getLogger("ghapp").info(line)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


async def setup_then_run(config: SetupConfig) -> int:
    """Serve setup mode until the app is registered, then reload .env and serve normally."""
    if await serve_setup(config) is None:
        return 0  # stopped before the app was registered
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"ghapp: configuration error after setup: {exc}", file=sys.stderr)
        return 2
    if settings.app_id is None:
        print("ghapp: setup wrote .env but APP_ID is still unset", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format, settings.secrets)
    logging.getLogger("ghapp").info("GitHub App %s registered; serving", settings.app_id)
    await run(settings)
    return 0


def setup_mode(env: dict[str, str]) -> int:
    """No APP_ID yet: serve the page that registers the GitHub App (Probot's manifest flow)."""
    try:
        config = setup_config(env, Path.cwd())
    except ConfigError as exc:
        print(f"ghapp: configuration error: {exc}", file=sys.stderr)
        return 2
    os.umask(0o077)
    level = (env.get("LOG_LEVEL") or "info").lower()
    fmt = (env.get("LOG_FORMAT") or "text").lower()
    setup_logging(
        level if level in {"debug", "info", "warning", "error"} else "info",
        fmt if fmt in {"text", "json"} else "text",
    )
    return asyncio.run(setup_then_run(config))


def serve(role: Role = Role.ALL) -> int:
    """Run the webhook server, the runner and the bot on one loop until stopped."""
    env = environment()
    if not (env.get("APP_ID") or "").strip() and role.serves_webhooks:
        return setup_mode(env)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"ghapp: configuration error: {exc}", file=sys.stderr)
        return 2
    if settings.app_id is None:
        print(
            "ghapp: configuration error: APP_ID: required (register the GitHub App first)",
            file=sys.stderr,
        )
        return 2
    os.umask(0o077)
    setup_logging(settings.log_level, settings.log_format, settings.secrets)
    try:
        asyncio.run(run(settings, role))
    except GhappError as exc:  # a setting the host cannot satisfy: one line, no traceback
        print(f"ghapp: cannot start: {exc}", file=sys.stderr)
        return 2
    return 0


def migrate_store(target: str | None, source: str | None, replace: bool) -> int:
    """Copy the SQLite store into PostgreSQL and check the counts."""
    from ghapp.store.migrate import MigrationError, copy_store

    if not target or not target.startswith(POSTGRES_SCHEMES):
        print("ghapp: migrate-store needs --to postgresql://USER@HOST/DB", file=sys.stderr)
        return 2
    env = environment()
    if source is None:
        url = env.get("DATABASE_URL", "").strip()
        data_dir = env.get("MC_DATA_DIR", "").strip() or "data"
        source = url if url.startswith("sqlite:///") else f"sqlite:///{data_dir}/ghapp.sqlite3"
    if not source.startswith("sqlite:///"):
        print(f"ghapp: --from must be sqlite:///PATH, got {source!r}", file=sys.stderr)
        return 2
    path = Path(source.removeprefix("sqlite:///"))
    print(f"copying {path} into {target.split('@', 1)[-1]}")
    try:
        asyncio.run(copy_store(path, target, replace=replace))
    except (MigrationError, OSError) as exc:
        print(f"ghapp: migrate-store failed, nothing was changed: {exc}", file=sys.stderr)
        return 1
    print("done: point DATABASE_URL at PostgreSQL and start ghapp")
    return 0


async def prune_once(settings: Settings) -> tuple[PruneReport, dict[str, Any]]:
    """One retention sweep, as the daily one does it, and the disk use after it."""
    store = open_store(settings)
    await store.migrate()
    try:
        has_mirrors = (settings.data_dir / "mirrors").is_dir()
        vcs = GitWorkspace(settings.data_dir, settings.worker_user) if has_mirrors else None
        retention = Retention(store, settings.data_dir, settings.retention_days, SystemClock(), vcs)
        report = await retention.sweep()
    finally:
        await store.close()
    return report, await asyncio.to_thread(disk_usage, settings.data_dir)


def prune() -> int:
    """`python -m ghapp prune`: print what was removed and what the disk holds now."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"ghapp: configuration error: {exc}", file=sys.stderr)
        return 2
    if not settings.data_dir.is_dir():
        print(f"ghapp: no data dir at {settings.data_dir}: nothing to prune", file=sys.stderr)
        return 1
    report, usage = asyncio.run(prune_once(settings))
    print(f"pruned what is older than {settings.retention_days:g} days: {report}")
    print(
        f"{usage['path']}: {megabytes(usage['data_bytes'])} used, "
        f"{megabytes(usage['free_bytes'])} free of {megabytes(usage['total_bytes'])}"
    )
    return 0


def check_config(path: str | None) -> int:
    """Validate a `.github/ghapp.yml` the way a task would, against this environment's caps."""
    from ghapp.bootstrap import caps
    from ghapp.core.gate import SETTINGS_PATH, SettingsInvalid
    from ghapp.repo_settings import parse

    target = Path(path or SETTINGS_PATH)
    try:
        text = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"ghapp: cannot read {target}: {exc}", file=sys.stderr)
        return 2
    try:
        limits = caps(load_settings({**environment(), "WEBHOOK_SECRET": "check-config"}))
    except ConfigError as exc:
        print(f"ghapp: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        settings = parse(text, limits).settings
    except SettingsInvalid as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"{target}: valid")
    print(settings.describe())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ghapp",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "check", "prune", "migrate-store", "backup", "check-config"],
    )
    parser.add_argument(
        "path", nargs="?", help="check-config: the file (default .github/ghapp.yml)"
    )
    parser.add_argument(
        "--role",
        choices=[r.value for r in Role],
        default=Role.ALL.value,
        help="all (default): webhooks and tasks; web: webhooks only; worker: tasks only",
    )
    parser.add_argument(
        "--to",
        help="migrate-store: the PostgreSQL URL to copy into; backup: the file to write "
        "(default $MC_DATA_DIR/backups/ghapp-<time>.sqlite3)",
    )
    parser.add_argument(
        "--from",
        dest="source",
        help="migrate-store: sqlite:///PATH (default: DATABASE_URL or $MC_DATA_DIR/ghapp.sqlite3)",
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="migrate-store: empty a target that already holds data instead of refusing",
    )
    args = parser.parse_args(argv)
    if args.command == "check":
        return check.main()
    if args.command == "prune":
        return prune()
    if args.command == "backup":
        from ghapp.backup import main as backup

        return backup(args.to)
    if args.command == "check-config":
        return check_config(args.path)
    if args.command == "migrate-store":
        return migrate_store(args.to, args.source, args.replace)
    return serve(Role(args.role))


if __name__ == "__main__":
    sys.exit(main())
