"""Shared helpers: real GitHub payload fixtures and webhook signing."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

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
