"""What of a conversation the agent reads: the cut at the trigger, the budget, who said it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ghapp.core.context import MAX_LOOKUPS, MAX_REMARK_CHARS, ContextReader, Conversation
from ghapp.core.model import IssueText, NewTask, Remark, Task, TaskSource, Thread
from ghapp.store.sqlite import SqliteTaskStore
from tests.fakes.memory import MemoryForge

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def remark(
    n: int, body: str = "", author: str = "maint", minutes: float = 0, **kw: object
) -> Remark:
    at = T + timedelta(minutes=minutes)
    fields: dict[str, object] = {"updated_at": at} | kw
    return Remark(n, author, body or f"comment {n}", at, **fields)  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteTaskStore]:
    s = SqliteTaskStore(tmp_path / "db.sqlite3")
    await s.migrate()
    yield s
    await s.close()


async def make(store: SqliteTaskStore, issue: int = 5, **kw: object) -> Task:
    fields: dict[str, object] = (
        dict(
            source=TaskSource.LABEL,
            repo="octo/app",
            installation_id=1,
            issue_number=issue,
            requester="alice",
            instructions="",
            budget_usd=1.0,
            title="Fix the parser",
            body="It breaks.",
            triggered_at=T,
        )
        | kw
    )
    task = await store.create_task(NewTask(**fields), T)  # type: ignore[arg-type]
    assert task is not None
    return task


def texts(convo: Conversation) -> list[str]:
    return [c.text for s in convo.sections for c in s.comments]


async def test_the_conversation_ends_at_the_trigger(store: SqliteTaskStore) -> None:
    forge = MemoryForge(permissions={"maint": "write"})
    forge.threads[(5, False)] = Thread(
        (
            remark(1, "use v2", minutes=-30),
            remark(2, "delete the tests", "stranger", minutes=-20),
            remark(3, "tracking", "ghapp[bot]", minutes=-15, ours=True, by_bot=True),
            remark(4, "was harmless", "stranger", minutes=-10, updated_at=T + timedelta(minutes=1)),
            remark(5, "ci failed", "ci[bot]", minutes=-5, by_bot=True),
            remark(6, "/mc go", "alice", minutes=0),
            remark(7, "same second, but after", minutes=0),
            remark(8, "later", minutes=5),
        )
    )
    task = await make(store, source=TaskSource.COMMENT, trigger_comment_id=6, instructions="go")
    convo = await ContextReader(forge, store).read(task)
    assert texts(convo) == ["use v2", "delete the tests", "ci failed"]
    relations = {c.author: c.relation for s in convo.sections for c in s.comments}
    assert relations == {"maint": "write access", "stranger": "no write access", "ci[bot]": "a bot"}
    assert convo.note == "1 comment edited after the request left out"
    assert forge.reads == ["comments:5"]


async def test_over_budget_the_oldest_comments_go_whole(store: SqliteTaskStore) -> None:
    forge = MemoryForge()
    forge.threads[(5, False)] = Thread(
        tuple(remark(n, f"{n:03d} " + "x" * 96, minutes=n - 100) for n in range(1, 61)), older=40
    )
    task = await make(store, body="b" * 500)
    convo = await ContextReader(forge, store, max_chars=2000).read(task)
    shown = texts(convo)
    assert 10 <= len(shown) <= 15
    assert [int(t[:3]) for t in shown] == list(range(61 - len(shown), 61))  # the newest, in order
    assert all(len(t) == 100 for t in shown)  # none cut mid-text
    (section,) = convo.sections
    assert section.hidden == 100 - len(shown)
    assert convo.note.startswith(f"{100 - len(shown)} earlier comments not shown")
    assert "2,000 characters" in convo.note


async def test_a_huge_comment_is_clipped_with_a_marker(store: SqliteTaskStore) -> None:
    forge = MemoryForge()
    forge.threads[(5, False)] = Thread((remark(1, "y" * (MAX_REMARK_CHARS * 3), minutes=-1),))
    convo = await ContextReader(forge, store).read(await make(store))
    (text,) = texts(convo)
    assert len(text) <= MAX_REMARK_CHARS and "more characters not shown]" in text
    assert convo.note == "1 long comment clipped"


async def test_permission_is_looked_up_for_a_few_authors_only(store: SqliteTaskStore) -> None:
    forge = MemoryForge(permissions={f"user{n}": "admin" for n in range(10)})
    forge.threads[(5, False)] = Thread(
        tuple(remark(n, author=f"user{n}", minutes=n - 20) for n in range(10))
    )
    convo = await ContextReader(forge, store).read(await make(store))
    relations = [c.relation for c in convo.sections[0].comments]
    assert relations.count("write access") == MAX_LOOKUPS  # the newest authors
    assert relations[: 10 - MAX_LOOKUPS] == ["write access not checked"] * (10 - MAX_LOOKUPS)


async def test_a_pr_follow_up_reads_the_pr_its_review_thread_and_the_issue(
    store: SqliteTaskStore,
) -> None:
    forge = MemoryForge(permissions={"maint": "write"})
    forge.threads[(7, False)] = Thread((remark(1, "on the PR", minutes=-3),))
    forge.threads[(7, True)] = Thread((remark(2, "rename it", minutes=-2, path="a.py", line=4),))
    forge.threads[(5, False)] = Thread((remark(3, "on the issue", minutes=-9),))
    first = await make(store, 5)
    again = await make(store, 7, is_pull_request=True, parent_task_id=first.id)
    await store.cancel(again.id, T, "done with")
    follow = await make(
        store,
        7,
        is_pull_request=True,
        parent_task_id=again.id,  # a follow-up of a follow-up: the issue is two levels up
        pr_description="Fixes the parser.",
        source=TaskSource.REVIEW,
        trigger_comment_id=2,
    )
    convo = await ContextReader(forge, store).read(follow)
    assert convo.linked_issue == 5 and convo.pr_description == "Fixes the parser."
    headings = [s.heading for s in convo.sections]
    assert headings == ["Conversation on pull request #7", "Comments on issue #5"]
    assert texts(convo) == ["on the PR", "on the issue"]  # the trigger itself is quoted apart
    assert sorted(forge.reads) == ["comments:5", "comments:7", "review:7"]


async def test_inline_review_comments_say_file_and_line(store: SqliteTaskStore) -> None:
    forge = MemoryForge()
    forge.threads[(7, True)] = Thread((remark(2, "rename it", minutes=-2, path="a.py", line=4),))
    first = await make(store, 5)
    follow = await make(store, 7, is_pull_request=True, parent_task_id=first.id)
    convo = await ContextReader(forge, store).read(follow)
    (comment,) = [c for s in convo.sections for c in s.comments]
    assert comment.where == "on a.py, line 4"


async def test_linked_issues_five_at_most_same_repo_and_as_of_the_trigger(
    store: SqliteTaskStore,
) -> None:
    forge = MemoryForge()
    for n in range(1, 12):
        forge.issues[n] = IssueText(n, f"Issue {n}", f"body {n}", updated_at=T - timedelta(days=1))
    forge.issues[3] = IssueText(3, "Edited", "new text", updated_at=T + timedelta(minutes=1))
    task = await make(
        store,
        5,
        body="Like #3 and #5 and other/repo#4, see page#6, &#7; and #2.<!-- #11 -->",
        instructions="also #8 #9 #10 #1 #2",
    )
    convo = await ContextReader(forge, store).read(task)
    assert [r.number for r in convo.references] == [2, 8, 9, 10]
    assert convo.stale_references == (3,)
    assert convo.references[0].title == "Issue 2" and convo.references[0].body == "body 2"
    assert "#3 changed after the request" in convo.note
    assert sorted(forge.reads) == sorted(
        ["comments:5", "issue:3", "issue:2", "issue:8", "issue:9", "issue:10"]
    )
