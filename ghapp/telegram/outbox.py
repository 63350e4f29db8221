"""Per-chat paced delivery, so a slow or absent Telegram never blocks the runner or a webhook."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
)
from telegram.warnings import PTBDeprecationWarning

from ghapp.telegram.render import split

log = logging.getLogger(__name__)
Send = Callable[[int, str], Awaitable[None]]


@dataclass(frozen=True)
class OutboxConfig:
    """Pacing and retry limits; tests shrink them."""

    interval_s: float = 1.0
    max_queue: int = 200
    max_attempts: int = 5
    backoff_s: float = 2.0
    backoff_max_s: float = 60.0
    max_retry_after_s: float = 600.0
    flush_s: float = 3.0


def retry_after_s(exc: RetryAfter) -> float:
    """Seconds Telegram asked to wait, without PTB's int-vs-timedelta deprecation warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class Outbox:
    """One bounded queue and one sender per chat; `put` never waits."""

    def __init__(self, send: Send, chat_ids: Iterable[int], config: OutboxConfig) -> None:
        self._send = send
        self.config = config
        self.ready = asyncio.Event()
        self._queues: dict[int, asyncio.Queue[str]] = {c: asyncio.Queue() for c in chat_ids}
        self._next: dict[int, float] = {}
        self.moved: dict[int, int] = {}  # a group that became a supergroup -> its new id
        self._workers: list[asyncio.Task[None]] = []
        self.delivered = 0
        self.dropped = 0

    @property
    def chat_ids(self) -> list[int]:
        """The chats this outbox delivers to."""
        return list(self._queues)

    def put(self, chat_id: int, text: str) -> None:
        """Queue a text for one chat, split under Telegram's limit; drop the oldest when full."""
        chat_id = next((old for old, new in self.moved.items() if new == chat_id), chat_id)
        queue = self._queues.get(chat_id)
        if queue is None:
            log.warning("not sending to chat %s: it is not an allowed chat", chat_id)
            return
        for part in split(text):
            if queue.qsize() >= self.config.max_queue:
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                    queue.task_done()
                    self.dropped += 1
                    log.warning("Telegram outbox for chat %s is full; dropped the oldest", chat_id)
            queue.put_nowait(part)

    def broadcast(self, text: str, skip: int | None = None) -> None:
        """Queue a text for every chat but `skip`."""
        for chat_id in self._queues:
            if chat_id != skip:
                self.put(chat_id, text)

    def start(self) -> None:
        """Start one sender per chat."""
        for chat_id in self._queues:
            self._workers.append(
                asyncio.create_task(self._work(chat_id), name=f"ghapp-telegram-out-{chat_id}")
            )

    async def idle(self) -> None:
        """Wait until every queued message was delivered or dropped."""
        await asyncio.gather(*(q.join() for q in self._queues.values()))

    async def stop(self) -> None:
        """Give queued messages a short chance to go out, then stop the senders."""
        if self.ready.is_set() and self._workers:
            joins = [asyncio.create_task(q.join()) for q in self._queues.values()]
            _, pending = await asyncio.wait(joins, timeout=self.config.flush_s)
            for task in pending:
                task.cancel()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
        left = sum(q.qsize() for q in self._queues.values())
        if left:
            log.warning("Telegram outbox stopped with %d undelivered messages", left)

    async def _work(self, chat_id: int) -> None:
        queue = self._queues[chat_id]
        while True:
            text = await queue.get()
            try:
                await self.ready.wait()
                await self._deliver(chat_id, text)
            finally:
                queue.task_done()

    async def _pace(self, chat_id: int) -> None:
        """About one message a second per chat, and never before a 429's retry_after."""
        loop = asyncio.get_running_loop()
        wait = self._next.get(chat_id, 0.0) - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _deliver(self, chat_id: int, text: str) -> None:
        """Send with bounded retries; log and drop what cannot be delivered."""
        loop = asyncio.get_running_loop()
        delay = self.config.backoff_s
        attempts = self.config.max_attempts
        for attempt in range(1, attempts + 1):
            await self._pace(chat_id)
            try:
                await self._send(self.moved.get(chat_id, chat_id), text)
            except RetryAfter as exc:
                wait = min(retry_after_s(exc), self.config.max_retry_after_s)
                log.warning("Telegram flood control for chat %s: waiting %.0f s", chat_id, wait)
                self._next[chat_id] = loop.time() + wait
                continue
            except ChatMigrated as exc:
                log.error(
                    "chat %s became supergroup %s: sending there now; put the new id in "
                    "TELEGRAM_CHAT_IDS",
                    chat_id,
                    exc.new_chat_id,
                )
                self.moved[chat_id] = int(exc.new_chat_id)
                continue
            except (BadRequest, Forbidden, InvalidToken) as exc:
                log.error("Telegram refused a message to chat %s: %s", chat_id, exc.message)
                break
            except TelegramError as exc:
                log.warning(
                    "sending to chat %s failed (attempt %d of %d): %s",
                    chat_id,
                    attempt,
                    attempts,
                    exc.message,
                )
                if attempt < attempts:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.config.backoff_max_s)
                continue
            except Exception:
                log.exception("sending to chat %s failed unexpectedly", chat_id)
                break
            self._next[chat_id] = loop.time() + self.config.interval_s
            self.delivered += 1
            return
        self.dropped += 1
        log.error("dropped a message to chat %s: %.120s", chat_id, text)
