"""The command grammar under hostile text: unicode, control characters, huge inputs.

Extends tests/unit/test_commands.py (which fuzzes short printable text) with the inputs an
attacker types into a comment or a Telegram message. The contract: parse_command returns
None, a well-formed command, or raises BadCommand (a GhappError) with a short message.
"""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ghapp.core.commands import (
    NewTaskCommand,
    SimpleCommand,
    parse_budget,
    parse_command,
    task_cap,
)
from ghapp.core.model import BadCommand, GhappError
from tests.fuzz.strategies import HOSTILE_CHARS, HOSTILE_TEXT, SPECIAL, huge

MAX = 10.0
WORDS = ("status", "cancel", "retry", "help")
# GitHub refuses comments over 65536 characters; the reply also carries the help text.
GITHUB_COMMENT_MAX = 65536
CLEAR_MESSAGE_MAX = 1000


def check(text: str, prefix: str = "/mc") -> NewTaskCommand | SimpleCommand | None:
    """Parse and assert the shape of whatever comes back."""
    try:
        cmd = parse_command(text, prefix, MAX)
    except BadCommand as exc:
        assert isinstance(exc, GhappError)
        assert str(exc).strip()
        return None
    if cmd is None:
        assert not text.lstrip().startswith(prefix) or (
            len(text.lstrip()) > len(prefix) and not text.lstrip()[len(prefix)].isspace()
        )
    elif isinstance(cmd, SimpleCommand):
        assert cmd.name in WORDS
    else:
        assert isinstance(cmd, NewTaskCommand)
        assert cmd.instructions and cmd.instructions == cmd.instructions.strip()
        assert cmd.budget_usd is None or (
            math.isfinite(cmd.budget_usd) and 0 < cmd.budget_usd <= MAX
        )
        assert 0 < task_cap(cmd.budget_usd, 5.0, MAX) <= MAX
    return cmd


@settings(max_examples=400, deadline=None)
@given(HOSTILE_TEXT, st.sampled_from(["", " ", "\n", "\t", "\u2003", "\x1c"]))
def test_hostile_text_after_the_prefix(text: str, sep: str) -> None:
    check("/mc" + sep + text)
    check(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(SPECIAL, HOSTILE_CHARS), max_size=40).map("".join), HOSTILE_TEXT)
def test_any_prefix_any_text(prefix: str, text: str) -> None:
    """MC_COMMAND is configurable; no prefix (even an empty one) makes parsing crash."""
    check(prefix + " " + text, prefix or "/mc")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    huge(HOSTILE_TEXT, st.integers(5_000, 60_000)),
    st.sampled_from(["/mc ", "/mc budget=", "/mc do budget=1 ", "   /mc\n", ""]),
)
def test_huge_inputs_parse_in_linear_time(text: str, head: str) -> None:
    started = time.perf_counter()
    check(head + text)
    check(head + text + " budget=2")
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    "text",
    [
        "/mc " + " " * 1_000_000 + "x",
        "/mc " + "budget" * 200_000,
        "/mc " + "budget " * 200_000 + "=1",
        "/mc x " + " budget =" * 100_000,
        "/mc " + "\n" * 500_000,
        "/mc " + "\x00" * 500_000,
        " " * 1_000_000 + "/mc x",
    ],
)
def test_pathological_megabyte_inputs(text: str) -> None:
    started = time.perf_counter()
    check(text)
    assert time.perf_counter() - started < 2.0


@settings(max_examples=300, deadline=None)
@given(
    st.lists(HOSTILE_CHARS.filter(lambda c: not c.isspace()), min_size=1, max_size=30).map("".join)
)
def test_instructions_round_trip(words: str) -> None:
    """What a writer asks for reaches the agent as written (the grammar eats nothing else)."""
    if "budget" in words.lower() or words.lower() in WORDS:
        return
    assert parse_command(f"/mc {words}", "/mc", MAX) == NewTaskCommand(words)


@settings(max_examples=300, deadline=None)
@given(
    st.floats(min_value=0.01, max_value=MAX),
    st.sampled_from(["budget={}", "budget=${}", "BUDGET={}", "Budget=${}", "\tbudget={}\t"]),
    st.sampled_from(["fix it", "fix\nthe\nbug", "status please"]),
)
def test_budget_in_range_is_honoured(value: float, form: str, words: str) -> None:
    """budget= is its own token (issue 15): any case, a $ or not, any whitespace around it."""
    cmd = parse_command(f"/mc {words} {form.format(repr(value))}", "/mc", MAX)
    assert cmd == NewTaskCommand(words, value)


@settings(max_examples=300, deadline=None)
@given(HOSTILE_TEXT)
def test_a_budget_is_a_number_or_a_clear_refusal(raw: str) -> None:
    try:
        rest, value = parse_budget(f"do it budget={raw}", MAX)
    except BadCommand as exc:
        assert "budget" in str(exc)
    else:
        assert "do it" in rest
        assert value is None or (math.isfinite(value) and 0 < value <= MAX)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(WORDS), st.sampled_from(["", " ", "\t", "\u00a0", "\x0b"]))
def test_words_with_trailing_space_stay_words(word: str, tail: str) -> None:
    assert parse_command(f"/mc {word.upper()}{tail}", "/mc", MAX) == SimpleCommand(word)


@example(raw="9" * 70_000)
@settings(max_examples=30, deadline=None)
@given(huge(HOSTILE_TEXT.filter(lambda s: s.strip() != ""), st.integers(2_000, 70_000)))
def test_bad_command_messages_stay_short(raw: str) -> None:
    try:
        parse_command("/mc fix budget=" + raw.replace(" ", "x"), "/mc", MAX)
    except BadCommand as exc:
        assert len(str(exc)) <= CLEAR_MESSAGE_MAX, f"{len(str(exc))} characters"
