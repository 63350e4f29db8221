"""Hypothesis strategies shared by the fuzz suite: hostile text, junk JSON, mangled payloads."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from tests.conftest import payload

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Every code point class an attacker can type, surrogates excluded (a JSON decoder only
# yields them from \ud800-style escapes; those have their own tests).
HOSTILE_CHARS = st.characters(
    categories=("L", "M", "N", "P", "S", "Z", "Cc", "Cf", "Co"),
)
SPECIAL = st.sampled_from(
    [
        "\x00", "\r", "\n", "\t", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85",
        "\u00a0", "\u1680", "\u2000", "\u2028", "\u2029", "\u202e", "\u200b", "\ufeff",
        "\ufffd", "\U0001f600", "$", "=", "/", "[", "]", "{", "}", '"', "\\", "budget",
        "budget=", "/mc", "/mc ", "[bot]", "mc-auto", "ſ", "İ", "ﬀ", "٣", "５",
    ]
)  # fmt: skip
HOSTILE_TEXT = st.lists(st.one_of(HOSTILE_CHARS, SPECIAL), max_size=80).map("".join)


def huge(text: st.SearchStrategy[str], factor: st.SearchStrategy[int]) -> st.SearchStrategy[str]:
    """A short hostile piece repeated into a large input."""
    return st.builds(lambda piece, n: (piece or "x") * n, text, factor)


def json_values(
    ints: st.SearchStrategy[int] | None = None, text: st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[Any]:
    """Arbitrary JSON-decodable values, nested, with hostile strings and extreme numbers."""
    ints = ints if ints is not None else st.integers(INT64_MIN, INT64_MAX)
    text = text if text is not None else st.one_of(HOSTILE_TEXT, huge(HOSTILE_TEXT, st.just(2000)))
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        ints,
        st.sampled_from([0, -1, 1, INT64_MAX, INT64_MIN]),
        st.floats(allow_nan=False, allow_infinity=False),
        text,
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.one_of(text, st.sampled_from(PAYLOAD_KEYS)), children, max_size=4),
        ),
        max_leaves=25,
    )


PAYLOAD_KEYS = [
    "action", "issue", "comment", "label", "repository", "installation", "sender",
    "pull_request", "review", "number", "title", "body", "name", "id", "login", "type",
    "full_name", "account", "repositories", "repositories_added", "repositories_removed",
    "merged", "path", "line", "original_line",
]  # fmt: skip

# Real payloads (tests/fixtures/github) by the event name GitHub sends with them.
FIXTURES: list[tuple[str, str]] = [
    ("issues", "issues.labeled"),
    ("issues", "issues.unlabeled"),
    ("issues", "issues.closed"),
    ("issue_comment", "issue_comment.created"),
    ("issue_comment", "issue_comment.created.pull_request"),
    ("issue_comment", "issue_comment.created.with-installation"),
    ("issue_comment", "issue_comment.edited"),
    ("pull_request", "pull_request.opened"),
    ("pull_request", "pull_request.closed"),
    ("installation", "installation.created"),
    ("installation", "installation.deleted"),
    ("installation_repositories", "installation_repositories.added"),
    ("ping", "ping"),
    ("pull_request_review", "pull_request_review.submitted"),
    ("pull_request_review_comment", "pull_request_review_comment.created"),
]


def fixture(name: str, installation_id: int) -> dict[str, Any]:
    """A fixture payload; the two review events are made from pull_request.opened."""
    if not name.startswith("pull_request_review"):
        return payload(name, id=installation_id)
    data = payload("pull_request.opened", id=installation_id)
    if name.endswith("submitted"):
        data["action"] = "submitted"
        data["review"] = {"id": 80, "body": "/mc status", "state": "commented"}
    else:
        data["action"] = "created"
        data["comment"] = {"id": 81, "body": "/mc help", "path": "README.md", "line": 1}
    return data


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of a nested JSON value (the root excluded)."""
    out: list[tuple[Any, ...]] = []
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in items:
        out.append((*prefix, key))
        out += _paths(child, (*prefix, key))
    return out


def _set(node: Any, path: tuple[Any, ...], value: Any, delete: bool) -> None:
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value


def interesting(prefix: str = "/mc", label: str = "mc-auto") -> st.SearchStrategy[Any]:
    """Values that steer a payload into ghapp's handlers rather than past them."""
    return st.one_of(
        st.sampled_from(
            [
                "labeled",
                "unlabeled",
                "created",
                "closed",
                "submitted",
                "deleted",
                "edited",
                "new_permissions_accepted",
                "unsuspend",
                label,
                "Bot",
                "User",
                "Codertocat",
                "Codertocat/Hello-World",
                "evil[bot]",
                f"{prefix} status",
                f"{prefix} cancel",
                f"{prefix} retry",
                f"{prefix} help",
                f"{prefix} do it budget=3",
                prefix,
                True,
                1,
            ]
        ),
        st.builds(lambda t: f"{prefix} {t}", HOSTILE_TEXT),
    )


def _steer(data: dict[str, Any], draw: st.DrawFn) -> None:
    """Make a payload a trigger (label, command) from a writer, on a fresh issue number."""
    if isinstance(data.get("label"), dict):
        data["label"]["name"] = "mc-auto"
    command = draw(
        st.one_of(
            st.sampled_from(["status", "cancel", "retry", "help", "fix it", "x budget=2"]),
            HOSTILE_TEXT,
        )
    )
    for key in ("comment", "review"):
        if isinstance(data.get(key), dict):
            data[key]["body"] = f"/mc {command}"
    if isinstance(data.get("sender"), dict):
        data["sender"]["login"] = draw(st.sampled_from(["Codertocat", "octocat", "mallory"]))
    number = draw(st.integers(1, 20) | st.integers(1, 10**9))
    for key in ("issue", "pull_request"):
        if isinstance(data.get(key), dict):
            data[key]["number"] = number


def mangled_payloads(
    events: list[str] | None = None,
    junk: st.SearchStrategy[Any] | None = None,
    keep: Callable[[tuple[Any, ...], Any], bool] = lambda path, value: True,
) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """A real payload with a few of its nested fields replaced, deleted or steered.

    `keep(path, value)` vetoes a mutation (used to stay inside a known-bug-free domain).
    """
    junk = junk if junk is not None else json_values()
    chosen = [f for f in FIXTURES if events is None or f[0] in events]

    @st.composite
    def build(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
        event = draw(st.sampled_from(sorted({e for e, _ in chosen})))
        name = draw(st.sampled_from([n for e, n in chosen if e == event]))
        rnd = draw(st.randoms(use_true_random=False))  # uniform over paths, not first-biased
        data = copy.deepcopy(fixture(name, draw(st.sampled_from([1, 2, 42]))))
        if draw(st.integers(0, 3)):  # mostly aim at a handler, so the fuzz gets past the gate
            _steer(data, draw)
        for _ in range(draw(st.integers(0, 6))):
            paths = _paths(data)
            if not paths:
                break
            path = rnd.choice(paths)
            delete = isinstance(path[-1], str) and rnd.random() < 0.25
            value = None if delete else draw(st.one_of(junk, interesting()))
            if keep(path, value):
                _set(data, path, value, delete)
        for key in draw(st.lists(st.sampled_from(PAYLOAD_KEYS), max_size=2)):
            value = draw(st.one_of(junk, interesting()))
            if keep((key,), value):
                data[key] = value
        return event, data

    return build()
