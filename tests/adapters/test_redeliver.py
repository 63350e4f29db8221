"""redeliver_missed against the fake GitHub over HTTP, with the real AppAuth and store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from ghapp.github.auth import AppAuth
from ghapp.github.redeliver import RedeliverySweep, redeliver_missed
from ghapp.store.sqlite import SqliteTaskStore
from tests.conftest import sign
from tests.fakes.github import FakeGitHub

LIST = "/app/hook/deliveries"
NOW = datetime.now(UTC)


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    gh = FakeGitHub()
    await gh.start()
    yield gh
    await gh.close()


@pytest.fixture
async def auth(fake: FakeGitHub) -> AsyncIterator[AppAuth]:
    async with aiohttp.ClientSession() as session:
        yield AppAuth(session, fake.app_id, fake.private_key_pem, fake.base_url)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteTaskStore]:
    s = SqliteTaskStore(tmp_path / "ghapp.sqlite3")
    await s.migrate()
    yield s
    await s.close()


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def failed(fake: FakeGitHub, guid: str, minutes: float, **kw: object) -> int:
    """Seed a failed attempt; returns its numeric id."""
    d = fake.add_hook_delivery(
        guid, "issues", "labeled", 502, "Invalid HTTP Response: 502", ago(minutes), **kw
    )
    return d.id


async def test_only_failed_unknown_deliveries_are_redelivered_once(
    fake: FakeGitHub, auth: AppAuth, store: SqliteTaskStore
) -> None:
    fake.add_hook_delivery("ok-1", "issues", "opened", 202, "OK", ago(50))
    # failed first, then a successful redelivery: nothing to do
    failed(fake, "healed", 40)
    fake.add_hook_delivery("healed", "issues", "opened", 202, "OK", ago(39), redelivery=True)
    # failed twice at GitHub's end: one redelivery, of the newest failed attempt
    failed(fake, "lost", 30)
    newest = failed(fake, "lost", 20, redelivery=True)
    # failed at GitHub's end (timeout) but ghapp stored it
    failed(fake, "stored", 10)
    await store.add_delivery("stored", "issues", b"{}", NOW)
    connect = fake.add_hook_delivery("down", "issue_comment", "created", 0, "failed to connect")

    report = await redeliver_missed(auth, store, since=ago(60))

    assert sorted(fake.apps.redelivery_requests) == sorted([newest, connect.id])
    assert (report.listed, report.guids, report.ok) == (7, 5, 2)
    assert (report.already_stored, report.redelivered, report.failed) == (1, 2, 0)
    assert report.complete and report.errors == []
    calls = fake.requests_to(f"/app/hook/deliveries/{newest}/attempts", "POST")
    assert len(calls) == 1 and calls[0].auth == "jwt"
    assert all(r.auth == "jwt" for r in fake.requests_to(LIST))


async def test_pagination_is_followed_and_old_items_are_not(
    fake: FakeGitHub, auth: AppAuth, store: SqliteTaskStore
) -> None:
    recent = [failed(fake, f"recent-{i}", minutes=i) for i in range(1, 251)]
    for i in range(30):  # older than `since`, and a full page more of them
        failed(fake, f"old-{i}", minutes=600 + i)
    for i in range(100):
        failed(fake, f"older-{i}", minutes=900 + i)

    report = await redeliver_missed(auth, store, since=ago(300))

    assert sorted(fake.apps.redelivery_requests) == sorted(recent)
    assert report.redelivered == 250 and report.listed == 250
    pages = fake.requests_to(LIST)
    assert len(pages) == 3 == report.pages  # 100 + 100 + 50 recent, stop in the third
    assert "per_page=100" in pages[0].query and "cursor=" in pages[1].query


async def test_max_pages_bounds_the_listing(
    fake: FakeGitHub, auth: AppAuth, store: SqliteTaskStore
) -> None:
    for i in range(250):
        failed(fake, f"g-{i}", minutes=i + 1)
    report = await redeliver_missed(auth, store, since=ago(1000), max_pages=2)
    assert report.pages == 2 and report.listed == 200 and not report.complete
    assert report.redelivered == 200


async def test_default_window_is_three_days(
    fake: FakeGitHub, auth: AppAuth, store: SqliteTaskStore
) -> None:
    inside = failed(fake, "inside", minutes=3 * 24 * 60 - 5)
    failed(fake, "outside", minutes=3 * 24 * 60 + 5)
    report = await redeliver_missed(auth, store)
    assert fake.apps.redelivery_requests == [inside] and report.redelivered == 1


async def test_github_errors_never_raise(
    fake: FakeGitHub, auth: AppAuth, store: SqliteTaskStore
) -> None:
    first = failed(fake, "a", 2)
    second = failed(fake, "b", 1)
    fake.fail_next(f"/app/hook/deliveries/{second}/attempts", status=500, retry_after=None)
    report = await redeliver_missed(auth, store, since=ago(60))
    assert (report.redelivered, report.failed) == (1, 1)
    assert fake.apps.redelivery_requests == [first]

    fake.fail_next(LIST, status=500, retry_after=None, message="Server Error")
    report = await redeliver_missed(auth, store, since=ago(60))
    assert not report.complete and report.listed == 0 and "500" in report.errors[0]


async def test_unknown_app_and_unreachable_github_do_not_raise(
    fake: FakeGitHub, store: SqliteTaskStore
) -> None:
    failed(fake, "a", 1)
    async with aiohttp.ClientSession() as session:
        wrong = AppAuth(session, 999, fake.private_key_pem, fake.base_url)
        report = await redeliver_missed(wrong, store, since=ago(60))
        assert not report.complete and "401" in report.errors[0]
        gone = AppAuth(session, fake.app_id, fake.private_key_pem, "http://127.0.0.1:9")
        report = await redeliver_missed(gone, store, since=ago(60))
        assert not report.complete and report.redelivered == 0


async def test_sweep_recovers_a_missed_delivery_end_to_end(
    fake: FakeGitHub, auth: AppAuth, store: SqliteTaskStore
) -> None:
    """GitHub re-POSTs the stored payload to a receiver that stores it; a second sweep is idle."""
    received: list[tuple[str, bytes]] = []

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        assert request.headers["X-Hub-Signature-256"] == sign("s3cret", body)
        guid = request.headers["X-GitHub-Delivery"]
        received.append((guid, body))
        await store.add_delivery(guid, request.headers["X-GitHub-Event"], body, NOW)
        return web.json_response({"status": "accepted"}, status=202)

    receiver = web.Application()
    receiver.router.add_post("/api/github/webhooks", receive)
    runner = web.AppRunner(receiver)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.apps.hook_url, fake.apps.hook_secret = (
        f"http://{host}:{port}/api/github/webhooks",
        "s3cret",
    )
    payload = {"action": "labeled", "issue": {"number": 7}}
    failed(fake, "missed", 5, payload=payload)
    sweep = RedeliverySweep(auth, store, delay_s=0, interval_s=0.05)
    try:
        await sweep.start()
        for _ in range(200):
            if len(sweep.reports) >= 2:
                break
            await asyncio.sleep(0.02)
        await sweep.stop()
    finally:
        await runner.cleanup()
    assert [guid for guid, _ in received] == ["missed"]
    assert json.loads(received[0][1]) == payload
    assert await store.has_delivery("missed")
    assert sweep.reports[0].redelivered == 1
    assert sweep.reports[1].redelivered == 0 and sweep.reports[1].ok == 1
