"""Payload translation and routing under junk: real payloads with mangled nested fields.

Extends tests/unit/test_events.py (flat junk at the top level) with mutations anywhere in a
real payload, hostile unicode, huge strings and extreme numbers, and drives them further:
through gidgethub's router into ghapp's handlers with a TaskService over in-memory fakes
and a real SQLite store. The contract: a handler returns, or raises a GhappError with a
clear message; nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from gidgethub import sansio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ghapp.bootstrap import build_core
from ghapp.core.commands import NewTaskCommand, SimpleCommand
from ghapp.core.model import GhappError, NewTask, TaskSource
from ghapp.core.tasks import Limits, Trigger
from ghapp.github import events
from ghapp.github.webhooks import Context, router
from ghapp.store.sqlite import SqliteTaskStore
from tests.conftest import payload
from tests.fakes.memory import FakeClock, MemoryForge, RecordingMessenger
from tests.fuzz.strategies import HOSTILE_TEXT, json_values, mangled_payloads

LABEL, PREFIX, MAX = "mc-auto", "/mc", 10.0
REPO = "Codertocat/Hello-World"
ROUTED = {
    "issues",
    "issue_comment",
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
    "installation",
    "installation_repositories",
}
TRIGGER_EVENTS = [
    "issues", "issue_comment", "pull_request", "ping",
    "pull_request_review", "pull_request_review_comment",
]  # fmt: skip


def check_trigger(trig: Trigger | None, delivery: str) -> None:
    """Every field of a trigger has the type and shape the core relies on."""
    if trig is None:
        return
    assert isinstance(trig.repo, str) and "/" in trig.repo
    for value in (trig.installation_id, trig.number):
        assert isinstance(value, int) and not isinstance(value, bool)
    assert isinstance(trig.sender, str) and trig.sender
    assert trig.sender_is_bot is (trig.sender_is_bot is True)
    if trig.sender.endswith("[bot]"):
        assert trig.sender_is_bot
    assert isinstance(trig.source, TaskSource)
    assert (trig.command is None) != (trig.error is None)
    assert trig.command is None or isinstance(trig.command, NewTaskCommand | SimpleCommand)
    assert isinstance(trig.title, str) and isinstance(trig.body, str)
    assert trig.comment_id is None or type(trig.comment_id) is int
    assert trig.review_line is None or type(trig.review_line) is int
    assert trig.review_path is None or (isinstance(trig.review_path, str) and trig.review_path)
    assert trig.delivery_id == delivery


def translate_all(data: dict[str, Any]) -> None:
    delivery = "fuzz-delivery"
    check_trigger(events.label_trigger(data, LABEL, delivery), delivery)
    for fn in (events.comment_trigger, events.review_trigger, events.review_comment_trigger):
        check_trigger(fn(data, PREFIX, MAX, delivery), delivery)
    ref = events.issue_ref(data)
    assert ref is None or (isinstance(ref[0], str) and type(ref[1]) is int)
    fate = events.pr_fate(data)
    assert fate is None or fate[2] in ("merged", "closed")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mangled_payloads(junk=json_values(ints=st.integers())))
def test_translation_of_mangled_payloads_never_raises(case: tuple[str, dict[str, Any]]) -> None:
    """Pure translation copes with anything, even integers no database column can hold."""
    translate_all(case[1])


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        json_values(),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
        max_leaves=60,
    )
)
def test_translation_of_any_json_value_never_raises(value: Any) -> None:
    """Payloads are dicts by contract, but a nested dict where a scalar should be is common."""
    data = value if isinstance(value, dict) else {"issue": value, "sender": value}
    translate_all(data)


def test_deeply_nested_payload_translates() -> None:
    deep: Any = "x"
    for _ in range(50_000):
        deep = {"issue": deep, "comment": [deep]}
    data = payload("issue_comment.created.with-installation")
    data["comment"]["body"] = {"body": deep}
    data["issue"]["title"] = deep
    translate_all(data)


@settings(max_examples=200, deadline=None)
@given(HOSTILE_TEXT, HOSTILE_TEXT, HOSTILE_TEXT)
def test_hostile_text_survives_translation_verbatim(title: str, body: str, login: str) -> None:
    """Translation does not clean text (the prompt builder does); it carries it unchanged."""
    data = payload("issues.labeled", id=7)
    data["label"]["name"] = LABEL
    data["issue"].update(title=title, body=body)
    data["sender"]["login"] = login
    trig = events.label_trigger(data, LABEL, "d")
    if not login:
        assert trig is None
        return
    assert trig is not None and (trig.title, trig.body, trig.sender) == (title, body, login)
    assert trig.sender_is_bot is login.endswith("[bot]")


# -- through the router into the handlers -----------------------------------------------------


@dataclass
class Rig:
    """One event loop, store and service shared by every example of a test."""

    loop: asyncio.Runner
    store: SqliteTaskStore
    forge: MemoryForge
    ctx: Context

    def dispatch(self, event: str, data: dict[str, Any]) -> None:
        sansio_event = sansio.Event(data, event=event, delivery_id="fuzz")
        self.loop.run(asyncio.wait_for(router.dispatch(sansio_event, self.ctx), 30))


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    runner = asyncio.Runner()
    store = SqliteTaskStore(":memory:")
    runner.run(store.migrate())
    forge = MemoryForge(permissions={"Codertocat": "admin", "octocat": "write"})
    clock = FakeClock()
    limits = Limits(50.0, 5.0, MAX, PREFIX)
    service = build_core(store, forge, clock, limits, RecordingMessenger()).service
    for n in range(1, 21):  # pull requests ghapp opened, so PR commands reach follow-ups
        new = NewTask(TaskSource.LABEL, REPO, 1, 10_000 + n, "Codertocat", "", 5.0,
                      title=f"Task {n}", branch=f"mc/{n}-task", pr_number=n)  # fmt: skip
        assert runner.run(store.create_task(new, clock.now())) is not None
    yield Rig(runner, store, forge, Context(service, store, LABEL, PREFIX, MAX))
    runner.run(store.close())
    runner.close()


def dispatch_clean(rig: Rig, event: str, data: dict[str, Any]) -> None:
    """Dispatch; only a GhappError may come out (and must say something)."""
    try:
        rig.dispatch(event, data)
    except GhappError as exc:
        assert str(exc).strip()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mangled_payloads(TRIGGER_EVENTS))
def test_dispatch_of_mangled_trigger_payloads_never_raises(
    rig: Rig, case: tuple[str, dict[str, Any]]
) -> None:
    """Labels, comments, reviews, closes: ints within 64 bits, text without lone surrogates."""
    dispatch_clean(rig, *case)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40), json_values())
def test_unknown_events_are_ignored(rig: Rig, event: str, data: Any) -> None:
    if event in ROUTED:
        return
    rig.dispatch(event, data if isinstance(data, dict) else {"value": data})


def test_a_valid_trigger_still_queues_after_the_fuzz(rig: Rig) -> None:
    """The shared store is still usable: a real label on a fresh issue queues a task."""
    data = payload("issues.labeled", id=1)
    data["label"]["name"] = LABEL
    data["issue"]["number"] = 987_654
    rig.dispatch("issues", data)
    task = rig.loop.run(rig.store.active_task_for(REPO, 987_654))
    assert task is not None and task.requester == "Codertocat"


def test_megabyte_fields_dispatch(rig: Rig) -> None:
    """Multi-megabyte titles, bodies and commands are queued or answered, not choked on."""
    data = _labeled(number=558_000, title="t" * 1_000_000, body="b\u2028\x00" * 2_000_000)
    rig.dispatch("issues", data)
    task = rig.loop.run(rig.store.active_task_for(REPO, 558_000))
    assert task is not None and len(task.body) == 6_000_000
    comment = payload("issue_comment.created.with-installation", id=1)
    comment["issue"]["number"] = 558_001
    comment["comment"]["body"] = "/mc " + "do it " * 500_000 + " budget=2"
    rig.dispatch("issue_comment", comment)
    task = rig.loop.run(rig.store.active_task_for(REPO, 558_001))
    assert task is not None and task.budget_usd == 2


# -- known bugs: each pinned with the smallest payload that shows it --------------------------

INSTALL_EVENTS = ["installation", "installation_repositories"]


@example(case=("installation", {"action": "created", "installation": {"id": 5, "account": "x"}}))
@settings(max_examples=200, deadline=None)
@given(mangled_payloads(INSTALL_EVENTS))
def test_dispatch_of_mangled_installation_payloads_never_raises(
    rig: Rig, case: tuple[str, dict[str, Any]]
) -> None:
    dispatch_clean(rig, *case)


@pytest.mark.parametrize(
    ("event", "data"),
    [
        ("installation", {"action": "created", "installation": {"id": 5, "account": "octo"}}),
        ("installation", {"action": "created", "installation": {"id": 5}, "repositories": 5}),
        (
            "installation",
            {"action": "created", "installation": {"id": 5, "account": {"login": ["a"]}}},
        ),
        (
            "installation",
            {"action": "created", "installation": {"id": 5}, "repositories": [{"full_name": 1.5j}]},
        ),
        ("installation_repositories", {"installation": {"id": 6, "account": ["octo"]}}),
        (
            "installation_repositories",
            {"installation": {"id": 6}, "repositories_added": [{"full_name": {"x": 1}}]},
        ),
    ],
    ids=["account-str", "repos-int", "login-list", "full_name-complex", "acct-list", "name-dict"],
)
def test_installation_payload_shapes(rig: Rig, event: str, data: dict[str, Any]) -> None:
    dispatch_clean(rig, event, data)


def _labeled(**issue: Any) -> dict[str, Any]:
    data = payload("issues.labeled", id=issue.pop("installation", 1))
    data["label"]["name"] = LABEL
    data["issue"].update(issue)
    return data


@pytest.mark.parametrize(
    ("event", "data"),
    [
        ("issues", _labeled(number=2**63)),
        ("issues", _labeled(installation=2**64, number=557_001)),
        (
            "issues",
            {
                "action": "closed",
                "repository": {"full_name": "a/b"},
                "issue": {"number": -(2**63) - 1},
            },
        ),
        (
            "pull_request",
            {
                "action": "closed",
                "repository": {"full_name": "a/b"},
                "pull_request": {"number": 2**70},
            },
        ),
        ("installation", {"action": "created", "installation": {"id": 2**64}}),
    ],
    ids=["issue-number", "installation-id", "closed-issue", "closed-pr", "install-id"],
)
def test_ids_beyond_64_bits(rig: Rig, event: str, data: dict[str, Any]) -> None:
    dispatch_clean(rig, event, data)


@pytest.mark.parametrize("field", ["title", "body"])
def test_lone_surrogate_in_issue_text(rig: Rig, field: str) -> None:
    data = _labeled(number=555_000 + len(field), **{field: "fix \ud800 this"})
    dispatch_clean(rig, "issues", data)


@pytest.mark.parametrize("action", [["labeled"], {"x": 1}])
def test_unhashable_action(rig: Rig, action: Any) -> None:
    data = _labeled(number=556_000)
    data["action"] = action
    dispatch_clean(rig, "issues", data)
