"""GitHubForge reads conversations from the fake GitHub: pagination, fields, missing issues."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from ghapp.github.auth import link_pages
from ghapp.github.forge import GitHubForge
from tests.adapters.test_github_forge import IID, REPO, make_forge
from tests.fakes.github import FakeGitHub

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    gh = FakeGitHub()
    gh.add_repo(REPO, installation_id=IID)
    await gh.start()
    yield gh
    await gh.close()


@pytest.fixture
async def forge(fake: FakeGitHub) -> AsyncIterator[GitHubForge]:
    async with aiohttp.ClientSession() as session:
        yield make_forge(fake, session)


def comment_reads(fake: FakeGitHub, number: int, kind: str = "issues") -> list[str]:
    path = f"/repos/{REPO}/{kind}/{number}/comments"
    return [r.query for r in fake.log if r.path == path and r.method == "GET"]


async def test_a_short_thread_is_one_call_with_authors_times_and_who_wrote_it(
    forge: GitHubForge, fake: FakeGitHub
) -> None:
    issue = fake.add_issue(REPO, "t", "b")
    first = fake.add_comment(REPO, issue, "use v2", "maint", at=T)
    fake.add_comment(
        REPO, issue, "tracking", fake.bot_login, at=T + timedelta(seconds=1), by_app=True
    )
    fake.add_comment(REPO, issue, "ci says no", "ci[bot]", at=T + timedelta(seconds=2))
    fake.edit_comment_as_user(first, "use v2, not v1", at=T + timedelta(hours=1))
    thread = await forge.thread(IID, REPO, issue)
    assert thread.older == 0
    assert [(r.author, r.body, r.ours, r.by_bot) for r in thread.remarks] == [
        ("maint", "use v2, not v1", False, False),
        (fake.bot_login, "tracking", True, True),
        ("ci[bot]", "ci says no", False, True),
    ]
    assert thread.remarks[0].created_at == T
    assert thread.remarks[0].updated_at == T + timedelta(hours=1)
    assert len(comment_reads(fake, issue)) == 1


async def test_a_long_thread_costs_three_calls_and_yields_the_newest_pages(
    forge: GitHubForge, fake: FakeGitHub
) -> None:
    issue = fake.add_issue(REPO)
    for n in range(1, 451):
        fake.add_comment(REPO, issue, f"comment {n}", at=T + timedelta(minutes=n))
    thread = await forge.thread(IID, REPO, issue)
    assert thread.older == 300
    assert [r.body for r in thread.remarks] == [f"comment {n}" for n in range(301, 451)]
    assert sorted(comment_reads(fake, issue)) == [
        "per_page=100&page=1",
        "per_page=100&page=4",
        "per_page=100&page=5",
    ]


async def test_a_thread_of_three_pages_is_read_whole(forge: GitHubForge, fake: FakeGitHub) -> None:
    issue = fake.add_issue(REPO)
    for n in range(1, 251):
        fake.add_comment(REPO, issue, f"comment {n}", at=T + timedelta(minutes=n))
    thread = await forge.thread(IID, REPO, issue)
    assert (thread.older, len(thread.remarks)) == (0, 250)
    assert thread.remarks[0].body == "comment 1" and thread.remarks[-1].body == "comment 250"
    assert len(comment_reads(fake, issue)) == 3


async def test_review_comments_carry_file_and_line(forge: GitHubForge, fake: FakeGitHub) -> None:
    pr = await forge.open_pr(IID, REPO, head="mc/1", base="main", title="t", body="b")
    fake.add_review_comment(REPO, pr.number, "rename this", "maint", path="src/a.py", line=42, at=T)
    fake.add_comment(REPO, pr.number, "conversation", "maint", at=T)
    thread = await forge.thread(IID, REPO, pr.number, review=True)
    assert [(r.body, r.path, r.line) for r in thread.remarks] == [("rename this", "src/a.py", 42)]
    plain = await forge.thread(IID, REPO, pr.number)
    assert [(r.body, r.path) for r in plain.remarks] == [("conversation", None)]
    assert len(comment_reads(fake, pr.number, "pulls")) == 1


async def test_issue_text_or_none(forge: GitHubForge, fake: FakeGitHub) -> None:
    number = fake.add_issue(REPO, "Related bug", "details")
    fake.edit_issue(REPO, number, "more details", at=T)
    issue = await forge.issue(IID, REPO, number)
    assert issue is not None
    assert (issue.title, issue.body, issue.is_pull_request) == (
        "Related bug",
        "more details",
        False,
    )
    assert issue.updated_at == T
    assert await forge.issue(IID, REPO, 999) is None
    pr = await forge.open_pr(IID, REPO, head="mc/2", base="main", title="p", body="q")
    found = await forge.issue(IID, REPO, pr.number)
    assert found is not None and found.is_pull_request


def test_link_header_pages_as_github_writes_them() -> None:
    header = (
        "<https://api.github.com/repositories/1300192/issues/1/comments?per_page=100&page=2>; "
        'rel="next", <https://api.github.com/repositories/1300192/issues/1/comments'
        '?per_page=100&page=7>; rel="last"'
    )
    assert link_pages(header) == {"next": 2, "last": 7}
    assert link_pages(None) == {} and link_pages("garbage") == {}
