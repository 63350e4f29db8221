"""Where the tests find the sandbox user and the pinned Claude CLI; a missing one fails the run.

A root, CLI, PostgreSQL or browser test that cannot run is a failure, so a run that
silently skipped the suite's strongest tests never passes. A developer machine opts out
explicitly with MC_TEST_ALLOW_SKIPS=1 (never honoured under CI=true).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
CLAUDE_BIN = ROOT / ".tools" / "node_modules" / ".bin" / "claude"
WORKER_USER = os.environ.get("MC_TEST_WORKER_USER", "mc-worker")
IN_CI = os.environ.get("CI", "").lower() == "true"
ALLOW_SKIPS = os.environ.get("MC_TEST_ALLOW_SKIPS") == "1" and not IN_CI


def _unavailable(reason: str) -> None:
    """Fail: the prerequisite is missing. Skip only where the caller opted out explicitly."""
    if not ALLOW_SKIPS:
        pytest.fail(
            f"{reason}: run tests/run.sh as root to install it, or set MC_TEST_ALLOW_SKIPS=1 "
            "on a developer machine to skip such tests"
        )
    pytest.skip(reason)


def require_claude() -> Path:
    """Path of the pinned Claude Code CLI installed by tests/run.sh."""
    if not CLAUDE_BIN.exists():
        _unavailable(f"Claude Code CLI not installed at {CLAUDE_BIN}")
    return CLAUDE_BIN


def require_sandbox_user() -> str:
    """Name of the sandbox OS user; needs root to switch to it."""
    if os.geteuid() != 0:
        _unavailable("switching to the sandbox user needs root")
    try:
        pwd.getpwnam(WORKER_USER)
    except KeyError:
        _unavailable(f"sandbox user {WORKER_USER!r} does not exist")
    return WORKER_USER


def require_git_http_backend() -> Path:
    """git's smart-HTTP CGI, shipped with Debian's git package."""
    exec_path = Path(os.popen("git --exec-path").read().strip())
    backend = exec_path / "git-http-backend"
    if not backend.exists() or shutil.which("git") is None:
        _unavailable("git http-backend not found")
    return backend


@contextlib.asynccontextmanager
async def host_page(text: str) -> AsyncIterator[int]:
    """A page on the host's loopback (its port), which a sandbox reaches only through a proxy."""

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=text)

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()
