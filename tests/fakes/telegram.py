"""A fake Telegram Bot API on loopback, reached by the real python-telegram-bot over HTTP."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

Mode = Literal["up", "502", "refuse"]
MAX_TEXT = 4096


@dataclass
class Sent:
    """A message the bot sent (or edited)."""

    chat_id: int
    text: str
    message_id: int
    at: float = field(default_factory=time.monotonic)


@dataclass
class FakeTelegram:
    """Speaks /bot<token>/<method>; tests inject updates and read what the bot sent."""

    token: str = "123456:TEST-token"
    username: str = "ghapp_test_bot"
    host: str = "127.0.0.1"
    port: int = 0
    sent: list[Sent] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    mode: Mode = "up"
    flood: list[int] = field(default_factory=list)  # retry_after of the next sendMessage calls
    blocked: set[int] = field(default_factory=set)  # users who blocked the bot: 403
    known_chats: set[int] | None = None  # when set, any other chat id: 400 chat not found
    migrated: dict[int, int] = field(default_factory=dict)  # group -> its new supergroup id
    conflicts: int = 0  # getUpdates calls cut short by a newer one (409)
    _poll: asyncio.Future[None] | None = None  # the getUpdates in flight
    _updates: list[dict[str, Any]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _message_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(100))
    _changed: asyncio.Condition | None = None
    _runner: web.AppRunner | None = None
    _site: web.TCPSite | None = None
    _closing: bool = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to give PTB's base_url (it appends the token)."""
        return f"{self.url}/bot"

    async def start(self) -> None:
        self._changed = asyncio.Condition()
        app = web.Application(middlewares=[self._outage])
        app.router.add_post("/bot{token}/{method}", self._dispatch)
        app.router.add_get("/bot{token}/{method}", self._dispatch)
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
        self._closing = True
        await self._wake()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- test controls --------------------------------------------------------------------
    async def down(self, mode: Mode = "refuse") -> None:
        """502 for every call, or refuse connections (the listening socket is closed)."""
        self.mode = mode
        if mode == "refuse" and self._site is not None:
            await self._site.stop()
            self._site = None
        await self._wake()

    async def up(self) -> None:
        """Answer again."""
        if self._site is None:
            await self._listen()
        self.mode = "up"
        await self._wake()

    async def _wake(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def inject(
        self,
        chat_id: int,
        text: str,
        user_id: int | None = None,
        username: str = "operator",
        chat_type: str = "private",
    ) -> int:
        """Queue a text message from a chat, as a user would send it; returns its update_id."""
        update_id = next(self._ids)
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": chat_type, "first_name": "Op"},
            "from": {
                "id": user_id or chat_id,
                "is_bot": False,
                "first_name": "Op",
                "username": username,
            },
            "text": text,
        }
        if text.startswith("/"):
            word = text.split(maxsplit=1)[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(word)}]
        self._updates.append({"update_id": update_id, "message": message})
        await self._wake()
        return update_id

    def texts(self, chat_id: int | None = None) -> list[str]:
        return [s.text for s in self.sent if chat_id is None or s.chat_id == chat_id]

    def method_calls(self, method: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == method]

    async def wait_for(
        self, predicate: Callable[[list[Sent]], bool], within: float = 10.0
    ) -> list[Sent]:
        """Wait until what was sent satisfies the predicate."""
        deadline = asyncio.get_running_loop().time() + within
        while not predicate(self.sent):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out; sent so far: {[s.text for s in self.sent]}")
            await asyncio.sleep(0.01)
        return self.sent

    async def wait_text(self, needle: str, chat_id: int | None = None, within: float = 10.0) -> str:
        """The first sent text containing needle (in that chat), waiting for it."""
        await self.wait_for(
            lambda sent: any(
                needle in s.text and (chat_id is None or s.chat_id == chat_id) for s in sent
            ),
            within,
        )
        return next(t for t in self.texts(chat_id) if needle in t)

    # -- protocol ---------------------------------------------------------------------------
    @web.middleware
    async def _outage(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.mode == "502":
            return web.Response(status=502, text="<html>502 Bad Gateway</html>")
        if self.mode == "refuse":
            if request.transport is not None:
                request.transport.close()  # a kept-alive connection dies like a refused one
            raise web.HTTPServiceUnavailable
        response: web.StreamResponse = await handler(request)
        return response

    @staticmethod
    def _ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def _error(code: int, description: str, **parameters: Any) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        if parameters:
            body["parameters"] = parameters
        return web.json_response(body, status=code)

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            data = await request.json()
            return dict(data) if isinstance(data, dict) else {}
        form = await request.post()
        params: dict[str, Any] = dict(request.query)
        for key, value in form.items():
            params[key] = value if isinstance(value, str) else str(value)
        return params

    def _me(self) -> dict[str, Any]:
        return {
            "id": int(self.token.split(":")[0]),
            "is_bot": True,
            "first_name": "ghapp",
            "username": self.username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _dispatch(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return self._error(401, "Unauthorized")
        method = request.match_info["method"]
        params = await self._params(request)
        self.calls.append((method, params))
        if method == "getMe":
            return self._ok(self._me())
        if method == "getUpdates":
            return await self._get_updates(request, params)
        if method == "sendMessage":
            return self._send_message(params)
        if method == "editMessageText":
            return self._edit_message(params)
        if method in ("setMyCommands", "deleteWebhook", "deleteMyCommands", "close"):
            return self._ok(True)
        if method == "getWebhookInfo":
            return self._ok({"url": "", "has_custom_certificate": False, "pending_update_count": 0})
        return self._error(404, "Not Found")

    async def _get_updates(self, request: web.Request, params: dict[str, Any]) -> web.Response:
        # Like Telegram: a newer getUpdates ends the one in flight with 409 Conflict.
        kicked = self._poll
        self._poll = poll = asyncio.get_running_loop().create_future()
        if kicked is not None and not kicked.done():
            kicked.set_result(None)
            await self._wake()
        try:
            return await self._long_poll(request, params, poll)
        finally:
            if self._poll is poll:
                self._poll = None

    async def _long_poll(
        self, request: web.Request, params: dict[str, Any], poll: asyncio.Future[None]
    ) -> web.Response:
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        limit = int(params.get("limit") or 100)
        if offset:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        assert self._changed is not None
        deadline = asyncio.get_running_loop().time() + timeout
        async with self._changed:
            while not self._updates and self.mode == "up" and not self._closing:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0 or poll.done():
                    break
                try:  # woken by new updates, a mode change or a newer getUpdates
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except TimeoutError:
                    break
        if poll.done():
            self.conflicts += 1
            return self._error(
                409,
                "Conflict: terminated by other getUpdates request; "
                "make sure that only one bot instance is running",
            )
        if self.mode == "refuse" and request.transport is not None:
            request.transport.close()
        if self.mode != "up":
            raise web.HTTPBadGateway
        return self._ok(self._updates[:limit])

    def _message(self, chat_id: int, text: str, message_id: int) -> dict[str, Any]:
        return {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private", "first_name": "Op"},
            "from": self._me(),
            "text": text,
        }

    def _send_message(self, params: dict[str, Any]) -> web.Response:
        if self.flood:
            wait = self.flood.pop(0)
            return self._error(429, f"Too Many Requests: retry after {wait}", retry_after=wait)
        text = str(params.get("text") or "")
        if not text.strip():
            return self._error(400, "Bad Request: message text is empty")
        if len(text.encode("utf-16-le")) // 2 > MAX_TEXT:
            return self._error(400, "Bad Request: message is too long")
        try:
            chat_id = int(params["chat_id"])
        except (KeyError, ValueError):
            return self._error(400, "Bad Request: chat not found")
        if chat_id in self.migrated:
            return self._error(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                migrate_to_chat_id=self.migrated[chat_id],
            )
        if chat_id in self.blocked:
            return self._error(403, "Forbidden: bot was blocked by the user")
        if self.known_chats is not None and chat_id not in self.known_chats:
            return self._error(400, "Bad Request: chat not found")
        sent = Sent(chat_id, text, next(self._message_ids))
        self.sent.append(sent)
        return self._ok(self._message(chat_id, text, sent.message_id))

    def _edit_message(self, params: dict[str, Any]) -> web.Response:
        text = str(params.get("text") or "")
        if len(text.encode("utf-16-le")) // 2 > MAX_TEXT:
            return self._error(400, "Bad Request: message is too long")
        message_id = int(params.get("message_id") or 0)
        for sent in self.sent:
            if sent.message_id == message_id:
                if sent.text == text:
                    return self._error(
                        400,
                        "Bad Request: message is not modified: specified new message content "
                        "and reply markup are exactly the same as a current content and reply "
                        "markup of the message",
                    )
                sent.text = text
                return self._ok(self._message(sent.chat_id, text, message_id))
        return self._error(400, "Bad Request: message to edit not found")


def decode(value: Any) -> Any:
    """A form field as PTB encodes it (JSON for anything but a string)."""
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


class NamingTelegram(FakeTelegram):
    """The fake Bot API, reachable at /<caller>/bot<token>/...: it records who polled when."""

    def __init__(self) -> None:
        super().__init__()
        self.polls: list[tuple[str, float]] = []

    def api_url(self, caller: str) -> str:
        return f"{self.url}/{caller}"

    async def start(self) -> None:
        self._changed = asyncio.Condition()
        app = web.Application(middlewares=[self._outage])
        app.router.add_route("*", "/{caller}/bot{token}/{method}", self._named)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await self._listen()

    async def _named(self, request: web.Request) -> web.Response:
        if request.match_info["method"] == "getUpdates":
            self.polls.append((request.match_info["caller"], time.monotonic()))
        return await self._dispatch(request)

    def pollers(self, since: float = 0.0, until: float = float("inf")) -> set[str]:
        """Who called getUpdates in a time window."""
        return {who for who, at in self.polls if since <= at <= until}
