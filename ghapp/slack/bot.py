"""The Slack adapter: a Bolt AsyncApp on ghapp's aiohttp server (or Socket Mode), and notices."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from ghapp.core.model import TaskSource
from ghapp.core.ports import LogReader, Notice, RepoAdmin
from ghapp.core.tasks import TaskService
from ghapp.endpoints import SLACK_API_URL
from ghapp.messaging.console import Channel, Console
from ghapp.slack.blocks import MAX_TEXT, answer
from ghapp.slack.threads import ThreadRefs, Threads, ThreadsConfig

log = logging.getLogger(__name__)
EVENTS_PATH = "/slack/events"
MAX_BODY = 256 * 1024  # slash commands and button payloads are a few KB
_BUTTON = re.compile(r"^mc_(cancel|retry|logs)$")


@dataclass(frozen=True)
class SlackConfig:
    """Timeouts and retries; production defaults, tests shrink them."""

    request_timeout_s: int = 10
    rate_limit_retries: int = 2
    socket_ping_s: float = 10.0
    threads: ThreadsConfig = field(default_factory=ThreadsConfig)


class SlackBot:
    """Answers `/mc` and task buttons from allowed channels and users; posts task threads."""

    def __init__(
        self,
        token: str,
        channel_ids: Iterable[str],
        service: TaskService,
        log_reader: LogReader,
        *,
        signing_secret: str | None = None,
        app_token: str | None = None,
        user_ids: Iterable[str] = (),
        api_url: str = SLACK_API_URL,
        command: str = "/mc",
        socket: bool = True,
        repos: RepoAdmin | None = None,
        refs: ThreadRefs | None = None,
        config: SlackConfig | None = None,
    ) -> None:
        if app_token is None and not signing_secret:
            raise ValueError("HTTP mode needs the signing secret")
        self.config = config or SlackConfig()
        self.channel_ids = frozenset(channel_ids)
        self.user_ids = frozenset(user_ids)
        self.app_token = app_token
        self._socket_wanted = socket and app_token is not None
        channel = Channel("Slack", TaskSource.SLACK, f"{command} ", "slack", MAX_TEXT - 100)
        self.console = Console(service, log_reader, channel=channel, repos=repos)
        self.client = AsyncWebClient(
            token=token,
            base_url=api_url,
            timeout=self.config.request_timeout_s,
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(),
                AsyncRateLimitErrorRetryHandler(max_retry_count=self.config.rate_limit_retries),
            ],
        )
        self.app = AsyncApp(
            client=self.client,
            signing_secret=signing_secret or "",
            # Socket Mode has no HTTP requests to sign; the route answers 404 then.
            request_verification_enabled=app_token is None,
            logger=logging.getLogger("ghapp.slack.bolt"),
        )
        self.app.command(command)(self._on_command)
        self.app.action(_BUTTON)(self._on_button)
        self.threads = Threads(self.client, sorted(self.channel_ids), self.config.threads, refs)
        self._socket: AsyncSocketModeHandler | None = None
        self._connector: asyncio.Task[None] | None = None
        self._socket_lock = asyncio.Lock()
        self._started = False

    @property
    def socket_mode(self) -> bool:
        return self.app_token is not None

    @property
    def mode(self) -> str:
        """For /healthz: http, socket (this process holds the connection) or standby."""
        if not self.socket_mode:
            return "http"
        return "socket" if self._socket is not None else "standby"

    async def start(self) -> None:
        """Start the senders; in Socket Mode connect in the background. Never fails start-up."""
        if not self.channel_ids:
            log.warning("SLACK_CHANNEL_IDS is empty: Slack answers and notifies no one")
        self.threads.start()
        self._started = True
        if self._socket_wanted:
            await self._open_socket()

    async def stop(self) -> None:
        await self._close_socket()
        await self.threads.stop()

    async def notify(self, notice: Notice) -> None:
        """Messenger port: queue the notice for every allowed channel and return at once."""
        try:
            self.threads.put(notice)
        except Exception:
            log.exception("could not queue a Slack notice %s", notice.kind)

    # -- Socket Mode, held by one process of a cluster -------------------------------------
    async def set_socket(self, on: bool) -> None:
        """Leader election hook: open or close the Socket Mode connection."""
        self._socket_wanted = on and self.socket_mode
        if self._socket_wanted and self._started:
            await self._open_socket()
        elif not on:
            await self._close_socket()

    async def _open_socket(self) -> None:
        async with self._socket_lock:
            if self._socket is not None or self.app_token is None:
                return
            self._socket = AsyncSocketModeHandler(
                self.app, self.app_token, ping_interval=self.config.socket_ping_s
            )
            # connect_async retries until Slack answers: in the background, never blocking.
            self._connector = asyncio.create_task(
                self._socket.connect_async(),  # type: ignore[no-untyped-call]
                name="ghapp-slack-socket",
            )
            log.info("Slack Socket Mode: connecting")

    async def _close_socket(self) -> None:
        async with self._socket_lock:
            if self._connector is not None:
                self._connector.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._connector
                self._connector = None
            if self._socket is not None:
                try:
                    await self._socket.close_async()  # type: ignore[no-untyped-call]
                except Exception:
                    log.exception("closing the Slack socket failed")
                self._socket = None

    # -- HTTP mode ------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.Response:
        """POST /slack/events: Bolt verifies the signature (401 when bad or stale) and acks."""
        if self.socket_mode:
            return web.json_response({"error": "this ghapp uses Socket Mode"}, status=404)
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.json_response({"error": "body too large"}, status=413)
        try:
            bolt_request = await to_bolt_request(request)
        except Exception:
            return web.json_response({"error": "body could not be read"}, status=400)
        return await to_aiohttp_response(await self.app.async_dispatch(bolt_request))

    # -- listeners ------------------------------------------------------------------------
    def _refusal(self, channel: str | None, user: str | None) -> str | None:
        """Why this channel or user may not command ghapp; None when allowed."""
        if channel not in self.channel_ids:
            log.warning("refused Slack request from channel %s (user %s)", channel, user)
            return "MissionControl does not take commands in this channel."
        if self.user_ids and user not in self.user_ids:
            log.warning("refused Slack request from user %s in %s", user, channel)
            return "You are not allowed to command MissionControl."
        return None

    async def _on_command(
        self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond
    ) -> None:
        """`/mc <command> <args>`: ack at once, then answer through the response URL."""
        channel, user = command.get("channel_id"), command.get("user_id")
        refusal = self._refusal(channel, user)
        if refusal is not None:
            await ack(text=refusal, response_type="ephemeral")
            return
        await ack()
        word, _, args = str(command.get("text") or "").strip().partition(" ")
        name = word.lstrip("/").lower() or "help"
        reply = await self.console.run(name, args, f"slack:{user}")
        await self._respond(respond, answer(reply.text, name, reply.ok), reply.ok)

    async def _on_button(self, ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        """Cancel, Retry or Logs on a task message, checked like a command, answered privately."""
        await ack()
        channel = (body.get("channel") or {}).get("id")
        user = (body.get("user") or {}).get("id")
        refusal = self._refusal(channel, user)
        if refusal is not None:
            await self._respond(respond, refusal, False)
            return
        for action in body.get("actions") or []:
            match = _BUTTON.match(str(action.get("action_id", "")))
            if match is None:
                continue
            name = match.group(1)
            reply = await self.console.run(name, str(action.get("value", "")), f"slack:{user}")
            await self._respond(respond, answer(reply.text, name, reply.ok), False)

    async def _respond(self, respond: AsyncRespond, text: str, public: bool) -> None:
        """Answer in the channel, or only to the user; Slack being down is logged, not raised."""
        try:
            await respond(
                text=text,
                response_type="in_channel" if public else "ephemeral",
                replace_original=False,
            )
        except Exception as exc:
            log.warning("could not answer on Slack: %s", exc)
