"""stream-json parsing: shapes measured from CLI 2.1.197, and a fuzz that it never crashes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ghapp.agent.stream import (
    StreamError,
    StreamState,
    parse_line,
    parse_result,
    summaries,
)
from ghapp.core.model import GhappError

INIT = {"type": "system", "subtype": "init", "cwd": "/w/co", "session_id": "s1", "model": "m"}
WRITE = {
    "type": "assistant",
    "message": {
        "id": "msg_1",
        "content": [
            {"type": "text", "text": "I'll add the file."},
            {"type": "tool_use", "id": "t1", "name": "Write", "input": {"file_path": "/w/a.txt"}},
        ],
        "usage": {"input_tokens": 100, "output_tokens": 1},
    },
}
BASH = {
    "type": "assistant",
    "message": {
        "id": "msg_2",
        "content": [{"type": "tool_use", "name": "Bash", "input": {"command": "git commit -m x"}}],
        "usage": {"input_tokens": 1000, "output_tokens": 10},
    },
}
TOOL_OK = {
    "type": "user",
    "message": {"content": [{"type": "tool_result", "tool_use_id": "t1", "content": "[main 1] x"}]},
}
SUCCESS = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "num_turns": 3,
    "result": "Done.",
    "total_cost_usd": 0.0045,
    "permission_denials": [],
}


def line(obj: dict[str, Any]) -> str:
    """One stream-json line."""
    return json.dumps(obj)


def test_stream_error_is_a_ghapp_error() -> None:
    assert issubclass(StreamError, GhappError)


def test_blank_line_is_nothing() -> None:
    assert parse_line("  \n") is None


@pytest.mark.parametrize("text", ["{", "[1,2]", '"x"', "{}", '{"type": 3}', "nan", "[" * 100_000])
def test_invalid_lines_raise_stream_error(text: str) -> None:
    with pytest.raises(StreamError):
        parse_line(text)


def test_success_run() -> None:
    state = StreamState()
    out: list[str] = []
    for obj in (INIT, WRITE, TOOL_OK, BASH, SUCCESS):
        out += state.feed(line(obj))
    assert state.result is not None and state.result.success
    assert state.result.cost_usd == pytest.approx(0.0045)  # logged as a cross-check only
    assert state.session_id == "s1"
    assert out[0].startswith("session started")
    assert "tool Write: /w/a.txt" in out
    assert "tool Bash: git commit -m x" in out
    assert any(s.startswith("  -> ok: [main 1]") for s in out)
    assert out[-1].startswith("result: success, $0.0045, 3 turns, 0 denials: Done.")


@pytest.mark.parametrize(
    ("fields", "success"),
    [
        ({}, True),
        ({"is_error": True, "result": "API Error: 500"}, False),
        ({"permission_denials": [{"tool_name": "Write"}]}, False),
        ({"subtype": "error_max_budget_usd", "errors": ["Reached maximum budget ($1)"]}, False),
        ({"is_error": None}, False),
    ],
)
def test_result_success_rule(fields: dict[str, Any], success: bool) -> None:
    assert parse_result({**SUCCESS, **fields}).success is success


def test_cost_falls_back_to_cost_usd_and_ignores_junk() -> None:
    data = {**SUCCESS, "total_cost_usd": "1.0", "cost_usd": 0.25}
    assert parse_result(data).cost_usd == 0.25
    assert parse_result({**SUCCESS, "total_cost_usd": True, "cost_usd": -1}).cost_usd is None


def test_bad_lines_are_counted_and_summaries_skip_them() -> None:
    state = StreamState()
    with pytest.raises(StreamError):
        state.feed("Warning: no stdin data received in 3s")
    assert state.bad_lines == 1
    out = summaries(["garbage", line(INIT), "", line(BASH)])
    assert out == ["session started: model m, cwd /w/co", "tool Bash: git commit -m x"]


def test_summary_lines_are_single_and_clipped() -> None:
    big = {**BASH, "message": {"content": [{"type": "text", "text": "a\nb " * 10_000}]}}
    (text,) = StreamState().feed(line(big))
    assert "\n" not in text and len(text) <= 300


KEYS = st.sampled_from(
    [
        "type", "subtype", "message", "content", "usage", "total_cost_usd", "cost_usd",
        "is_error", "permission_denials", "num_turns", "result", "name", "input", "command",
        "text", "id", "errors", "session_id", "input_tokens", "output_tokens", "attempt",
    ]
)  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["system", "assistant", "user", "result", "tool_use", "tool_result", "init"])
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=30,
)


def _feed_all(lines: list[str]) -> None:
    """Feed lines; only StreamError may escape a single feed."""
    state = StreamState()
    for text in lines:
        try:
            state.feed(text)
        except StreamError:
            pass
    assert state.bad_lines <= state.lines


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=200), max_size=5))
def test_fuzz_text_never_raises_other_errors(lines: list[str]) -> None:
    _feed_all(lines)


@settings(max_examples=500, deadline=None)
@given(st.lists(JSON, max_size=5))
def test_fuzz_json_never_raises_other_errors(objs: list[Any]) -> None:
    _feed_all([json.dumps(o) for o in objs])
    summaries(json.dumps(o) for o in objs)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["system", "assistant", "user", "result"]),
    st.dictionaries(KEYS, JSON, max_size=6),
)
def test_fuzz_typed_events_never_raise(kind: str, body: dict[str, Any]) -> None:
    _feed_all([json.dumps({**body, "type": kind})])
