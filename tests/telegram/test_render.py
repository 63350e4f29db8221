"""Message formatting: Telegram's limit in UTF-16 units, splitting, trimming, notices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ghapp.core.model import Task, TaskSource, TaskState
from ghapp.core.ports import Notice, NoticeKind
from ghapp.messaging.text import MAX_MESSAGE, cut, fit_tail, render_notice, trim, units
from ghapp.telegram.bot import api_base
from ghapp.telegram.render import split


def _task(**kw: object) -> Task:
    start = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    fields: dict[str, object] = {
        "id": 7,
        "source": TaskSource.TELEGRAM,
        "repo": "octo/app",
        "installation_id": 1,
        "issue_number": -1700000000,
        "requester": "telegram:op",
        "instructions": "add a health check",
        "budget_usd": 5.0,
        "state": TaskState.SUCCEEDED,
        "created_at": start,
        "title": "add a health check",
        "started_at": start,
        "finished_at": start + timedelta(seconds=187),
    }
    fields.update(kw)
    return Task(**fields)  # type: ignore[arg-type]


def test_units_count_utf16_and_cut_never_splits_a_surrogate_pair() -> None:
    assert units("abc") == 3 and units("😀") == 2
    assert cut("a😀b", 2) == "a" and cut("a😀b", 3) == "a😀"


def test_split_keeps_every_part_under_the_limit_and_prefers_line_ends() -> None:
    text = "\n".join(f"line {i} " + "😀" * 50 for i in range(200))
    parts = split(text, max_parts=10)
    assert len(parts) > 1 and all(units(p) <= MAX_MESSAGE for p in parts)
    assert all(p.startswith("line ") for p in parts)  # broken at line ends
    assert "".join(parts).count("line") == 200


def test_split_trims_what_does_not_fit_in_the_allowed_parts() -> None:
    parts = split("x" * 50_000, max_parts=2)
    assert len(parts) == 2 and parts[-1].endswith("[trimmed]")
    assert all(units(p) <= MAX_MESSAGE for p in parts)
    assert trim("y" * 5000).endswith("[trimmed]") and units(trim("y" * 5000)) == MAX_MESSAGE


def test_fit_tail_keeps_the_last_lines_that_fit() -> None:
    lines = [f"{i:04d} " + "z" * 200 for i in range(100)]
    text, kept = fit_tail("header", lines)
    assert units(text) <= MAX_MESSAGE and text.startswith("header\n")
    assert text.endswith(lines[-1]) and kept == len(text.splitlines()) - 1 < 100


def test_notice_for_a_telegram_task_names_the_repo_not_a_synthetic_issue() -> None:
    task = _task()
    text = render_notice(
        Notice(NoticeKind.PR_OPENED, "Task #7: pull request https://x/pull/1 (cost $0.50)", task)
    )
    assert "https://x/pull/1" in text and "$0.50" in text and "Took 3m 07s" in text
    queued = render_notice(
        Notice(NoticeKind.QUEUED, "Task #7 queued: octo/app#-1700000000 add", task)
    )
    assert "-1700000000" not in queued and "octo/app (from Telegram)" in queued


def test_budget_notice_without_a_task() -> None:
    text = render_notice(Notice(NoticeKind.BUDGET_80, "Daily budget: $8.00 of $10.00 spent"))
    assert text.startswith("⚠️") and "$8.00 of $10.00" in text


def test_api_base_accepts_a_bare_server_url() -> None:
    assert api_base("https://api.telegram.org/bot") == "https://api.telegram.org/bot"
    assert api_base("http://127.0.0.1:8081/") == "http://127.0.0.1:8081/bot"
    assert api_base("http://h/custom/{token}/x") == "http://h/custom/{token}/x"
