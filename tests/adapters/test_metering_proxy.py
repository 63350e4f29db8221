"""The metering proxy between the agent and the scripted Messages API, over real sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ghapp.agent.metering import Account, MeteringProxy, Upstream
from ghapp.agent.prices import load_prices
from tests.fakes.anthropic import ScriptedAnthropic, Usage

OPERATOR_KEY = "sk-ant-operator-key-never-in-the-sandbox"


@dataclass
class Rig:
    api: ScriptedAnthropic
    account: Account
    url: str
    booked: list[float] = field(default_factory=list)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    api = ScriptedAnthropic()
    base = await api.start()
    account = Account(cap_usd=0.01)
    booked: list[float] = []

    async def book(cost: float) -> None:
        booked.append(cost)

    upstream = Upstream.from_env({"ANTHROPIC_API_KEY": OPERATOR_KEY, "ANTHROPIC_BASE_URL": base})
    async with aiohttp.ClientSession() as session:
        proxy = MeteringProxy(account, upstream, load_prices(None), session, book, "test")
        url = await proxy.start()
        yield Rig(api, account, url, booked)
        await proxy.close()
    await api.close()


def body(scenario: str = "commit", model: str = "claude-opus-4-8", **extra: Any) -> dict[str, Any]:
    msg = {"role": "user", "content": [{"type": "text", "text": f"[scenario:{scenario}]"}]}
    return {"model": model, "messages": [msg], "tools": [{"name": "Write"}], **extra}


async def post(rig: Rig, payload: dict[str, Any], token: str | None = None) -> tuple[int, Any]:
    headers = {"x-api-key": token or rig.account.token, "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{rig.url}/v1/messages?beta=true", json=payload, headers=headers
        ) as r:
            text = await r.text()
            try:
                return r.status, json.loads(text)
            except ValueError:
                return r.status, text


async def test_streamed_response_is_metered_booked_and_passed_through(rig: Rig) -> None:
    rig.api.usage["commit"] = Usage(1000, 500, cache_creation_input_tokens=2000,
                                    cache_read_input_tokens=3000)  # fmt: skip
    status, text = await post(rig, body(stream=True))
    assert status == 200 and "event: message_stop" in text
    assert rig.booked == [pytest.approx(0.0315)]  # the CLI's own figure for this usage
    assert rig.account.spent_usd == pytest.approx(0.0315)
    sent = rig.api.headers[-1]
    assert sent["x-api-key"] == OPERATOR_KEY  # the agent's token was swapped for the key
    assert sent["anthropic-version"] == "2023-06-01"
    assert rig.api.calls[-1] == ("POST", "/v1/messages")


async def test_a_whole_json_response_is_metered(rig: Rig) -> None:
    status, message = await post(rig, body())
    assert status == 200 and message["type"] == "message"
    assert rig.booked == [pytest.approx(100 * 5e-6 + 40 * 25e-6)]


async def test_requests_without_the_attempt_token_never_reach_upstream(rig: Rig) -> None:
    status, err = await post(rig, body(), token=OPERATOR_KEY)
    assert status == 401 and err["error"]["type"] == "authentication_error"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{rig.url}/v1/messages", json=body()) as r:
            assert r.status == 401
    assert rig.api.requests == [] and rig.booked == []


async def test_past_the_cap_the_next_request_is_refused_the_way_the_cli_stops(rig: Rig) -> None:
    rig.api.usage["commit"] = Usage(input_tokens=10_000)  # $0.05 a response, cap $0.01
    assert (await post(rig, body(stream=True)))[0] == 200
    assert rig.account.cap_reached.is_set()  # one response may overshoot, no more
    status, err = await post(rig, body(stream=True))
    assert status == 402 and err["error"]["type"] == "billing_error"
    assert "attempt budget of $0.01 spent" in err["error"]["message"]
    assert len(rig.api.requests) == 1 and rig.booked == [pytest.approx(0.051)]


async def test_a_model_without_a_price_is_refused(rig: Rig) -> None:
    status, err = await post(rig, body(model="claude-imaginary-9"))
    assert status == 400 and "no price for model 'claude-imaginary-9'" in err["error"]["message"]
    assert rig.api.requests == []


async def test_probe_and_free_endpoints(rig: Rig) -> None:
    headers = {"x-api-key": rig.account.token}
    async with aiohttp.ClientSession() as http:
        async with http.head(f"{rig.url}/") as r:
            assert r.status == 200  # answered here, never forwarded
        async with http.post(
            f"{rig.url}/v1/messages/count_tokens", json=body(), headers=headers
        ) as r:
            assert r.status == 200 and (await r.json())["input_tokens"] > 0
        async with http.post(f"{rig.url}/v1/files", json={}, headers=headers) as r:
            assert r.status == 404
    assert rig.booked == [] and ("HEAD", "/") not in rig.api.calls


async def test_bytes_stream_through_unbuffered_and_a_cut_stream_is_billed(rig: Rig) -> None:
    rig.api.usage["hang"] = Usage(input_tokens=2000)
    headers = {"x-api-key": rig.account.token}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{rig.url}/v1/messages", json=body("hang", stream=True), headers=headers
        ) as r:
            seen = b""
            async with asyncio.timeout(5):  # upstream never finishes: bytes must arrive anyway
                while b"content_block_delta" not in seen:
                    seen += await r.content.readany()
        # the client hung up mid-stream
    for _ in range(100):
        if rig.booked:
            break
        await asyncio.sleep(0.05)
    assert rig.booked and rig.booked[0] >= 2000 * 5e-6  # input from message_start at least
