"""A fake Slack on loopback: Web API, response URLs, Socket Mode, and signed requests to ghapp.

The real slack_sdk / slack-bolt talk to it over HTTP and websockets; tests read what was
posted and play Slack's side (a slash command, a button press) with real signatures.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

Mode = Literal["up", "503", "refuse"]
SECRET = "slack-signing-secret-for-tests"
BOT_TOKEN = "xoxb-1111-2222-fake"
APP_TOKEN = "xapp-1-A111-fake"
TEAM = "T0TEAM"
ALLOWED = "C0ALLOWED"
OTHER = "C0OTHER"
USER = "U0OPERATOR"


@dataclass
class Message:
    """A message the bot posted with chat.postMessage, as chat.update left it."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    updates: int = 0
    at: float = field(default_factory=time.monotonic)

    def buttons(self) -> list[str]:
        """action_ids of the message's buttons."""
        return [
            e["action_id"]
            for b in self.blocks
            if b.get("type") == "actions"
            for e in b.get("elements", [])
        ]

    def all_text(self) -> str:
        parts = [self.text]
        for block in self.blocks:
            text = block.get("text")
            if isinstance(text, dict):
                parts.append(str(text.get("text", "")))
        return "\n".join(parts)


@dataclass
class Response:
    """What ghapp POSTed to a response_url (respond())."""

    key: str
    body: dict[str, Any]

    @property
    def raw(self) -> str:
        return str(self.body.get("text", ""))

    @property
    def text(self) -> str:
        """As the user reads it: Slack shows &lt; &gt; &amp; as the characters."""
        return self.raw.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")

    @property
    def ephemeral(self) -> bool:
        kind: object = self.body.get("response_type", "ephemeral")
        return kind == "ephemeral"


def signed_headers(body: str, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    """X-Slack-Signature and X-Slack-Request-Timestamp as Slack computes them."""
    stamp = str(int(time.time() if at is None else at))
    digest = hmac.new(secret.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


@dataclass
class FakeSlack:
    """Speaks /api/<method> and /respond/<key>; Socket Mode on /socket."""

    host: str = "127.0.0.1"
    port: int = 0
    messages: list[Message] = field(default_factory=list)
    ephemerals: list[dict[str, Any]] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    mode: Mode = "up"
    rate_limits: list[float] = field(default_factory=list)  # Retry-After of the next posts
    acks: list[dict[str, Any]] = field(default_factory=list)  # Socket Mode acks received
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    socket_opens: int = 0
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    _site: web.TCPSite | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._outage])
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/respond/{key}", self._respond)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self.port)
        await self._site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- test controls ----------------------------------------------------------------------
    async def down(self, mode: Mode = "refuse") -> None:
        """503 for every call, or refuse connections (the listening socket is closed)."""
        self.mode = mode
        if mode == "refuse" and self._site is not None:
            await self._site.stop()
            self._site = None

    async def up(self) -> None:
        if self._site is None:
            await self._listen()
        self.mode = "up"

    def parents(self, channel: str | None = None) -> list[Message]:
        """Channel messages (not thread replies)."""
        return [m for m in self.messages if m.thread_ts is None and channel in (None, m.channel)]

    def thread(self, parent: Message) -> list[Message]:
        return [
            m for m in self.messages if m.thread_ts == parent.ts and m.channel == parent.channel
        ]

    def parent_of_task(self, task_id: int, channel: str = ALLOWED) -> Message | None:
        """The channel message that heads a task's thread (its text names the task)."""
        return next((m for m in self.parents(channel) if f"Task #{task_id} " in m.text), None)

    def method_calls(self, method: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == method]

    async def wait_for(self, predicate: Callable[[], object], within: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                shown = [(m.channel, m.thread_ts, m.text[:80]) for m in self.messages]
                raise AssertionError(f"timed out; messages so far: {shown}, {self.responses}")
            await asyncio.sleep(0.02)

    # -- Slack's side of ghapp's endpoint ------------------------------------------------------
    def command_body(
        self, text: str, channel: str = ALLOWED, user: str = USER, command: str = "/mc"
    ) -> str:
        """A slash command's form body, with a response_url that lands here."""
        return urlencode(
            {
                "token": "deprecated-verification-token",
                "team_id": TEAM,
                "team_domain": "example",
                "channel_id": channel,
                "channel_name": "ops",
                "user_id": user,
                "user_name": "operator",
                "command": command,
                "text": text,
                "api_app_id": "A0APP",
                "response_url": f"{self.url}/respond/{uuid.uuid4().hex}",
                "trigger_id": "1.2.3",
            }
        )

    def button_body(
        self,
        action: str,
        task_id: int,
        message: Message | None = None,
        channel: str = ALLOWED,
        user: str = USER,
    ) -> str:
        """A block_actions payload for a press of one of a task message's buttons."""
        payload = {
            "type": "block_actions",
            "team": {"id": TEAM, "domain": "example"},
            "user": {"id": user, "username": "operator", "team_id": TEAM},
            "api_app_id": "A0APP",
            "token": "deprecated-verification-token",
            "container": {
                "type": "message",
                "message_ts": message.ts if message else "1.0",
                "channel_id": channel,
            },
            "trigger_id": "1.2.3",
            "channel": {"id": channel, "name": "ops"},
            "message": {
                "ts": message.ts if message else "1.0",
                "text": "",
                "blocks": message.blocks if message else [],
            },
            "response_url": f"{self.url}/respond/{uuid.uuid4().hex}",
            "actions": [
                {
                    "type": "button",
                    "action_id": f"mc_{action}",
                    "block_id": "b",
                    "value": str(task_id),
                    "text": {"type": "plain_text", "text": action},
                    "action_ts": str(time.time()),
                }
            ],
        }
        return urlencode({"payload": json.dumps(payload)})

    async def post_to(
        self,
        url: str,
        body: str,
        *,
        secret: str = SECRET,
        at: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, float]:
        """POST a signed request to ghapp as Slack does; (status, body, seconds to answer)."""
        sent = signed_headers(body, secret, at)
        sent.update(headers or {})
        started = time.monotonic()
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=body.encode(), headers=sent) as resp:
                text = await resp.text()
                return resp.status, text, time.monotonic() - started

    # -- Socket Mode ----------------------------------------------------------------------------
    async def push(self, payload: dict[str, Any], kind: str = "slash_commands") -> str:
        """Send an envelope to every connected socket; returns its envelope_id."""
        envelope_id = uuid.uuid4().hex
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind == "slash_commands",
        }
        for ws in list(self.sockets):
            await ws.send_str(json.dumps(envelope))
        return envelope_id

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_str(
            json.dumps({"type": "hello", "num_connections": len(self.sockets), "debug_info": {}})
        )
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    if "envelope_id" in data:
                        self.acks.append(data)
        finally:
            self.sockets.remove(ws)
        return ws

    # -- Web API ------------------------------------------------------------------------------
    @web.middleware
    async def _outage(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.mode == "503":
            return web.Response(status=503, text="<html>503 Service Unavailable</html>")
        if self.mode == "refuse":
            if request.transport is not None:
                request.transport.close()
            raise web.HTTPServiceUnavailable
        response: web.StreamResponse = await handler(request)
        return response

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            data = await request.json()
            return dict(data) if isinstance(data, dict) else {}
        form = await request.post()
        params: dict[str, Any] = dict(request.query)
        params.update({k: str(v) for k, v in form.items()})
        for key in ("blocks",):
            if isinstance(params.get(key), str):
                params[key] = json.loads(params[key])
        return params

    @staticmethod
    def _error(
        error: str, status: int = 200, headers: dict[str, str] | None = None
    ) -> web.Response:
        return web.json_response({"ok": False, "error": error}, status=status, headers=headers)

    def _next_ts(self) -> str:
        return f"{1_700_000_000 + next(self._ts)}.000100"

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        self.calls.append((method, params))
        auth = request.headers.get("Authorization", "")
        if method == "apps.connections.open":
            if auth != f"Bearer {APP_TOKEN}":
                return self._error("invalid_auth")
            self.socket_opens += 1
            return web.json_response({"ok": True, "url": f"ws://{self.host}:{self.port}/socket"})
        if auth != f"Bearer {BOT_TOKEN}":
            return self._error("not_authed" if not auth else "invalid_auth")
        if method == "auth.test":
            return web.json_response(
                {
                    "ok": True,
                    "url": "https://example.slack.com/",
                    "team": "Example",
                    "user": "ghapp",
                    "team_id": TEAM,
                    "user_id": "U0BOT",
                    "bot_id": "B0BOT",
                }
            )
        if method in ("chat.postMessage", "chat.update") and self.rate_limits:
            wait = self.rate_limits.pop(0)
            return self._error("ratelimited", 429, {"Retry-After": f"{wait:g}"})
        if method == "chat.postMessage":
            return self._post_message(params)
        if method == "chat.update":
            return self._update(params)
        if method == "chat.postEphemeral":
            self.ephemerals.append(params)
            return web.json_response({"ok": True, "message_ts": self._next_ts()})
        return self._error("unknown_method", 404)

    def _post_message(self, params: dict[str, Any]) -> web.Response:
        channel, text = str(params.get("channel", "")), str(params.get("text") or "")
        blocks = params.get("blocks") or []
        if not channel.startswith(("C", "G", "D")):
            return self._error("channel_not_found")
        if not text and not blocks:
            return self._error("no_text")
        if len(text) > 40_000 or any(len(json.dumps(b)) > 3100 for b in blocks):
            return self._error("msg_too_long")
        thread = params.get("thread_ts")
        if thread is not None and not any(
            m.ts == thread and m.channel == channel for m in self.messages
        ):
            return self._error("thread_not_found")
        message = Message(channel, self._next_ts(), text, list(blocks), thread)
        self.messages.append(message)
        return web.json_response({"ok": True, "channel": channel, "ts": message.ts})

    def _update(self, params: dict[str, Any]) -> web.Response:
        channel, ts = str(params.get("channel", "")), str(params.get("ts", ""))
        for message in self.messages:
            if message.channel == channel and message.ts == ts:
                message.text = str(params.get("text") or message.text)
                if "blocks" in params:
                    message.blocks = list(params["blocks"] or [])
                message.updates += 1
                return web.json_response({"ok": True, "channel": channel, "ts": ts})
        return self._error("message_not_found")

    async def _respond(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.responses.append(Response(request.match_info["key"], dict(body)))
        return web.Response(text="ok")
