"""`python -m ghapp`: serve (default; setup mode first when APP_ID is unset) or check."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from ghapp import check
from ghapp.bootstrap import build, describe, web_app
from ghapp.config import ConfigError, Settings, environment, load_settings
from ghapp.github.setup import SetupConfig, serve_setup, setup_config
from ghapp.logs import setup_logging


async def run(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM, then stop every part in order."""
    app = build(settings)
    runner = web.AppRunner(web_app(app), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    for line in describe(settings):
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


def serve() -> int:
    """Run the webhook server, the runner and the bot on one loop until stopped."""
    env = environment()
    if not (env.get("APP_ID") or "").strip():
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
    asyncio.run(run(settings))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ghapp", description=__doc__)
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "check"])
    args = parser.parse_args(argv)
    if args.command == "check":
        return check.main()
    return serve()


if __name__ == "__main__":
    sys.exit(main())
