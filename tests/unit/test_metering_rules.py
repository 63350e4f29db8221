"""Prices and usage reading: what the metering proxy books for a response."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ghapp.agent.prices import PriceError, load_prices, normalise
from ghapp.agent.usage import UsageMeter

PRICES = load_prices(None)


def sse(name: str, data: dict[str, object]) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


def start(**usage: int) -> bytes:
    return sse("message_start", {"message": {"model": "x", "usage": usage}})


def delta(**usage: int) -> bytes:
    return sse("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": usage})


def text(chars: int) -> bytes:
    return sse("content_block_delta", {"index": 0, "delta": {"text": "y" * chars}})


def test_cost_matches_the_clis_own_figure() -> None:
    # measured: the CLI 2.1.197 reported total_cost_usd 0.0315 for this usage on opus-4-8
    usage = {
        "input_tokens": 1000,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 3000,
        "output_tokens": 500,
    }
    assert PRICES.cost("claude-opus-4-8", usage) == pytest.approx(0.0315)
    assert PRICES.cost("claude-opus-5-5", usage) == pytest.approx(0.0246)


def test_one_hour_cache_writes_cost_more_and_extras_are_charged() -> None:
    usage = {
        "input_tokens": 0,
        "cache_creation_input_tokens": 1_000_000,
        "cache_creation": {"ephemeral_1h_input_tokens": 400_000},
        "output_tokens": 0,
    }
    assert PRICES.cost("claude-sonnet-4-5", usage) == pytest.approx(0.6 * 3.75 + 0.4 * 6)
    searches = {"output_tokens": 0, "server_tool_use": {"web_search_requests": 3}}
    assert PRICES.cost("claude-haiku-4-5", searches) == pytest.approx(0.03)
    fast = {"input_tokens": 1_000_000, "speed": "fast"}
    assert PRICES.cost("claude-opus-4-8", fast) == pytest.approx(10.0)
    us = {"input_tokens": 1_000_000, "inference_geo": "us"}
    assert PRICES.cost("claude-opus-4-8", us) == pytest.approx(5.5)


def test_haiku_long_prompt_band_applies_to_every_token() -> None:
    short = {"input_tokens": 100_000, "output_tokens": 1000}
    long = {"input_tokens": 100_001, "output_tokens": 1000}
    assert PRICES.cost("claude-haiku-5-5", short) == pytest.approx(0.01 + 0.0005)
    assert PRICES.cost("claude-haiku-5-5", long) == pytest.approx(100_001 * 0.5e-6 + 0.0025)


def test_model_ids_are_normalised_and_unknown_models_refused() -> None:
    assert normalise("Claude-Haiku-4-5-20251001") == "claude-haiku-4-5"
    assert normalise("claude-opus-4-8[1m]") == "claude-opus-4-8"
    assert PRICES.knows("claude-haiku-4-5-20251001") and not PRICES.knows("gpt-5")
    with pytest.raises(PriceError, match="no price"):
        PRICES.cost("claude-unknown-9", {"input_tokens": 1})


def test_odd_usage_values_count_as_nothing() -> None:
    odd = {"input_tokens": -5, "output_tokens": "9", "cache_read_input_tokens": float("inf")}
    assert PRICES.cost("claude-opus-4-8", odd) == 0.0


def test_price_file_overrides_and_extends(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"my-model": {"input": 1, "output": 2}, "claude-opus-4-8": {
        "input": 50, "output": 250}}))  # fmt: skip
    table = load_prices(path)
    assert table.cost("my-model-20260101", {"input_tokens": 10**6, "output_tokens": 10**6}) == 3
    assert table.cost("claude-opus-4-8", {"input_tokens": 10**6}) == 50
    for bad in ('{"m": {"output": 1}}', '{"m": {"input": "x", "output": 1}}', "[]", "{"):
        path.write_text(bad)
        with pytest.raises(PriceError, match="MC_PRICES"):
            load_prices(path)
    path.write_text('{"m": {"input": -1, "output": 1}}')
    with pytest.raises(PriceError, match=">= 0"):
        load_prices(path)


def test_streamed_usage_is_overwritten_never_added() -> None:
    meter = UsageMeter("claude-opus-4-8")
    for chunk in (
        start(input_tokens=10, cache_read_input_tokens=5, output_tokens=1),
        text(30),
        delta(output_tokens=20),
        delta(output_tokens=50, input_tokens=10),  # cumulative: the last value wins
        sse("message_stop", {}),
    ):
        meter.feed(chunk)
    assert meter.final
    assert meter.billed() == {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 50}


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_any_chunking_reads_the_same_usage(cuts: list[int]) -> None:
    stream = start(input_tokens=7, output_tokens=1) + text(100) + delta(output_tokens=33)
    stream = stream.replace(b"\n", b"\r\n")
    meter = UsageMeter("m")
    pos = 0
    for cut in cuts:
        meter.feed(stream[pos : pos + cut])
        pos += cut
    meter.feed(stream[pos:])
    assert meter.billed() == {"input_tokens": 7, "output_tokens": 33}


def test_a_cut_stream_bills_input_and_estimates_output() -> None:
    meter = UsageMeter("m")
    meter.feed(start(input_tokens=1000, output_tokens=1) + text(3000) + text(3000))
    billed = meter.billed()
    assert billed["input_tokens"] == 1000 and billed["output_tokens"] >= 2000
    err = UsageMeter("m")
    err.feed(start(input_tokens=5, output_tokens=1))
    err.feed(sse("error", {"error": {"type": "overloaded_error", "message": "x"}}))
    assert err.error == "overloaded_error" and err.billed()["input_tokens"] == 5


def test_a_huge_event_is_counted_not_kept() -> None:
    meter = UsageMeter("m")
    meter.feed(start(input_tokens=1, output_tokens=1))
    meter.feed(b"event: content_block_delta\ndata: " + b"z" * (3 << 20))
    assert len(meter._buf) <= 1 << 20
    meter.feed(b"\n\n" + delta(output_tokens=4))
    assert meter.billed()["output_tokens"] == 4


def test_a_whole_body_is_read_once() -> None:
    meter = UsageMeter("m")
    body = {"type": "message", "model": "m", "usage": {"input_tokens": 3, "output_tokens": 4}}
    meter.feed_body(json.dumps(body).encode())
    assert meter.final and meter.billed() == {"input_tokens": 3, "output_tokens": 4}
    junk = UsageMeter("m")
    junk.feed_body(b"\xff not json")
    assert junk.usage == {}
