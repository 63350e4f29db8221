"""`python -m ghapp`: serve (default) or check the configuration."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from aiohttp import web

from ghapp import check
from ghapp.bootstrap import build, describe, web_app
from ghapp.config import ConfigError, Settings, load_settings
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


def serve() -> int:
    """Run the webhook server, the runner and the bot on one loop until stopped."""
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
