"""Webhook intake over real HTTP: every status code, dedupe, and health."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from ghapp.core.model import TaskState
from ghapp.store.sqlite import SqliteTaskStore
from ghapp.web import MAX_BODY, WebDeps, create_app, signature_ok
from tests.conftest import payload, sign, webhook_headers

SECRET = "It's a Secret to Everybody"
WOKEN = web.AppKey("woken", list)
PATH = "/api/github/webhooks"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteTaskStore]:
    s = SqliteTaskStore(tmp_path / "db.sqlite3")
    await s.migrate()
    yield s
    await s.close()


@pytest.fixture
async def client(aiohttp_client: Any, store: SqliteTaskStore) -> TestClient:
    woken: list[int] = []

    async def health() -> dict[str, Any]:
        return {"ok": await store.ping(), "queued": await store.count(TaskState.QUEUED)}

    async def nothing() -> None:
        return None

    deps = WebDeps(store, SECRET, PATH, lambda: woken.append(1), health, nothing, nothing)
    app = create_app(deps)
    app[WOKEN] = woken
    return await aiohttp_client(app)  # type: ignore[no-any-return]


def test_github_documented_signature_vector() -> None:
    header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert signature_ok(SECRET, b"Hello, World!", header)
    assert not signature_ok(SECRET, b"Hello, World?", header)
    assert not signature_ok(SECRET, b"Hello, World!", header.replace("sha256=", "sha1="))
    assert not signature_ok(SECRET, b"Hello, World!", None)


async def post(client: TestClient, body: bytes, headers: dict[str, str]) -> web.Response:
    return await client.post(PATH, data=body, headers=headers)  # type: ignore[no-any-return]


async def test_valid_delivery_is_stored_and_accepted(
    client: TestClient, store: SqliteTaskStore
) -> None:
    body = json.dumps(payload("issues.labeled", id=1)).encode()
    resp = await post(client, body, webhook_headers(SECRET, "issues", "d-1", body))
    assert resp.status == 202
    pending = await store.pending_deliveries()
    assert [(d.id, d.event, d.body) for d in pending] == [("d-1", "issues", body)]
    assert client.app[WOKEN] == [1]


async def test_redelivery_is_answered_200_and_changes_nothing(
    client: TestClient, store: SqliteTaskStore
) -> None:
    body = json.dumps(payload("ping")).encode()
    assert (await post(client, body, webhook_headers(SECRET, "ping", "d-2", body))).status == 202
    other = json.dumps({"zen": "changed"}).encode()
    resp = await post(client, other, webhook_headers(SECRET, "ping", "d-2", other))
    assert resp.status == 200
    pending = await store.pending_deliveries()
    assert len(pending) == 1 and pending[0].body == body


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        (lambda h, b: h.pop("X-Hub-Signature-256"), 401),
        (lambda h, b: h.__setitem__("X-Hub-Signature-256", sign("wrong", b)), 401),
        (lambda h, b: h.__setitem__("X-Hub-Signature-256", "sha1=" + "0" * 40), 401),
        (lambda h, b: h.__setitem__("Content-Type", "application/x-www-form-urlencoded"), 415),
        (lambda h, b: h.__setitem__("Content-Type", "text/plain"), 415),
        (lambda h, b: h.pop("X-GitHub-Event"), 400),
        (lambda h, b: h.pop("X-GitHub-Delivery"), 400),
    ],
)
async def test_bad_requests_get_their_status_and_store_nothing(
    client: TestClient, store: SqliteTaskStore, mutate: Any, status: int
) -> None:
    body = json.dumps(payload("ping")).encode()
    headers = webhook_headers(SECRET, "ping", "d-bad", body)
    mutate(headers, body)
    resp = await post(client, body, headers)
    assert resp.status == status
    assert "error" in await resp.json()
    assert await store.pending_deliveries() == []


async def test_signed_but_unparsable_json_is_400(
    client: TestClient, store: SqliteTaskStore
) -> None:
    for body in (b"{not json", b"[1, 2]", b'"text"'):
        resp = await post(client, body, webhook_headers(SECRET, "issues", "d-json", body))
        assert resp.status == 400
    assert await store.pending_deliveries() == []


async def test_body_over_25_mb_is_413(client: TestClient, store: SqliteTaskStore) -> None:
    body = b'{"a": "' + b"x" * (MAX_BODY) + b'"}'
    resp = await post(client, body, webhook_headers(SECRET, "issues", "d-big", body))
    assert resp.status == 413
    assert await store.pending_deliveries() == []


async def test_wrong_method_and_path(client: TestClient) -> None:
    assert (await client.get(PATH)).status == 405
    assert (await client.post("/elsewhere", data=b"{}")).status == 404


async def test_healthz_reports_database_and_queue(client: TestClient) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"ok": True, "queued": 0}
