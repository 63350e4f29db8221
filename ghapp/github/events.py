"""Pure translation of GitHub payloads into core triggers; no I/O, so it can be fuzzed."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ghapp.core.ci import CiSignal
from ghapp.core.commands import NewTaskCommand, parse_command
from ghapp.core.model import BadCommand, TaskSource
from ghapp.core.tasks import Trigger

Payload = Mapping[str, Any]


def _dict(value: object) -> Mapping[str, Any]:
    """A nested object, or empty when the payload lacks or mangles it."""
    return value if isinstance(value, Mapping) else {}


def _int(value: object) -> int | None:
    """An id or number that fits a 64-bit column; bools and strings are refused."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        return value
    return None


def _str(value: object) -> str:
    """Text as valid UTF-8: a lone surrogate escape (valid JSON) becomes U+FFFD."""
    if not isinstance(value, str):
        return ""
    return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _time(value: object) -> datetime | None:
    """An ISO-8601 timestamp as aware UTC; None when missing or malformed."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        return None
    return moment.astimezone(UTC)


def installation_change(payload: Payload) -> tuple[int, str, list[str], list[str]] | None:
    """installation and installation_repositories as (id, account, added, removed)."""
    inst = _dict(payload.get("installation"))
    inst_id = _int(inst.get("id"))
    if inst_id is None:
        return None
    account = _str(_dict(inst.get("account")).get("login"))
    return (
        inst_id,
        account,
        _repo_names(payload.get("repositories")) + _repo_names(payload.get("repositories_added")),
        _repo_names(payload.get("repositories_removed")),
    )


def _repo_names(items: object) -> list[str]:
    """full_name of each repository object; anything else is skipped."""
    if not isinstance(items, list):
        return []
    names = (_str(_dict(item).get("full_name")) for item in items)
    return [name for name in names if "/" in name]


def _base(payload: Payload, number: object) -> dict[str, Any] | None:
    """Fields every trigger needs; None when the payload cannot name them."""
    repo = _str(_dict(payload.get("repository")).get("full_name"))
    installation = _int(_dict(payload.get("installation")).get("id"))
    sender = _dict(payload.get("sender"))
    num = _int(number)
    if "/" not in repo or installation is None or num is None or not _str(sender.get("login")):
        return None
    return {
        "repo": repo,
        "installation_id": installation,
        "number": num,
        "sender": _str(sender.get("login")),
        "sender_is_bot": _str(sender.get("type")) == "Bot"
        or _str(sender.get("login")).endswith("[bot]"),
    }


def label_trigger(payload: Payload, label: str, delivery_id: str | None = None) -> Trigger | None:
    """issues.labeled with the trigger label queues the issue itself."""
    if payload.get("action") != "labeled" or _str(_dict(payload.get("label")).get("name")) != label:
        return None
    issue = _dict(payload.get("issue"))
    base = _base(payload, issue.get("number"))
    if base is None:
        return None
    return Trigger(
        **base,
        source=TaskSource.LABEL,
        command=NewTaskCommand(""),
        title=_str(issue.get("title")),
        body=_str(issue.get("body")),
        delivery_id=delivery_id,
        # GitHub stamps the issue when the label goes on: no later change is in this payload.
        triggered_at=_time(issue.get("updated_at")),
    )


def _command_trigger(
    payload: Payload,
    text: str,
    number: object,
    prefix: str,
    max_budget: float,
    **extra: Any,
) -> Trigger | None:
    """Shared by comments, review bodies and review comments."""
    try:
        command = parse_command(text, prefix, max_budget)
        error = None
    except BadCommand as exc:
        command, error = None, str(exc)
    if command is None and error is None:
        return None
    base = _base(payload, number)
    if base is None:
        return None
    return Trigger(**base, command=command, error=error, **extra)


def comment_trigger(
    payload: Payload, prefix: str, max_budget: float, delivery_id: str | None = None
) -> Trigger | None:
    """issue_comment.created starting with the command prefix, on an issue or a PR."""
    if payload.get("action") != "created":
        return None
    issue = _dict(payload.get("issue"))
    comment = _dict(payload.get("comment"))
    return _command_trigger(
        payload,
        _str(comment.get("body")),
        issue.get("number"),
        prefix,
        max_budget,
        source=TaskSource.COMMENT,
        title=_str(issue.get("title")),
        body=_str(issue.get("body")),
        comment_id=_int(comment.get("id")),
        is_pull_request="pull_request" in issue,
        delivery_id=delivery_id,
        triggered_at=_time(comment.get("created_at")),
    )


def review_trigger(
    payload: Payload, prefix: str, max_budget: float, delivery_id: str | None = None
) -> Trigger | None:
    """A submitted review whose body is a command, on a PR."""
    if payload.get("action") != "submitted":
        return None
    pr = _dict(payload.get("pull_request"))
    review = _dict(payload.get("review"))
    return _command_trigger(
        payload,
        _str(review.get("body")),
        pr.get("number"),
        prefix,
        max_budget,
        source=TaskSource.REVIEW,
        title=_str(pr.get("title")),
        body=_str(pr.get("body")),
        is_pull_request=True,
        delivery_id=delivery_id,
        triggered_at=_time(review.get("submitted_at")),
    )


def review_comment_trigger(
    payload: Payload, prefix: str, max_budget: float, delivery_id: str | None = None
) -> Trigger | None:
    """An inline review comment that is a command; its file and line go to the agent."""
    if payload.get("action") != "created":
        return None
    pr = _dict(payload.get("pull_request"))
    comment = _dict(payload.get("comment"))
    line = _int(comment.get("line")) or _int(comment.get("original_line"))
    return _command_trigger(
        payload,
        _str(comment.get("body")),
        pr.get("number"),
        prefix,
        max_budget,
        source=TaskSource.REVIEW,
        title=_str(pr.get("title")),
        body=_str(pr.get("body")),
        comment_id=_int(comment.get("id")),
        is_pull_request=True,
        review_path=_str(comment.get("path")) or None,
        review_line=line,
        delivery_id=delivery_id,
        triggered_at=_time(comment.get("created_at")),
    )


def issue_ref(payload: Payload) -> tuple[str, int] | None:
    """Repository and issue number of an issues event."""
    repo = _str(_dict(payload.get("repository")).get("full_name"))
    number = _int(_dict(payload.get("issue")).get("number"))
    return (repo, number) if repo and number is not None else None


def closed_by(payload: Payload) -> tuple[str, int, int, str] | None:
    """issues.closed as (repo, installation id, issue number, login of who closed it)."""
    base = _base(payload, _dict(payload.get("issue")).get("number"))
    if base is None:
        return None
    return base["repo"], base["installation_id"], base["number"], base["sender"]


def pr_fate(payload: Payload) -> tuple[str, int, str] | None:
    """pull_request.closed as (repo, number, 'merged' | 'closed')."""
    if payload.get("action") != "closed":
        return None
    pr = _dict(payload.get("pull_request"))
    repo = _str(_dict(payload.get("repository")).get("full_name"))
    number = _int(pr.get("number"))
    if not repo or number is None:
        return None
    return repo, number, "merged" if pr.get("merged") is True else "closed"


def ci_signal(payload: Payload, delivery_id: str | None = None) -> CiSignal | None:
    """check_suite.completed or check_run.completed: the commit and its pull requests.

    A fork's PR is not listed (GitHub leaves `pull_requests` empty): ghapp's never are.
    """
    if payload.get("action") != "completed":
        return None
    item = _dict(payload.get("check_suite")) or _dict(payload.get("check_run"))
    repo = _str(_dict(payload.get("repository")).get("full_name"))
    installation = _int(_dict(payload.get("installation")).get("id"))
    sha = _str(item.get("head_sha"))
    pulls = item.get("pull_requests")
    numbers = tuple(
        dict.fromkeys(
            n
            for n in (
                _int(_dict(p).get("number")) for p in (pulls if isinstance(pulls, list) else [])
            )
            if n is not None
        )
    )
    if "/" not in repo or installation is None or len(sha) < 7 or not numbers:
        return None
    return CiSignal(repo, installation, sha, numbers[:10], delivery_id)
