"""GitHub's webhook signature and body shape, pure: the web layer checks them in the event
loop, or SQLite's delivery writer does in its own process, beside the write."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import IntEnum


class Verdict(IntEnum):
    """What intake made of a delivery; the values travel as bytes on the writer's pipe."""

    DUPLICATE = 0  # its id or its body was stored before
    NEW = 1
    UNSIGNED = 2  # the signature is missing or does not match WEBHOOK_SECRET
    NOT_OBJECT = 3  # signed, but not a JSON object


# Check and store one delivery: id, event, body, received_at, X-Hub-Signature-256.
Receive = Callable[[str, str, bytes, datetime, str | None], Awaitable[Verdict]]


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """sha256 HMAC of the raw body, compared in constant time; sha1 is not accepted."""
    if not header or not header.isascii() or not header.startswith("sha256="):
        return False  # compare_digest raises on non-ASCII text: that is a 401, not a 500
    expected = hmac.digest(secret.encode(), body, "sha256").hex()  # one-shot: no HMAC object
    return hmac.compare_digest(expected, header.removeprefix("sha256="))


def looks_like_object(body: bytes) -> bool:
    """A signed body is GitHub's: the inbox parses it (once); here only its shape is checked."""
    text = body.strip(b" \t\r\n")
    return text.startswith(b"{") and text.endswith(b"}")


def refusal(secret: str, body: bytes, header: str | None) -> Verdict | None:
    """Why a delivery must not be stored (unsigned first: a stranger learns nothing else)."""
    if not signature_ok(secret, body, header):
        return Verdict.UNSIGNED
    if not looks_like_object(body):
        return Verdict.NOT_OBJECT
    return None
