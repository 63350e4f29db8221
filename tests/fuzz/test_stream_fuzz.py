"""The stream-json reader under hostile output, beyond tests/adapters/test_stream_parse.py.

That file fuzzes short JSON built from the known keys. Here: raw bytes decoded the way
ClaudeWorker decodes them, lone surrogates and control characters inside valid events,
nesting at and past the recursion limit, junk lines interleaved with a real run, and the
task-log reader (ghapp/agent/logview.py) reading back what the worker wrote.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ghapp.agent.logview import _read_tail
from ghapp.agent.stream import (
    CLIP,
    StreamError,
    StreamState,
    clip,
    parse_line,
    parse_result,
    summaries,
)
from tests.fuzz.strategies import HOSTILE_TEXT, json_values

# Text as a JSON decoder can produce it: any code point, lone surrogates included.
ANY_TEXT = st.text(st.characters(codec=None, categories=None), max_size=60) | HOSTILE_TEXT


def run_of(text: str, cost: float = 0.0123) -> list[dict[str, Any]]:
    """A plausible run whose every free-text field carries `text`."""
    usage = {"input_tokens": 1000, "output_tokens": 10}
    return [
        {"type": "system", "subtype": "init", "session_id": "s", "model": text, "cwd": text},
        {
            "type": "assistant",
            "message": {
                "id": "m1",
                "content": [
                    {"type": "text", "text": text},
                    {"type": "tool_use", "id": "t", "name": "Bash", "input": {"command": text}},
                ],
                "usage": usage,
            },
        },
        {
            "type": "user",
            "message": {
                "content": [
                    {"type": "tool_result", "tool_use_id": "t", "content": text, "is_error": True}
                ]
            },
        },
        {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "num_turns": 2,
            "result": text,
            "total_cost_usd": cost,
            "permission_denials": [],
        },
    ]


def feed(lines: list[str]) -> tuple[StreamState, list[str]]:
    state, out = StreamState(), []
    for line in lines:
        try:
            out += state.feed(line)
        except StreamError:
            pass
    return state, out


def check_summary(line: str) -> None:
    assert len(line) <= CLIP + len("  -> ")
    assert not any(c in line for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
    line.encode("utf-8")  # strict: no lone surrogate reaches Telegram or GitHub


def check_state(state: StreamState) -> None:
    res = state.result
    assert res is None or res.cost_usd is None or math.isfinite(res.cost_usd)
    assert state.bad_lines <= state.lines


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_raw_bytes_as_the_worker_decodes_them(chunks: list[bytes]) -> None:
    lines = [
        raw.decode("utf-8", "replace") for raw in b"\n".join(chunks).split(b"\n")
    ]  # ClaudeWorker: _pump splits at b"\n", on_line decodes with "replace"
    state, out = feed(lines)
    check_state(state)
    for line in out:
        check_summary(line)


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT, st.booleans())
def test_hostile_text_inside_valid_events(text: str, ascii_only: bool) -> None:
    lines = [json.dumps(obj, ensure_ascii=ascii_only) for obj in run_of(text)]
    state, out = feed(lines)
    check_state(state)
    assert state.result is not None and state.result.success
    assert state.result.cost_usd == pytest.approx(0.0123)
    assert len(out) >= 4
    for line in out:
        check_summary(line)


@settings(max_examples=200, deadline=None)
@given(st.lists(json_values(), max_size=6), st.lists(ANY_TEXT, max_size=6), st.randoms())
def test_junk_between_the_lines_changes_nothing(
    extra: list[Any], junk: list[str], rnd: Any
) -> None:
    """Non-event lines (warnings, partial writes) interleaved anywhere are only counted."""
    clean = [json.dumps(o) for o in run_of("fix the bug", cost=0.5)]
    noise = [json.dumps(v) for v in extra if not isinstance(v, dict)] + [
        t for t in junk if not t.strip().startswith("{")
    ]
    mixed = list(clean)
    for item in noise:
        mixed.insert(rnd.randint(0, len(mixed)), item)
    a, out_a = feed(clean)
    b, out_b = feed(mixed)
    assert (a.result, a.session_id) == (b.result, b.session_id)
    assert out_a == out_b
    assert b.bad_lines >= sum(1 for n in noise if n.strip())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(1, 5000),
    st.sampled_from(["input", "content", "message", "result", "usage"]),
    st.sampled_from(["assistant", "user", "result", "system"]),
)
def test_nesting_around_the_recursion_limit(depth: int, where: str, kind: str) -> None:
    """json.loads gives up near 1000 levels; whatever it returns, summaries must not."""
    inner = "[" * depth + "1" + "]" * depth
    line = (
        f'{{"type":"{kind}","subtype":"init","message":{{"content":[{{"type":"tool_use","name":"X",'
        f'"input":{{"k":{inner}}}}},{{"type":"text","text":"t"}}],"usage":{{"input_tokens":{inner}}}}},'
        f'"{where}":{inner},"total_cost_usd":0.1}}'
    )
    state, out = feed([line])
    check_state(state)
    for text in out:
        check_summary(text)


@settings(max_examples=200, deadline=None)
@given(json_values())
def test_result_success_needs_every_condition(junk: Any) -> None:
    data = junk if isinstance(junk, dict) else {"result": junk}
    for key in ("subtype", "is_error", "permission_denials"):
        values: tuple[object, ...] = ("success", False, [], None, 0, "", junk)
        for value in values:
            res = parse_result({**data, key: value})
            if res.success:
                assert res.subtype == "success" and res.is_error is False
                assert res.permission_denials == 0
            assert res.cost_usd is None or (math.isfinite(res.cost_usd) and res.cost_usd >= 0)


@settings(max_examples=200, deadline=None)
@given(ANY_TEXT, st.integers(1, 400))
def test_clip_is_one_bounded_encodable_line(text: str, limit: int) -> None:
    out = clip(text * 3, limit)
    assert len(out) <= limit
    check_summary(out[:CLIP])


def test_parse_line_types() -> None:
    for text in ("{}", "[]", "null", '{"type": ""}', '{"type": ["x"]}', "\ud800", "\x00"):
        with pytest.raises(StreamError):
            parse_line(text)


@example(text="\x1b[31mred\x00\x07")
@given(ANY_TEXT)
def test_summaries_are_printable(text: str) -> None:
    _, out = feed([json.dumps(o) for o in run_of(text)])
    for line in out:
        assert line.isprintable(), repr(line)


# -- the task log read back (ghapp/agent/logview.py) ------------------------------------------


def write_log(path: Path, lines: list[str]) -> None:
    """As ClaudeWorker writes it: each raw line and b"\\n"."""
    path.write_bytes(b"".join(line.encode("utf-8", "surrogatepass") + b"\n" for line in lines))


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x85\u2028\u2029"),
               max_size=40))  # fmt: skip
def test_log_reads_back_like_the_stream(tmp_path: Path, text: str) -> None:
    lines = [json.dumps(o, ensure_ascii=False) for o in run_of(text, cost=0.75)]
    path = tmp_path / "t.log"
    write_log(path, lines)
    state, out = feed(lines)
    assert state.result is not None and state.result.cost_usd == 0.75
    assert summaries(_read_tail(path, 10_000_000)) == out


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85"])
def test_log_line_with_a_unicode_line_separator(tmp_path: Path, sep: str) -> None:
    lines = [json.dumps(o, ensure_ascii=False) for o in run_of(f"done{sep}ok", cost=0.75)]
    path = tmp_path / "t.log"
    write_log(path, lines)
    state, _ = feed(_read_tail(path, 10_000_000))
    assert state.result is not None and state.result.cost_usd == 0.75
