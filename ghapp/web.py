"""aiohttp app: verify and store each webhook, answer at once, and report health."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from ghapp.core.model import utcnow
from ghapp.core.ports import TaskStore
from ghapp.github.signature import Receive, Verdict, refusal
from ghapp.inbox import Intake

log = logging.getLogger(__name__)
MAX_BODY = 25 * 1024 * 1024
# For the AppRunner: the HTTP parser must not inflate (or refuse with 400) a compressed body
# before the handler can answer 415; an unknown encoding would otherwise never reach it.
SERVER_OPTIONS: dict[str, Any] = {"auto_decompress": False}


@dataclass(frozen=True)
class WebDeps:
    """What the web layer needs; bootstrap provides it."""

    store: TaskStore
    secret: str
    webhook_path: str
    on_stored: Callable[[], None]
    health: Callable[[], Awaitable[dict[str, Any]]]
    start: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[None]]
    posts: Mapping[str, Callable[[web.Request], Awaitable[web.Response]]] = field(
        default_factory=dict
    )  # other adapters' endpoints, such as Slack's /slack/events
    intake: Intake = field(default_factory=Intake)  # the inbox waits while it is busy
    # Checks and stores a delivery; by default in this loop (verify_then_store). SQLite's
    # writer process does both off the loop, beside the write.
    receive: Receive | None = None


DEPS = web.AppKey("deps", WebDeps)
RECEIVE: web.AppKey[Receive] = web.AppKey("receive")


def verify_then_store(store: TaskStore, secret: str) -> Receive:
    """Check in the event loop, then store: where no writer process checks beside the write."""

    async def receive(
        delivery_id: str, event: str, body: bytes, received_at: datetime, header: str | None
    ) -> Verdict:
        refused = refusal(secret, body, header)
        if refused is not None:
            return refused
        if await store.add_delivery(delivery_id, event, body, received_at):
            return Verdict.NEW
        return Verdict.DUPLICATE

    return receive


def _printable(header: str) -> bool:
    return header.isascii() and header.isprintable()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def receive_webhook(request: web.Request) -> web.Response:
    """Store a verified delivery and answer 202; no GitHub or git work happens here."""
    deps = request.app[DEPS]
    deps.intake.in_flight += 1
    try:
        return await _take_in(request, deps)
    finally:
        deps.intake.in_flight -= 1


async def _take_in(request: web.Request, deps: WebDeps) -> web.Response:
    """Check, read, verify and store one delivery."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _error(413, "payload larger than 25 MB")
    if request.content_type != "application/json":
        return _error(415, "content type must be application/json")
    encodings = {e.strip().lower() for e in request.headers.getall("Content-Encoding", [])}
    if encodings - {"", "identity"}:
        # GitHub never compresses; inflating unsigned bytes first would be a 1000:1 bomb.
        return _error(415, "Content-Encoding must be identity (GitHub sends bodies uncompressed)")
    event = request.headers.get("X-GitHub-Event")
    delivery = request.headers.get("X-GitHub-Delivery")
    if not event or not delivery:
        return _error(400, "X-GitHub-Event and X-GitHub-Delivery headers are required")
    if not (_printable(event) and _printable(delivery)):  # GitHub sends a name and a GUID
        return _error(400, "X-GitHub-Event and X-GitHub-Delivery must be printable ASCII")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, "payload larger than 25 MB")
    except Exception:  # a body that does not decode (bad Content-Encoding, cut stream)
        return _error(400, "body could not be read")
    header = request.headers.get("X-Hub-Signature-256")
    verdict = await request.app[RECEIVE](delivery, event, body, utcnow(), header)
    if verdict is Verdict.UNSIGNED:
        return _error(401, "X-Hub-Signature-256 is missing or does not match WEBHOOK_SECRET")
    if verdict is Verdict.NOT_OBJECT:
        return _error(400, "body must be a JSON object")
    if verdict is Verdict.DUPLICATE:
        return _answer(200, b"duplicate", delivery)
    deps.on_stored()
    return _answer(202, b"accepted", delivery)


def _answer(status: int, word: bytes, delivery: str) -> web.Response:
    """json_response's bytes for every delivery, without its encoder round per request."""
    body = b'{"status": "%s", "delivery": %s}' % (word, json.dumps(delivery).encode())
    return web.Response(body=body, status=status, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    """Database, runner and queue depth; 503 when something is down."""
    report = await request.app[DEPS].health()
    return web.json_response(report, status=200 if report.get("ok") else 503)


def create_app(deps: WebDeps) -> web.Application:
    """The one aiohttp application; background parts start and stop with it."""
    app = web.Application(client_max_size=MAX_BODY)
    app[DEPS] = deps
    app[RECEIVE] = deps.receive or verify_then_store(deps.store, deps.secret)
    app.router.add_post(deps.webhook_path, receive_webhook)
    app.router.add_get("/healthz", healthz)
    for path, handler in deps.posts.items():
        app.router.add_post(path, handler)

    async def startup(_: web.Application) -> None:
        await deps.start()

    async def cleanup(_: web.Application) -> None:
        await deps.stop()

    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    return app
