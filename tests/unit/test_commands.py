"""The command grammar shared by GitHub and Telegram."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ghapp.core.commands import (
    NewTaskCommand,
    SimpleCommand,
    help_text,
    parse_command,
    task_cap,
)
from ghapp.core.model import BadCommand


def test_instructions_become_a_new_task() -> None:
    cmd = parse_command("/mc fix the flaky test\nand add a regression test", "/mc", 10)
    assert cmd == NewTaskCommand("fix the flaky test\nand add a regression test")


def test_budget_option_is_split_off() -> None:
    cmd = parse_command("/mc refactor budget=7.5 please", "/mc", 10)
    assert isinstance(cmd, NewTaskCommand) and cmd.budget_usd == 7.5
    assert cmd.instructions.split() == ["refactor", "please"]
    cmd = parse_command("/mc budget=$2 do it", "/mc", 10)
    assert isinstance(cmd, NewTaskCommand) and cmd.budget_usd == 2 and cmd.instructions == "do it"


@pytest.mark.parametrize("word", ["status", "cancel", "retry", "help", "STATUS"])
def test_words(word: str) -> None:
    assert parse_command(f"/mc {word}", "/mc", 10) == SimpleCommand(word.lower())


def test_only_writers_may_cancel_retry_config_or_autofix() -> None:
    assert SimpleCommand("cancel").changes_state and SimpleCommand("retry").changes_state
    assert SimpleCommand("config").changes_state and SimpleCommand("autofix", "off").changes_state
    assert not SimpleCommand("status").changes_state and not SimpleCommand("help").changes_state


def test_config_and_autofix() -> None:
    assert parse_command("/mc config", "/mc", 10) == SimpleCommand("config")
    assert parse_command("/mc autofix OFF", "/mc", 10) == SimpleCommand("autofix", "off")
    assert parse_command("/mc autofix on", "/mc", 10) == SimpleCommand("autofix", "on")
    assert parse_command("/mc autofix the bug", "/mc", 10) == NewTaskCommand("autofix the bug")


@pytest.mark.parametrize(
    "text",
    ["hello /mc do it", "/mcdo it", "LGTM", "", "   ", "/m c"],
)
def test_not_addressed_to_ghapp(text: str) -> None:
    assert parse_command(text, "/mc", 10) is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("/mc", "say what to do"),
        ("/mc   ", "say what to do"),
        ("/mc do it budget=abc", "number"),
        ("/mc do it budget=0", "more than $0"),
        ("/mc do it budget=-3", "more than $0"),
        ("/mc do it budget=nan", "more than $0"),
        ("/mc do it budget=11", "above the limit of $10"),
        ("/mc budget=2", "not only the budget"),
        ("/mc a budget=1 b budget=2", "at most once"),
    ],
)
def test_malformed_commands_say_why(text: str, needle: str) -> None:
    with pytest.raises(BadCommand) as info:
        parse_command(text, "/mc", 10)
    assert needle in str(info.value)


@pytest.mark.parametrize("text", ["/mc cancel this", "/mc cancel\nwrong issue", "/mc Cancel it!"])
def test_cancel_with_more_words_still_cancels(text: str) -> None:
    assert parse_command(text, "/mc", 10) == SimpleCommand("cancel")


def test_retry_with_more_words_is_refused_not_a_new_task() -> None:
    with pytest.raises(BadCommand, match="retry` takes nothing after it"):
        parse_command("/mc retry with more budget", "/mc", 10)


def test_budget_is_only_its_own_token() -> None:
    cmd = parse_command("/mc set budget = 3 in config", "/mc", 10)
    assert cmd == NewTaskCommand("set budget = 3 in config")
    cmd = parse_command("/mc raise the monthly_budget=3 default", "/mc", 10)
    assert cmd == NewTaskCommand("raise the monthly_budget=3 default")
    cmd = parse_command("/mc fix it\nbudget=3", "/mc", 10)
    assert isinstance(cmd, NewTaskCommand) and cmd.budget_usd == 3


def test_status_with_more_text_is_instructions() -> None:
    assert parse_command("/mc status of the parser should be logged", "/mc", 10) == NewTaskCommand(
        "status of the parser should be logged"
    )


def test_cap_defaults_and_never_exceeds_max() -> None:
    assert task_cap(None, 5, 10) == 5
    assert task_cap(8, 5, 10) == 8
    assert task_cap(50, 5, 10) == 10


def test_help_names_every_command_and_the_limit() -> None:
    text = help_text("/mc", 10)
    for word in ("status", "cancel", "retry", "help", "budget=", "$10"):
        assert word in text


@given(st.text(max_size=300))
def test_any_text_parses_or_fails_clearly(text: str) -> None:
    try:
        result = parse_command(text, "/mc", 10)
    except BadCommand as exc:
        assert str(exc)
    else:
        assert result is None or isinstance(result, NewTaskCommand | SimpleCommand)
        if isinstance(result, NewTaskCommand):
            assert result.instructions
            assert result.budget_usd is None or 0 < result.budget_usd <= 10
