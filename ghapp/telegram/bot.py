"""The embedded Telegram bot: PTB Application lifecycle on ghapp's loop, and the Messenger port."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from telegram import BotCommand, LinkPreviewOptions, Update
from telegram.error import Conflict, InvalidToken, TelegramError
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from ghapp.core.ports import LogReader, Notice, RepoAdmin
from ghapp.core.publish import Scrubber, inert
from ghapp.core.tasks import TaskService
from ghapp.endpoints import TELEGRAM_API_URL
from ghapp.messaging.console import DESCRIPTIONS, TELEGRAM, Console
from ghapp.messaging.text import render_notice, trim
from ghapp.telegram.outbox import Outbox, OutboxConfig

log = logging.getLogger(__name__)
_COMMAND = re.compile(r"/([A-Za-z0-9_]+)(?:@([A-Za-z0-9_]+))?(?:\s+(.*))?", re.DOTALL)
# The chat whose command is being handled: its reply already says what these notices would.
_REPLIED_KINDS = frozenset({"queued", "cancelled"})
_ORIGIN: contextvars.ContextVar[int | None] = contextvars.ContextVar("tg_origin", default=None)


def api_base(url: str) -> str:
    """PTB appends the token to base_url: accept a bare server URL as well as one ending /bot."""
    url = url.rstrip("/")
    return url if "{token}" in url or url.endswith("/bot") else url + "/bot"


@dataclass(frozen=True)
class BotConfig:
    """Polling and reconnection timing; production defaults, tests shrink them."""

    poll_timeout_s: int = 30
    connect_backoff_s: float = 2.0
    connect_backoff_max_s: float = 120.0
    request_timeout_s: float = 15.0
    stop_timeout_s: float = 5.0
    outbox: OutboxConfig = field(default_factory=OutboxConfig)


class TelegramBot:
    """Answers allowed chats' commands and delivers notices; Telegram down never blocks ghapp."""

    def __init__(
        self,
        token: str,
        chat_ids: Iterable[int],
        service: TaskService,
        log_reader: LogReader,
        *,
        api_url: str = TELEGRAM_API_URL,
        config: BotConfig | None = None,
        polling: bool = True,
        repos: RepoAdmin | None = None,
        secrets: Iterable[str] = (),
        user_ids: Iterable[int] = (),
    ) -> None:
        self.config = config or BotConfig()
        self._scrub = Scrubber(secrets)
        self._polling = polling  # False: send only, until an election makes this process poll
        self._ready = False
        self._poll_lock = asyncio.Lock()
        self.chat_ids = frozenset(chat_ids)
        self.user_ids = frozenset(user_ids)  # empty: every member of an allowed chat
        self.console = Console(service, log_reader, channel=TELEGRAM, repos=repos)
        timeout = self.config.request_timeout_s
        self.app = (
            Application.builder()
            .token(token)
            .base_url(api_base(api_url))
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .write_timeout(timeout)
            .get_updates_connect_timeout(timeout)
            .get_updates_read_timeout(timeout)
            .build()
        )
        self.app.add_handler(TypeHandler(Update, self._gate), group=-1)
        self.app.add_handler(
            MessageHandler(filters.UpdateType.MESSAGE & filters.TEXT, self._on_message)
        )
        self.app.add_error_handler(self._on_error)
        self.outbox = Outbox(self._send, sorted(self.chat_ids), self.config.outbox)
        self._connector: asyncio.Task[None] | None = None
        self._username: str | None = None

    @property
    def connected(self) -> bool:
        """True once the Bot API answered and polling runs."""
        return self.app.running

    @property
    def polling(self) -> bool:
        """True while this process fetches updates (only one process per token may)."""
        updater = self.app.updater
        return updater is not None and updater.running

    async def set_polling(self, on: bool) -> None:
        """Leader election hook: start or stop fetching updates; sending goes on either way."""
        self._polling = on
        if on and self._ready:
            await self._start_polling()
        elif not on:
            await self._stop_polling()

    async def _start_polling(self) -> None:
        """Begin long polling once; a second call while it runs does nothing."""
        async with self._poll_lock:
            updater = self.app.updater
            if updater is not None and not updater.running and self._polling:
                await updater.start_polling(
                    timeout=timedelta(seconds=self.config.poll_timeout_s),
                    allowed_updates=[Update.MESSAGE],
                    error_callback=self._on_poll_error,
                )

    async def _stop_polling(self) -> None:
        """End long polling; PTB may sleep out a backoff first, so it is bounded."""
        async with self._poll_lock:
            updater = self.app.updater
            if updater is not None and updater.running:
                try:
                    await asyncio.wait_for(updater.stop(), self.config.stop_timeout_s)
                except TimeoutError:
                    log.warning("Telegram polling did not stop in time; cancelled it")

    async def start(self) -> None:
        """Start sending and connect in the background; never fails ghapp's start."""
        if not self.chat_ids:
            log.warning("TELEGRAM_CHAT_IDS is empty: the bot answers and notifies no one")
        httpx_log = logging.getLogger("httpx")
        if httpx_log.level == logging.NOTSET:
            httpx_log.setLevel(logging.WARNING)  # one INFO line per long poll otherwise
        self.outbox.start()
        self._connector = asyncio.create_task(self._connect(), name="ghapp-telegram-connect")

    async def stop(self) -> None:
        """Stop in reverse: connector, outbox (short flush), polling, the application."""
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        await self.outbox.stop()
        try:
            await self._stop_polling()  # bounded: PTB sleeps out its backoff while Telegram is down
            if self.app.running:
                await self.app.stop()
            await self.app.shutdown()
            await self.app.bot.shutdown()  # closes HTTP clients even if getMe never succeeded
        except Exception:
            log.exception("stopping the Telegram bot failed")

    async def notify(self, notice: Notice) -> None:
        """Messenger port: queue the notice for every allowed chat and return at once."""
        try:
            skip = _ORIGIN.get() if notice.kind in _REPLIED_KINDS else None
            self.outbox.broadcast(render_notice(notice), skip=skip)
        except Exception:
            log.exception("could not queue a Telegram notice %s", notice.kind)

    async def _connect(self) -> None:
        """initialize, start polling, start; on failure retry with backoff until it works."""
        delay = self.config.connect_backoff_s
        while True:
            try:
                await self.app.initialize()
                self._username = self.app.bot.username
                self.outbox.ready.set()
                await self._start_polling()
                if not self.app.running:
                    await self.app.start()
                self._ready = True
                await self._start_polling()  # an election may have been won meanwhile
            except InvalidToken:
                log.error("Telegram rejected TELEGRAM_BOT_TOKEN; the bot stays off")
                return
            except TelegramError as exc:
                log.warning("Telegram is unreachable (%s); retrying in %.0f s", exc.message, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.connect_backoff_max_s)
                continue
            log.info(
                "Telegram bot @%s connected (%s)",
                self._username,
                "polling" if self.polling else "sending only",
            )
            await self._set_commands()
            return

    async def _set_commands(self) -> None:
        """Best effort: the command menu is a convenience."""
        commands = [BotCommand(name, text) for name, text in DESCRIPTIONS.items()]
        try:
            await self.app.bot.set_my_commands(commands)
        except TelegramError as exc:
            log.warning("could not set the Telegram command menu: %s", exc.message)

    def _on_poll_error(self, exc: TelegramError) -> None:
        """PTB keeps polling with backoff; one line instead of a traceback per attempt."""
        if isinstance(exc, Conflict):
            log.error(
                "Telegram polling: another process polls this bot token (409 Conflict); "
                "run one ghapp per TELEGRAM_BOT_TOKEN, or share one PostgreSQL DATABASE_URL "
                "so only the elected process polls"
            )
            return
        log.warning("Telegram polling failed: %s", exc.message)

    async def _send(self, chat_id: int, text: str) -> None:
        """One plain-text message, inert and scrubbed; no link previews keep the chat compact."""
        await self.app.bot.send_message(
            chat_id=chat_id,
            text=trim(self._scrub(inert(text))),
            link_preview_options=LinkPreviewOptions(is_disabled=True),
        )

    async def _gate(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Only allowed chats (and, with TELEGRAM_USER_IDS, allowed users in them) get through;
        others get no answer and cause no action."""
        chat, user = update.effective_chat, update.effective_user
        if chat is not None and (chat.id in self.chat_ids or chat.id in self.outbox.moved.values()):
            if not self.user_ids or (user is not None and user.id in self.user_ids):
                return
        message = update.effective_message
        word = (message.text or "").split(maxsplit=1)[0][:40] if message and message.text else ""
        log.warning(
            "ignored Telegram update from chat %s (user %s): %r",
            chat.id if chat else None,
            user.id if user else None,
            word,
        )
        raise ApplicationHandlerStop

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Run a command and queue its reply to the chat it came from."""
        message, chat = update.effective_message, update.effective_chat
        if message is None or chat is None or not message.text:
            return
        match = _COMMAND.fullmatch(message.text.strip())
        if match is None:
            if chat.type == chat.PRIVATE:  # in a group, chatter is not meant for the bot
                self.outbox.put(chat.id, "Send /help for the commands.")
            return
        command, addressee, args = match.group(1), match.group(2), match.group(3) or ""
        if addressee and self._username and addressee.lower() != self._username.lower():
            return  # a command for another bot in a group
        user = update.effective_user
        requester = f"telegram:{user.username or user.id}" if user else f"telegram:{chat.id}"
        token = _ORIGIN.set(chat.id)
        try:
            reply = await self.console.handle(command, args, requester)
        except Exception:
            log.exception("Telegram command /%s failed", command)
            reply = f"Something went wrong running /{command}; the ghapp log has the details."
        finally:
            _ORIGIN.reset(token)
        self.outbox.put(chat.id, reply)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """PTB's last resort: log instead of PTB's own 'no error handlers' traceback."""
        log.error("Telegram handler error: %s", context.error)
