"""Fuzzed deliveries against the real aiohttp app and a real SQLite store.

Random bodies (bytes, JSON, real payloads), signed or not, with random content types and
header combinations, sent by aiohttp's test client and, for framing the client would not
produce, as raw HTTP over a socket. The contract: never a 5xx; every 202 names a delivery,
shaped like a JSON object, that is then stored with exactly the body that was sent;
413/415/400/401 as documented.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ghapp.github.signature import looks_like_object
from ghapp.store.sqlite import SqliteTaskStore
from ghapp.web import MAX_BODY, create_app
from tests.conftest import Client, sign
from tests.fakes.web import web_deps
from tests.fuzz.strategies import FIXTURES, HOSTILE_TEXT, fixture, json_values

SECRET = "fuzz-secret-\u00e9"
PATH = "/api/github/webhooks"
HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=60,
)


@dataclass
class Rig:
    loop: asyncio.Runner
    client: Client
    store: SqliteTaskStore
    woken: list[int] = field(default_factory=list)
    accepted: dict[str, bytes] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)

    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return f"Rig({len(self.accepted)} accepted)"

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        async def go() -> tuple[int, Any]:
            async with self.client.post(PATH, data=body, headers=headers) as resp:
                text = await resp.text()
                try:
                    return resp.status, json.loads(text)
                except ValueError:
                    return resp.status, text

        return self.loop.run(go())


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    runner = asyncio.Runner()
    tmp = Path(tempfile.mkdtemp(prefix="ghapp-fuzz-web-"))
    store = SqliteTaskStore(tmp / "ghapp.sqlite3", intake_secret=SECRET)  # as ghapp runs
    runner.run(store.migrate())
    woken: list[int] = []

    deps = web_deps(store, SECRET, PATH, woken)

    async def open_client() -> Client:
        client = TestClient(TestServer(create_app(deps)))
        await client.start_server()
        return client

    client = runner.run(open_client())
    rig = Rig(runner, client, store, woken)
    yield rig
    runner.run(client.close())
    runner.run(store.close())
    runner.close()


def check(rig: Rig, body: bytes, headers: dict[str, str]) -> int:
    """POST and check the promises; returns the status."""
    status, answer = rig.post(body, headers)
    rig.statuses[status] += 1
    assert status < 500, (status, answer)
    assert status in (200, 202) or 400 <= status < 500, status  # 417: aiohttp's, for Expect
    if status == 202:
        delivery = answer["delivery"]
        assert delivery == headers["X-GitHub-Delivery"].strip(" \t")  # HTTP drops outer OWS
        assert delivery not in rig.accepted, "a second 202 for one delivery id"
        rig.accepted[delivery] = body
        assert rig.loop.run(rig.store.has_delivery(delivery))
    if status == 200:
        # a redelivery (a known id), or a replay (a known body under a new id)
        replay = body in rig.accepted.values()
        assert answer["status"] == "duplicate" and (answer["delivery"] in rig.accepted or replay)
    if status in (200, 202):
        assert looks_like_object(body)  # the inbox parses it, and records it if it cannot
        assert headers.get("X-Hub-Signature-256") == sign(SECRET, body)
    elif status in (401, 413, 415):
        assert isinstance(answer, dict) and answer.get("error")
    return status


BODIES = st.one_of(
    st.binary(max_size=500),
    st.builds(lambda v: json.dumps(v).encode(), json_values()),
    st.builds(
        lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass"),
        json_values(text=HOSTILE_TEXT),
    ),
    st.builds(lambda f: json.dumps(fixture(f[1], 1)).encode(), st.sampled_from(FIXTURES)),
    st.sampled_from(
        [
            b"",
            b"{}",
            b"[]",
            b"null",
            b"\xef\xbb\xbf{}",
            b'{"a": 1e999}',
            b'{"a": NaN}',
            b'{"a": "\\ud800"}',
            b'{"a": 1}{"b": 2}',
            '{"é": 1}'.encode("utf-16"),
            b'{"n": ' + b"9" * 5000 + b"}",
            b"[" * 100 + b"]" * 100,
        ]
    ),
)
CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "application/x-www-form-urlencoded",
            "text/plain",
            "application/json;;",
            'application/json; charset="',
            "multipart/form-data; boundary=x",
            "",
            ";",
            "/",
            "application/vnd.github+json",
            "application/json ; foo=bar",
        ]
    ),
    HEADER_TEXT,
)
EVENTS = st.one_of(st.sampled_from(["issues", "issue_comment", "ping", ""]), HEADER_TEXT)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    body = draw(BODIES)
    headers: dict[str, str] = {}
    kind = draw(st.integers(0, 9))  # mostly JSON, so the fuzz gets past the first check
    if kind >= 4:
        headers["Content-Type"] = "application/json"
    elif kind:
        headers["Content-Type"] = draw(CONTENT_TYPES)
    if draw(st.integers(0, 4)):
        headers["X-GitHub-Event"] = draw(EVENTS)
    if draw(st.integers(0, 4)):
        headers["X-GitHub-Delivery"] = draw(
            st.one_of(st.uuids().map(str), HEADER_TEXT, st.sampled_from(["dup-1", "dup-2"]))
        )
    signature = draw(st.sampled_from(["valid", "valid", "valid", "none", "wrong", "sha1", "junk"]))
    if signature == "valid":
        headers["X-Hub-Signature-256"] = sign(SECRET, body)
    elif signature == "wrong":
        headers["X-Hub-Signature-256"] = sign(SECRET + "x", body)
    elif signature == "sha1":
        headers["X-Hub-Signature"] = "sha1=" + "0" * 40
    elif signature == "junk":
        headers["X-Hub-Signature-256"] = draw(HEADER_TEXT)
    extra = ["User-Agent", "X-Forwarded-For", "Accept", "Content-Encoding", "Expect"]
    for name in draw(st.lists(st.sampled_from(extra), max_size=2)):
        headers[name] = draw(HEADER_TEXT)
    return body, headers


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(deliveries())
def test_fuzzed_deliveries_never_5xx_and_every_202_is_stored(
    rig: Rig, case: tuple[bytes, dict[str, str]]
) -> None:
    body, headers = case
    if "X-GitHub-Delivery" in headers and headers["X-GitHub-Delivery"] in rig.accepted:
        # a redelivery: 200 if it reaches the store, else an earlier check refused it
        pass
    check(rig, body, headers)


def signed(body: bytes, delivery: str, event: str = "issues") -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": sign(SECRET, body),
    }


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values(text=HOSTILE_TEXT))
def test_every_signed_json_object_is_accepted_and_stored_verbatim(rig: Rig, value: Any) -> None:
    body = json.dumps({"zen": value}, ensure_ascii=False).encode("utf-8", "surrogatepass")
    delivery = f"signed-{sum(rig.statuses.values())}"
    replay = body in rig.accepted.values()  # hypothesis drew this value before
    assert check(rig, body, signed(body, delivery)) == (200 if replay else 202)
    assert check(rig, body, signed(body, delivery)) == 200  # GitHub's redelivery


def test_stored_bodies_are_byte_for_byte_what_was_sent(rig: Rig) -> None:
    """Runs after the fuzz above: every accepted body is stored unchanged, none is lost."""

    async def stored() -> dict[str, bytes]:
        return {d.id: d.body for d in await rig.store.pending_deliveries(1_000_000)}

    pending = rig.loop.run(stored())
    print(f"fuzzed deliveries by status: {dict(sorted(rig.statuses.items()))}")
    assert {200, 202, 400, 401, 415} <= set(rig.statuses), "the fuzz missed an answer"
    for delivery, body in rig.accepted.items():
        assert pending.get(delivery) == body, delivery
    assert len(rig.woken) == len(rig.accepted)


def test_oversized_bodies_are_413_with_or_without_a_length(rig: Rig) -> None:
    big = b'{"a": "' + b"x" * (MAX_BODY + 10) + b'"}'
    assert check(rig, big, signed(big, "big-1")) == 413

    async def chunks() -> Any:
        for i in range(0, len(big), 1 << 20):
            yield big[i : i + (1 << 20)]

    async def chunked() -> int:
        async with rig.client.post(PATH, data=chunks(), headers=signed(big, "big-2")) as resp:
            return resp.status

    assert rig.loop.run(chunked()) == 413
    assert not rig.loop.run(rig.store.has_delivery("big-2"))


@example(depth=100_000, opener=b"[")
@given(st.integers(2_000, 200_000), st.sampled_from([b"[", b'{"a":']))
@settings(max_examples=5, deadline=None)
def test_deeply_nested_signed_json_is_a_400(rig: Rig, depth: int, opener: bytes) -> None:
    body = opener * depth
    status, _ = rig.post(body, signed(body, f"deep-{depth}-{opener!r}"))
    assert status == 400


# -- raw HTTP: framing a client library would never send --------------------------------------

RAW_CASES = [
    b"POST {p} HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST {p} HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n{{}}",
    b"POST {p} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}",
    b"POST {p} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n"
    b"2\r\n{{}}\r\n0\r\n\r\n",
    b"POST {p} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n",
    b"POST {p} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"POST {p} HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: a\x00b\r\nContent-Length: 2\r\n\r\n{{}}",
    b"POST {p} HTTP/1.1\r\nHost: x\r\nX-GitHub-Event:\r\n issues\r\nContent-Length: 2\r\n\r\n{{}}",
    b"POST {p} HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: " + b"e" * 20_000 + b"\r\n\r\n",
    b"POST {p} HTTP/1.1\r\nHost: x\r\nX-GitHub-Delivery: \xff\xfe\r\nContent-Length: 0\r\n\r\n",
    b"POST {p}?x=%zz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"POST {p} HTTP/1.0\r\nContent-Type: application/json\r\n\r\n{{}}",
    b"POST {p} HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n",
    b"PUT {p} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"POST {p}/../healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"POST {p} HTTP/1.1\r\n" + b"X-A: b\r\n" * 500 + b"\r\n",
    b"POST {p} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{{}}",
]


async def raw_status(rig: Rig, request: bytes, half_close: bool = True) -> int | None:
    """Send bytes on a fresh connection; the status of the answer, None if it hung up."""
    server = rig.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(request)
        await writer.drain()
        if half_close:
            writer.write_eof()  # the client is done: a short body is truncated, not pending
        try:
            line = await asyncio.wait_for(reader.readline(), 2 if half_close else 1)
        except TimeoutError:
            return None  # waiting for a body that never comes: fine, not an error
        parts = line.split()
        return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
    finally:
        writer.close()


@pytest.mark.parametrize("half_close", [False, True], ids=["open", "eof"])
@pytest.mark.parametrize("template", RAW_CASES, ids=range(len(RAW_CASES)))
def test_raw_http_framing_never_5xx(rig: Rig, template: bytes, half_close: bool) -> None:
    request = template.replace(b"{p}", PATH.encode()).replace(b"{{}}", b"{}")
    status = rig.loop.run(raw_status(rig, request, half_close))
    assert status is None or status < 500, status


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("with_signature", [False, True], ids=["unsigned", "signed"])
def test_undecodable_content_encoding_is_a_4xx(
    rig: Rig, encoding: str, with_signature: bool
) -> None:
    body = b'{"zen": "not compressed"}'
    headers = signed(body, f"enc-{encoding}-{with_signature}")
    if not with_signature:
        del headers["X-Hub-Signature-256"]
    headers["Content-Encoding"] = encoding
    status, _ = rig.post(body, headers)
    assert status < 500


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400), st.booleans())
def test_raw_random_bytes_after_a_request_line_never_5xx(rig: Rig, tail: bytes, line: bool) -> None:
    request = (b"POST " + PATH.encode() + b" HTTP/1.1\r\n" if line else b"") + tail
    status = rig.loop.run(raw_status(rig, request))
    assert status is None or status < 500, status
