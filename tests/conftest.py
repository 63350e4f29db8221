"""Shared helpers: real GitHub payload fixtures and webhook signing."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

Client = TestClient[web.Request, web.Application]  # what aiohttp_client returns

FIXTURES = Path(__file__).parent / "fixtures" / "github"


def payload(name: str, **installation: Any) -> dict[str, Any]:
    """A copy of a real payload from tests/fixtures/github; adds an installation if asked."""
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    data = copy.deepcopy(data)
    if installation:
        data["installation"] = {"id": installation["id"], "node_id": "MDIz"}
    return data


def sign(secret: str, body: bytes) -> str:
    """The X-Hub-Signature-256 header GitHub would send."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_headers(secret: str, event: str, delivery: str, body: bytes) -> dict[str, str]:
    """Headers of a signed delivery."""
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": sign(secret, body),
        "User-Agent": "GitHub-Hookshot/test",
    }


def _dump_tasks(signum: int, frame: object) -> None:
    """On SIGUSR1, print every asyncio task's stack: what a hung test is waiting for."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        print("SIGUSR1: no running event loop", file=sys.stderr)
        return
    for task in asyncio.all_tasks(loop):
        print(f"--- {task!r}", file=sys.stderr)
        task.print_stack(limit=12, file=sys.stderr)


signal.signal(signal.SIGUSR1, _dump_tasks)
