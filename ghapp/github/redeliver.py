"""Ask GitHub to redeliver webhooks that failed while ghapp was down (reference §7)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gidgethub import GitHubException, HTTPException, sansio

from ghapp.core.model import utcnow
from ghapp.core.ports import TaskStore
from ghapp.github.auth import AppAuth

log = logging.getLogger(__name__)

WINDOW = timedelta(days=3)  # GitHub keeps deliveries this long; older ones are gone
DELIVERIES = "/app/hook/deliveries?per_page=100"
ATTEMPTS = "/app/hook/deliveries/{id}/attempts"


@dataclass
class RedeliveryReport:
    """What one sweep saw and did, for the start-up log and the tests."""

    listed: int = 0  # delivery attempts inside the window
    guids: int = 0  # distinct deliveries among them
    ok: int = 0  # deliveries GitHub already delivered successfully
    already_stored: int = 0  # failed at GitHub's end, but ghapp has them
    redelivered: int = 0  # redelivery requested
    failed: int = 0  # redelivery request refused or unreachable
    pages: int = 0
    complete: bool = True  # False when listing stopped on an error or at max_pages
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One log line."""
        return (
            f"{self.listed} attempts / {self.guids} deliveries listed, {self.ok} ok, "
            f"{self.already_stored} already stored, {self.redelivered} redelivered, "
            f"{self.failed} failed" + ("" if self.complete else " (listing incomplete)")
        )


class _Jwt:
    """One app JWT reused for 8 minutes: signing parses the RSA key, which is slow."""

    def __init__(self, auth: AppAuth) -> None:
        self.auth, self.value, self.minted = auth, "", 0.0

    def __call__(self) -> str:
        now = time.monotonic()
        if not self.value or now - self.minted > 480:
            self.value, self.minted = self.auth.app_jwt(), now
        return self.value


def _describe(exc: BaseException) -> str:
    """Status and message of a GitHub error, or the exception's repr."""
    if isinstance(exc, HTTPException):
        return f"HTTP {int(exc.status_code)}: {exc}"
    return repr(exc)


def _when(item: dict[str, Any]) -> datetime | None:
    """delivered_at as an aware datetime; None when absent or unparsable."""
    raw = item.get("delivered_at")
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None


async def _list(
    auth: AppAuth, token: _Jwt, since: datetime, max_pages: int, report: RedeliveryReport
) -> list[dict[str, Any]]:
    """Attempts newer than `since`, newest first, following the Link cursor."""
    items: list[dict[str, Any]] = []
    url: str | None = DELIVERIES
    while url is not None:
        if report.pages >= max_pages:
            report.complete = False
            log.warning("redelivery: stopped after %d pages of deliveries", max_pages)
            break
        try:
            # gidgethub's getiter hides the page boundaries that max_pages counts.
            data, url, _ = await auth.gh._make_request(
                "GET", url, {}, b"", sansio.accept_format(), jwt=token()
            )
        except (GitHubException, OSError, TimeoutError) as exc:
            report.complete = False
            report.errors.append(f"list: {_describe(exc)}")
            log.warning("redelivery: listing deliveries failed: %s", _describe(exc))
            break
        report.pages += 1
        if not isinstance(data, list):
            report.complete = False
            report.errors.append("list: unexpected response shape")
            break
        for item in data:
            when = _when(item) if isinstance(item, dict) else None
            if when is None:
                continue
            if when < since:
                return items
            items.append(item)
    return items


async def redeliver_missed(
    auth: AppAuth, store: TaskStore, *, since: datetime | None = None, max_pages: int = 10
) -> RedeliveryReport:
    """Redeliver once each delivery that never succeeded and ghapp never stored; never raises."""
    report = RedeliveryReport()
    since = since if since is not None else utcnow() - WINDOW
    token = _Jwt(auth)
    attempts = await _list(auth, token, since, max_pages, report)
    report.listed = len(attempts)
    by_guid: dict[str, list[dict[str, Any]]] = {}
    for item in attempts:
        guid = item.get("guid")
        if isinstance(guid, str) and guid:
            by_guid.setdefault(guid, []).append(item)
    report.guids = len(by_guid)
    for guid, tries in by_guid.items():
        if any(t.get("status") == "OK" for t in tries):
            report.ok += 1
            continue
        try:
            stored = await store.has_delivery(guid)
        except Exception as exc:  # a store hiccup must not stop start-up
            report.errors.append(f"store {guid}: {exc!r}")
            log.warning("redelivery: store lookup for %s failed: %r", guid, exc)
            continue
        if stored:
            report.already_stored += 1
            continue
        attempt_id = str(tries[0].get("id", ""))  # the newest failed attempt
        if not attempt_id.isdigit():
            report.failed += 1
            report.errors.append(f"redeliver {guid}: attempt has no numeric id")
            continue
        try:
            await auth.gh.post(ATTEMPTS, {"id": attempt_id}, data=b"", jwt=token())
        except (GitHubException, OSError, TimeoutError) as exc:
            report.failed += 1
            report.errors.append(f"redeliver {guid}: {_describe(exc)}")
            event = tries[0].get("event")
            log.warning("redelivery of %s (%s) failed: %s", guid, event, _describe(exc))
            continue
        report.redelivered += 1
        log.info("asked GitHub to redeliver %s (%s)", guid, tries[0].get("event"))
    log.info("redelivery sweep: %s", report.summary())
    return report


class RedeliverySweep:
    """A start/stop part: one sweep shortly after start, then one every `interval_s`."""

    def __init__(
        self,
        auth: AppAuth,
        store: TaskStore,
        *,
        delay_s: float = 2.0,
        interval_s: float | None = 6 * 3600.0,
        margin: timedelta = timedelta(minutes=10),
    ) -> None:
        self.auth, self.store = auth, store
        self.delay_s, self.interval_s, self.margin = delay_s, interval_s, margin
        self.reports: list[RedeliveryReport] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Sweep in the background: the webhook server must be listening for redeliveries."""
        self._task = asyncio.create_task(self._loop(), name="ghapp-redelivery")

    async def stop(self) -> None:
        """Cancel a pending or running sweep."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        since: datetime | None = None  # the first sweep covers GitHub's whole window
        await asyncio.sleep(self.delay_s)
        while True:
            started = utcnow()
            try:
                report = await redeliver_missed(self.auth, self.store, since=since)
            except Exception:  # never let a bug kill the process's event loop task
                log.exception("redelivery sweep crashed")
            else:
                self.reports.append(report)
                if report.complete:
                    since = started - self.margin
            if self.interval_s is None:
                return
            await asyncio.sleep(self.interval_s)
