"""Real GitHub payloads translate into the right triggers, and junk never raises."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ghapp.core.commands import NewTaskCommand, SimpleCommand
from ghapp.core.model import TaskSource
from ghapp.github import events
from tests.conftest import payload


def labeled(name: str = "mc-auto") -> dict[str, Any]:
    data = payload("issues.labeled", id=42)
    data["label"]["name"] = name
    return data


def test_trigger_label_queues_the_issue() -> None:
    trig = events.label_trigger(labeled(), "mc-auto", "d1")
    assert trig is not None
    assert (trig.repo, trig.number, trig.installation_id) == ("Codertocat/Hello-World", 1, 42)
    assert trig.sender == "Codertocat" and not trig.sender_is_bot
    assert trig.source is TaskSource.LABEL and trig.command == NewTaskCommand("")
    assert trig.title == "Spelling error in the README file" and trig.delivery_id == "d1"


def test_other_labels_and_missing_installation_are_ignored() -> None:
    assert events.label_trigger(labeled("bug"), "mc-auto") is None
    data = payload("issues.labeled")
    data["label"]["name"] = "mc-auto"
    assert events.label_trigger(data, "mc-auto") is None  # a repository hook, not our app


def test_bot_sender_is_flagged() -> None:
    data = labeled()
    data["sender"]["type"] = "Bot"
    trig = events.label_trigger(data, "mc-auto")
    assert trig is not None and trig.sender_is_bot


def test_comment_command_on_issue() -> None:
    data = payload("issue_comment.created.with-installation")
    data["comment"]["body"] = "/mc add a CONTRIBUTING file budget=3"
    trig = events.comment_trigger(data, "/mc", 10, "d2")
    assert trig is not None and not trig.is_pull_request
    assert trig.command == NewTaskCommand("add a CONTRIBUTING file", 3.0)
    assert trig.comment_id == data["comment"]["id"] and trig.source is TaskSource.COMMENT


def test_plain_comment_is_not_a_trigger() -> None:
    data = payload("issue_comment.created.with-installation")
    assert events.comment_trigger(data, "/mc", 10) is None


def test_malformed_command_carries_the_error() -> None:
    data = payload("issue_comment.created.with-installation")
    data["comment"]["body"] = "/mc fix budget=lots"
    trig = events.comment_trigger(data, "/mc", 10)
    assert trig is not None and trig.command is None and trig.error is not None
    assert "budget" in trig.error


def test_comment_on_pull_request_is_marked() -> None:
    data = payload("issue_comment.created.pull_request", id=7)
    data["comment"]["body"] = "/mc status"
    trig = events.comment_trigger(data, "/mc", 10)
    assert trig is not None and trig.is_pull_request and trig.command == SimpleCommand("status")


def test_edited_comment_never_triggers() -> None:
    data = payload("issue_comment.edited", id=7)
    data["comment"]["body"] = "/mc do something"
    assert events.comment_trigger(data, "/mc", 10) is None


def test_review_comment_passes_file_and_line() -> None:
    data = payload("pull_request.opened", id=9)
    data["action"] = "created"
    data["comment"] = {"id": 77, "body": "/mc rename this", "path": "src/a.py", "line": 12}
    trig = events.review_comment_trigger(data, "/mc", 10)
    assert trig is not None and trig.source is TaskSource.REVIEW and trig.is_pull_request
    assert (trig.review_path, trig.review_line, trig.number) == ("src/a.py", 12, data["number"])


def test_each_trigger_carries_its_own_time() -> None:
    """The conversation the agent reads ends at this moment, taken from the payload."""
    label = events.label_trigger(labeled(), "mc-auto")
    assert label is not None and label.triggered_at == datetime(2019, 5, 15, 15, 20, 18, tzinfo=UTC)
    data = payload("issue_comment.created.with-installation")
    data["comment"]["body"] = "/mc go"
    data["comment"]["created_at"] = "2026-03-01T12:00:05Z"
    comment = events.comment_trigger(data, "/mc", 10)
    assert comment is not None and comment.triggered_at == datetime(
        2026, 3, 1, 12, 0, 5, tzinfo=UTC
    )
    review = payload("pull_request.opened", id=9)
    review |= {"action": "submitted", "review": {"body": "/mc go", "submitted_at": "2026-03-01"}}
    review["pull_request"]["body"] = "PR text"
    trig = events.review_trigger(review, "/mc", 10)
    assert trig is not None and trig.triggered_at is None and trig.body == "PR text"  # no zone
    for junk in (None, 5, "yesterday", "2026-13-01T00:00:00Z"):
        data["comment"]["created_at"] = junk
        found = events.comment_trigger(data, "/mc", 10)
        assert found is not None and found.triggered_at is None


def test_pr_fate() -> None:
    closed = payload("pull_request.closed")
    assert events.pr_fate(closed) == ("Codertocat/Hello-World", 2, "closed")
    closed["pull_request"]["merged"] = True
    assert events.pr_fate(closed) == ("Codertocat/Hello-World", 2, "merged")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "action",
                "issue",
                "comment",
                "label",
                "repository",
                "installation",
                "sender",
                "pull_request",
                "review",
            ]
        ),
        json_values,
    )
)
def test_arbitrary_payloads_never_raise(data: dict[str, Any]) -> None:
    events.label_trigger(data, "mc-auto")
    events.comment_trigger(data, "/mc", 10)
    events.review_trigger(data, "/mc", 10)
    events.review_comment_trigger(data, "/mc", 10)
    events.pr_fate(data)
    events.issue_ref(data)


def check_payload(kind: str, pulls: list[Any], action: str = "completed") -> dict[str, Any]:
    """check_suite / check_run `completed` as GitHub documents them (trimmed)."""
    item = {"id": 7, "head_sha": "a" * 40, "head_branch": "mc/1-x", "pull_requests": pulls}
    return {
        "action": action,
        kind: item,
        "repository": {"full_name": "octo/app"},
        "installation": {"id": 42},
        "sender": {"login": "github-actions[bot]", "type": "Bot"},
    }


def test_completed_checks_name_the_commit_and_its_pull_requests() -> None:
    pulls = [{"number": 5}, {"number": 5}, {"number": 9}]
    for kind in ("check_suite", "check_run"):
        signal = events.ci_signal(check_payload(kind, pulls), "d9")
        assert signal is not None
        assert (signal.repo, signal.installation_id, signal.head_sha) == ("octo/app", 42, "a" * 40)
        assert signal.pr_numbers == (5, 9) and signal.delivery_id == "d9"
    # a fork's PR is not listed; other actions and junk are nothing
    assert events.ci_signal(check_payload("check_suite", [])) is None
    assert events.ci_signal(check_payload("check_run", [{"number": 5}], "created")) is None
    assert events.ci_signal(check_payload("check_run", [{"number": "5"}, None])) is None
    assert events.ci_signal({"action": "completed", "check_suite": []}) is None
