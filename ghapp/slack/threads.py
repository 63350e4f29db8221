"""Notices to Slack channels as one thread per task, queued so Slack down never blocks ghapp."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from ghapp.core.model import Task, utcnow
from ghapp.core.ports import Notice
from ghapp.slack.blocks import Block, notice_text, task_message

log = logging.getLogger(__name__)
# Errors that the same call will meet again: log once and drop the notice.
PERMANENT = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "missing_scope",
        "msg_too_long",
        "invalid_blocks",
    }
)
FIRST_KINDS = frozenset({"queued", "started"})  # what a task's parent message announces


@dataclass(frozen=True)
class ThreadsConfig:
    """Queue size, retries and the longest Retry-After honoured; tests shrink them."""

    max_queue: int = 500
    max_attempts: int = 5
    backoff_s: float = 2.0
    backoff_max_s: float = 60.0
    max_retry_after_s: float = 600.0
    flush_s: float = 3.0
    max_threads: int = 5000
    claim_wait_s: float = 10.0  # how long another process may take to post a parent


class ThreadRefs(Protocol):
    """Where processes sharing a store agree on each task's parent message (both stores)."""

    async def claim_thread(self, chat: str, task_id: int, now: datetime, stale_s: float) -> bool:
        """True for the one caller that must post the parent (or take over a stale claim)."""
        ...

    async def thread_ref(self, chat: str, task_id: int) -> str | None: ...

    async def set_thread_ref(self, chat: str, task_id: int, ref: str) -> None: ...


@dataclass
class _Job:
    """One notice for one channel, remembering which of its calls already went out."""

    notice: Notice
    claimed: bool = False
    posted: bool = False
    replied: bool = False


def retry_after_s(exc: SlackApiError, default: float = 1.0) -> float:
    """The seconds a 429 asked for (Slack sends Retry-After), or `default`."""
    headers = getattr(exc.response, "headers", None) or {}
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        return max(0.0, float(raw)) if raw is not None else default
    except ValueError:
        return default


class Threads:
    """One bounded queue and sender per channel; `put` never waits."""

    def __init__(
        self,
        client: AsyncWebClient,
        channels: Iterable[str],
        config: ThreadsConfig,
        refs: ThreadRefs | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.refs = refs
        self._queues: dict[str, asyncio.Queue[_Job]] = {c: asyncio.Queue() for c in channels}
        self._parents: OrderedDict[tuple[str, int], str] = OrderedDict()
        self._workers: list[asyncio.Task[None]] = []
        self.delivered = 0
        self.dropped = 0

    def put(self, notice: Notice) -> None:
        """Queue a notice for every channel; drop the oldest when a queue is full."""
        for channel, queue in self._queues.items():
            if queue.qsize() >= self.config.max_queue:
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                    queue.task_done()
                    self.dropped += 1
                    log.warning("Slack queue for %s is full; dropped the oldest notice", channel)
            queue.put_nowait(_Job(notice))

    def start(self) -> None:
        for channel in self._queues:
            self._workers.append(
                asyncio.create_task(self._work(channel), name=f"ghapp-slack-out-{channel}")
            )

    async def idle(self) -> None:
        """Wait until every queued notice was delivered or dropped."""
        await asyncio.gather(*(q.join() for q in self._queues.values()))

    async def stop(self) -> None:
        """Give queued notices a short chance to go out, then stop the senders."""
        if self._workers:
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
            log.warning("Slack notices stopped with %d undelivered", left)

    async def _work(self, channel: str) -> None:
        queue = self._queues[channel]
        while True:
            job = await queue.get()
            try:
                await self._deliver(channel, job)
            finally:
                queue.task_done()

    async def _deliver(self, channel: str, job: _Job) -> None:
        """Send with bounded retries, waiting out Retry-After; log and drop what cannot go."""
        delay = self.config.backoff_s
        for attempt in range(1, self.config.max_attempts + 1):
            try:
                await self._send(channel, job)
            except SlackApiError as exc:
                error = str(exc.response.get("error", "")) if exc.response else ""
                if getattr(exc.response, "status_code", None) == 429:
                    wait = min(retry_after_s(exc), self.config.max_retry_after_s)
                    log.warning("Slack rate limit on %s: waiting %.0f s", channel, wait)
                    await asyncio.sleep(wait)
                    continue
                if error in PERMANENT:
                    log.error("Slack refused a notice to %s: %s", channel, error)
                    break
                log.warning("Slack call for %s failed (attempt %d): %s", channel, attempt, error)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning("Slack unreachable for %s (attempt %d): %s", channel, attempt, exc)
            except Exception:
                log.exception("sending a Slack notice to %s failed unexpectedly", channel)
                break
            else:
                self.delivered += 1
                return
            if attempt < self.config.max_attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.backoff_max_s)
        self.dropped += 1
        log.error("dropped a Slack notice to %s: %.120s", channel, job.notice.text)

    async def _send(self, channel: str, job: _Job) -> None:
        """Parent message first; later notices reply in its thread and redraw the parent."""
        notice, task = job.notice, job.notice.task
        if task is None:
            await self.client.chat_postMessage(channel=channel, text=notice_text(notice))
            return
        fallback, blocks = task_message(task, notice.kind)
        parent = await self._parent(channel, task, job, fallback, blocks)
        if job.posted and notice.kind in FIRST_KINDS:
            return  # the parent itself announces it
        if not job.replied:
            await self.client.chat_postMessage(
                channel=channel, thread_ts=parent, text=notice_text(notice), unfurl_links=False
            )
            job.replied = True
        if not job.posted:
            await self.client.chat_update(channel=channel, ts=parent, text=fallback, blocks=blocks)

    async def _parent(
        self, channel: str, task: Task, job: _Job, fallback: str, blocks: list[Block]
    ) -> str:
        """The task's parent: remembered, known to the store, or posted now (once cluster-wide)."""
        key, chat = (channel, task.id), f"slack:{channel}"
        ts = self._parents.get(key)
        if ts is None and self.refs is not None:
            ts = await self.refs.thread_ref(chat, task.id)
            if ts is None and not job.claimed:
                job.claimed = await self.refs.claim_thread(
                    chat, task.id, utcnow(), self.config.claim_wait_s
                )
                if not job.claimed:  # another process is posting it right now
                    ts = await self._wait_for_ref(chat, task.id)
        if ts is None:
            response = await self.client.chat_postMessage(
                channel=channel, text=fallback, blocks=blocks, unfurl_links=False
            )
            ts, job.posted = str(response["ts"]), True
            self._remember(key, ts)  # before the store: a retry must not post a second parent
            if self.refs is not None:
                await self.refs.set_thread_ref(chat, task.id, ts)
        self._remember(key, ts)
        return ts

    async def _wait_for_ref(self, chat: str, task_id: int) -> str | None:
        """The parent another process claimed, once it is posted; None if it never is."""
        assert self.refs is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.claim_wait_s
        while loop.time() < deadline:
            await asyncio.sleep(0.1)
            if (ts := await self.refs.thread_ref(chat, task_id)) is not None:
                return ts
        log.warning("no parent message for task %s in %s appeared; posting one", task_id, chat)
        return None

    def _remember(self, key: tuple[str, int], ts: str) -> None:
        self._parents[key] = ts
        while len(self._parents) > self.config.max_threads:
            self._parents.popitem(last=False)
