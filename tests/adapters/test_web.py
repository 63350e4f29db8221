"""Webhook intake over real HTTP: every status code, dedupe, and health."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestServer

from ghapp.github.signature import signature_ok
from ghapp.github.webhooks import Context
from ghapp.inbox import Inbox
from ghapp.store.sqlite import SqliteTaskStore
from ghapp.web import MAX_BODY, SERVER_OPTIONS, create_app
from tests.conftest import Client, payload, sign, webhook_headers
from tests.fakes.memory import FakeClock
from tests.fakes.stack import eventually
from tests.fakes.web import web_deps

SECRET = "It's a Secret to Everybody"
WOKEN = web.AppKey("woken", list)
PATH = "/api/github/webhooks"


@pytest.fixture(params=["in the loop", "in the writer process"])
async def store(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[SqliteTaskStore]:
    """Every status is checked both where webhooks are verified: in the event loop (PostgreSQL,
    tests), and in SQLite's writer process, as `python -m ghapp` runs."""
    secret = SECRET if request.param == "in the writer process" else None
    s = SqliteTaskStore(tmp_path / "db.sqlite3", intake_secret=secret)
    await s.migrate()
    yield s
    await s.close()


@pytest.fixture
async def client(aiohttp_client: Any, store: SqliteTaskStore) -> Client:
    woken: list[int] = []
    deps = web_deps(store, SECRET, PATH, woken)
    app = create_app(deps)
    app[WOKEN] = woken
    server = TestServer(app)
    await server.start_server(**SERVER_OPTIONS)  # as __main__ runs it
    return await aiohttp_client(server)  # type: ignore[no-any-return]


def test_github_documented_signature_vector() -> None:
    header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert signature_ok(SECRET, b"Hello, World!", header)
    assert not signature_ok(SECRET, b"Hello, World?", header)
    assert not signature_ok(SECRET, b"Hello, World!", header.replace("sha256=", "sha1="))
    assert not signature_ok(SECRET, b"Hello, World!", None)


async def post(client: Client, body: bytes, headers: dict[str, str]) -> ClientResponse:
    return await client.post(PATH, data=body, headers=headers)


async def test_valid_delivery_is_stored_and_accepted(
    client: Client, store: SqliteTaskStore
) -> None:
    body = json.dumps(payload("issues.labeled", id=1)).encode()
    resp = await post(client, body, webhook_headers(SECRET, "issues", "d-1", body))
    assert resp.status == 202
    pending = await store.pending_deliveries()
    assert [(d.id, d.event, d.body) for d in pending] == [("d-1", "issues", body)]
    assert client.app[WOKEN] == [1]


async def test_redelivery_is_answered_200_and_changes_nothing(
    client: Client, store: SqliteTaskStore
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
    client: Client, store: SqliteTaskStore, mutate: Any, status: int
) -> None:
    body = json.dumps(payload("ping")).encode()
    headers = webhook_headers(SECRET, "ping", "d-bad", body)
    mutate(headers, body)
    resp = await post(client, body, headers)
    assert resp.status == status
    assert "error" in await resp.json()
    assert await store.pending_deliveries() == []


async def test_signed_but_unparsable_json_is_400(client: Client, store: SqliteTaskStore) -> None:
    for body in (b"{not json", b"[1, 2]", b'"text"'):
        resp = await post(client, body, webhook_headers(SECRET, "issues", "d-json", body))
        assert resp.status == 400
    assert await store.pending_deliveries() == []


async def test_body_over_25_mb_is_413(client: Client, store: SqliteTaskStore) -> None:
    body = b'{"a": "' + b"x" * (MAX_BODY) + b'"}'
    resp = await post(client, body, webhook_headers(SECRET, "issues", "d-big", body))
    assert resp.status == 413
    assert await store.pending_deliveries() == []


async def test_wrong_method_and_path(client: Client) -> None:
    assert (await client.get(PATH)).status == 405
    assert (await client.post("/elsewhere", data=b"{}")).status == 404


async def test_healthz_reports_database_and_queue(client: Client) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"ok": True, "queued": 0}


async def raw_request(client: Client, head: bytes, body: bytes = b"") -> bytes:
    """Send bytes the client library would not produce; returns the status line and headers."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(head + body)
        await writer.drain()
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "identity, gzip", "x-unknown"])
async def test_compressed_bodies_are_415_and_not_inflated(
    client: Client, store: SqliteTaskStore, encoding: str
) -> None:
    raw = json.dumps(payload("ping")).encode()
    body = gzip.compress(raw)
    headers = {**webhook_headers(SECRET, "ping", "d-gz", raw), "Content-Encoding": encoding}
    resp = await post(client, body, headers)
    assert resp.status == 415
    assert "Content-Encoding" in (await resp.json())["error"]
    assert await store.pending_deliveries() == []


async def test_compressed_body_is_refused_before_it_is_read(
    client: Client, store: SqliteTaskStore
) -> None:
    # Announce 20 MB of gzip and send none of it: the answer must come without the body.
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Encoding: gzip\r\nX-GitHub-Event: ping\r\nX-GitHub-Delivery: d-bomb\r\n"
        f"X-Hub-Signature-256: sha256={'0' * 64}\r\nContent-Length: {20 * 1024 * 1024}\r\n\r\n"
    ).encode()
    assert (await raw_request(client, head)).startswith(b"HTTP/1.1 415")
    second = head.replace(
        b"Content-Encoding: gzip", b"Content-Encoding: identity\r\nContent-Encoding: gzip"
    )
    assert (await raw_request(client, second)).startswith(b"HTTP/1.1 415")
    assert await store.pending_deliveries() == []


async def test_identity_encoding_is_accepted(client: Client, store: SqliteTaskStore) -> None:
    body = json.dumps(payload("ping")).encode()
    headers = {**webhook_headers(SECRET, "ping", "d-id", body), "Content-Encoding": "identity"}
    assert (await post(client, body, headers)).status == 202


@pytest.mark.parametrize("value", [b"\xff\xfe-bytes", "d-\u00e9".encode(), b"d-\x7f"])
async def test_an_odd_delivery_id_is_400_alone_and_a_good_one_beside_it_is_stored(
    client: Client, store: SqliteTaskStore, value: bytes
) -> None:
    """GitHub sends a GUID. Bytes that are not UTF-8 once hung every delivery of their batch
    (the writer's encoding failed), so they are refused before anything is queued."""
    odd = b'{"zen": "odd"}'
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-GitHub-Event: ping\r\nX-Hub-Signature-256: {sign(SECRET, odd)}\r\n"
        f"Content-Length: {len(odd)}\r\n"
    ).encode()
    head += b"X-GitHub-Delivery: " + value + b"\r\n\r\n"
    good = b'{"zen": "good"}'
    answers = await asyncio.gather(
        raw_request(client, head, odd),
        post(client, good, webhook_headers(SECRET, "ping", "d-good", good)),
    )
    assert answers[0].split()[1] == b"400"  # ours, or aiohttp's parser's for a DEL byte
    assert answers[1].status == 202
    assert [d.id for d in await store.pending_deliveries()] == ["d-good"]


@pytest.mark.parametrize("value", ["sha256=\u00e9", "sha256=" + "\u00ff" * 64, "\u00e9"])
async def test_non_ascii_signature_is_401(
    client: Client, store: SqliteTaskStore, value: str
) -> None:
    body = json.dumps(payload("ping")).encode()
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "X-GitHub-Event: ping\r\nX-GitHub-Delivery: d-utf8\r\n"
        f"Content-Length: {len(body)}\r\n"
    ).encode()
    head += b"X-Hub-Signature-256: " + value.encode("utf-8") + b"\r\n\r\n"
    assert (await raw_request(client, head, body)).startswith(b"HTTP/1.1 401")
    assert await store.pending_deliveries() == []
    assert not signature_ok(SECRET, body, value)


async def test_replay_under_a_new_delivery_id_is_a_duplicate(
    client: Client, store: SqliteTaskStore
) -> None:
    body = json.dumps(payload("issues.labeled", id=1)).encode()
    assert (await post(client, body, webhook_headers(SECRET, "issues", "d-5", body))).status == 202
    resp = await post(client, body, webhook_headers(SECRET, "issues", "d-6", body))
    assert resp.status == 200
    assert (await resp.json())["status"] == "duplicate"
    assert [d.id for d in await store.pending_deliveries()] == ["d-5"]


async def test_the_inbox_waits_while_a_webhook_is_being_taken_in(
    aiohttp_client: Any, store: SqliteTaskStore
) -> None:
    inbox = Inbox(store, Context(None, "mc-auto", "/mc", 1.0), FakeClock())  # type: ignore[arg-type]
    deps = web_deps(store, SECRET, PATH, [])
    deps = dataclasses.replace(deps, on_stored=inbox.wake, intake=inbox.intake)
    client = await aiohttp_client(create_app(deps))
    await inbox.start()
    try:
        slow = json.dumps(payload("issues.labeled", id=1)).encode()
        half = asyncio.Event()

        async def trickle() -> AsyncIterator[bytes]:  # GitHub on a slow link
            yield slow[:100]
            await half.wait()
            yield slow[100:]

        reading = asyncio.ensure_future(
            client.post(PATH, data=trickle(), headers=webhook_headers(SECRET, "issues", "a", slow))
        )
        ping = json.dumps(payload("ping")).encode()
        assert (await post(client, ping, webhook_headers(SECRET, "ping", "b", ping))).status == 202
        await asyncio.sleep(0.3)  # many QUIET_S, well under MAX_WAIT_S
        assert [d.id for d in await store.pending_deliveries()] == ["b"]  # intake goes first
        half.set()
        assert (await reading).status == 202

        async def drained() -> bool:
            return await store.pending_deliveries() == []

        await eventually(drained, within=2)
    finally:
        await inbox.stop()
