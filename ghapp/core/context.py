"""The conversation an agent reads: comments, the PR thread and linked issues, as of the trigger."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from ghapp.core.model import WRITERS, IssueText, Remark, Task, TaskSource
from ghapp.core.ports import Forge, TaskStore
from ghapp.core.sanitize import MAX_FIELD_CHARS, clip, one_line, sanitize

DEFAULT_MAX_CHARS = 100_000
MAX_REMARK_CHARS = 10_000  # of one comment, in the prompt (GitHub allows 65536)
MAX_LINKED_CHARS = 5_000
MAX_LINKED = 5
MAX_LOOKUPS = 5  # permission calls per task; other authors are "not checked"
# `#12` on its own: not `owner/repo#12`, an HTML entity `&#12;` or a URL anchor `page#12`.
_REF = re.compile(r"(?<![\w/&#])#(\d{1,9})\b")


@dataclass(frozen=True)
class Comment:
    """A comment the agent will read: who wrote it, their standing, and where (inline)."""

    author: str
    relation: str
    at: datetime
    text: str
    where: str = ""


@dataclass(frozen=True)
class Section:
    """One conversation (an issue's or a PR's), newest comments kept, the count of the rest."""

    heading: str
    comments: tuple[Comment, ...] = ()
    hidden: int = 0


@dataclass(frozen=True)
class Conversation:
    """Every piece of user text the prompt quotes, sanitised and within the text budget."""

    title: str
    body: str
    instructions: str
    linked_issue: int | None = None  # the issue a PR follow-up's pull request resolves
    pr_description: str = ""
    sections: tuple[Section, ...] = ()
    references: tuple[IssueText, ...] = ()
    stale_references: tuple[int, ...] = ()
    note: str = ""


@dataclass
class _Budget:
    """Characters left for quoted text."""

    left: int

    def take(self, text: str, cap: int) -> str:
        """Text clipped to its cap and to what is left; the budget shrinks by what it keeps."""
        kept = clip(text, min(cap, self.left))
        self.left -= len(kept)
        return kept


def _comments(n: int, kind: str = "") -> str:
    return f"{n} {kind}comment{'' if n == 1 else 's'}"


def referenced_issues(texts: Iterable[str], exclude: Iterable[int]) -> list[int]:
    """Same-repository `#N` references in order of appearance, at most MAX_LINKED."""
    skip, found = set(exclude), []
    for text in texts:
        for m in _REF.finditer(text):
            number = int(m.group(1))
            if number > 0 and number not in skip:
                skip.add(number)
                found.append(number)
    return found[:MAX_LINKED]


async def _root_issue(store: TaskStore, task: Task) -> Task | None:
    """The issue task a PR follow-up descends from."""
    seen: set[int] = set()
    current: Task | None = task
    while current is not None and current.is_pull_request and current.id not in seen:
        seen.add(current.id)
        parent = current.parent_task_id
        current = await store.get_task(parent) if parent is not None else None
    return current


def _references(
    issues: Iterable[IssueText | None], cutoff: datetime, budget: _Budget
) -> tuple[list[IssueText], list[int]]:
    """Referenced issues as quoted, and those changed since the trigger (not quoted)."""
    quoted, stale = [], []
    for issue in issues:
        if issue is None:
            continue
        if issue.updated_at is not None and issue.updated_at > cutoff:
            stale.append(issue.number)  # its text as of the trigger is not to be had
            continue
        title = budget.take(one_line(issue.title, 300), 300)
        body = budget.take(sanitize(issue.body), MAX_LINKED_CHARS)
        quoted.append(IssueText(issue.number, title, body, issue.is_pull_request))
    return quoted, stale


def own_text(task: Task, max_chars: int = DEFAULT_MAX_CHARS) -> Conversation:
    """The task's own text only: what the prompt quotes when no forge is asked."""
    return _own(task, _Budget(max_chars))


def _own(task: Task, budget: _Budget) -> Conversation:
    """The request first, then the issue, then the PR description, each within the budget."""
    instructions = budget.take(sanitize(task.instructions), MAX_FIELD_CHARS)
    title = budget.take(one_line(task.title, 500), 500)
    body = budget.take(sanitize(task.body), MAX_FIELD_CHARS)
    described = task.pr_description if task.is_pull_request else ""
    return Conversation(
        title=title,
        body=body,
        instructions=instructions,
        pr_description=budget.take(sanitize(described), MAX_FIELD_CHARS),
    )


class ContextReader:
    """Reads a task's conversation through the forge: a few paginated calls per task."""

    def __init__(self, forge: Forge, store: TaskStore, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        self.forge, self.store, self.max_chars = forge, store, max_chars

    async def read(self, task: Task) -> Conversation:
        """The conversation up to the trigger, oldest comments dropped first when over budget."""
        cutoff = task.triggered_at or task.created_at
        budget = _Budget(self.max_chars)
        own = _own(task, budget)
        threads = await self._threads(task)
        linked = next((n for _, n, _ in threads if n != task.issue_number), None)
        asked = "" if task.source is TaskSource.CI else own.instructions  # CI logs: no #N
        refs = referenced_issues((own.title, own.body, asked), {task.issue_number, linked or 0})
        inst, repo = task.installation_id, task.repo
        found, issues = await asyncio.gather(
            asyncio.gather(*(self.forge.thread(inst, repo, n, review=r) for _, n, r in threads)),
            asyncio.gather(*(self.forge.issue(inst, repo, n) for n in refs)),
        )
        references, stale = _references(issues, cutoff, budget)
        kept, edited = [], 0  # (section index, comment), newest first
        for index, ((_, number, review), thread) in enumerate(zip(threads, found, strict=True)):
            for remark in thread.remarks:
                if remark.ours or remark.created_at > cutoff:
                    continue
                if self._after_trigger(task, number, review, remark):
                    continue
                if remark.updated_at > cutoff:
                    edited += 1  # its text as of the trigger is not to be had: leave it out
                    continue
                kept.append((index, remark))
        kept.sort(key=lambda item: (item[1].created_at, item[1].id), reverse=True)
        hidden = [thread.older for thread in found]
        chosen: list[tuple[int, Remark, str]] = []
        clipped, full = 0, False
        for index, remark in kept:  # newest first
            text = sanitize(remark.body, MAX_REMARK_CHARS)
            full = full or len(text) > budget.left
            if full:
                hidden[index] += 1  # this one and every older one: never cut mid-text
                continue
            budget.left -= len(text)
            clipped += len(remark.body) > MAX_REMARK_CHARS
            chosen.append((index, remark, text))
        relations = await self._relations(task, [remark for _, remark, _ in chosen])
        shown: list[list[Comment]] = [[] for _ in threads]
        for index, remark, text in reversed(chosen):  # oldest first
            where = ""
            if remark.path:
                line = f", line {remark.line}" if remark.line else ""
                where = f"on {one_line(remark.path, 300)}{line}"
            relation = relations[remark.author]
            shown[index].append(Comment(remark.author, relation, remark.created_at, text, where))
        sections = tuple(
            Section(heading, tuple(shown[i]), hidden[i])
            for i, (heading, _, _) in enumerate(threads)
            if shown[i] or hidden[i]
        )
        left_out = sum(hidden)
        return replace(
            own,
            linked_issue=linked,
            sections=sections,
            references=tuple(references),
            stale_references=tuple(stale),
            note=self._note(left_out, clipped, edited, stale),
        )

    async def _threads(self, task: Task) -> list[tuple[str, int, bool]]:
        """The conversations to read: (heading, issue or PR number, inline review comments)."""
        if not task.has_issue:
            return []
        number = task.issue_number
        if not task.is_pull_request:
            return [(f"Comments on issue #{number}", number, False)]
        threads = [
            (f"Conversation on pull request #{number}", number, False),
            (f"Review comments on pull request #{number}", number, True),
        ]
        root = await _root_issue(self.store, task)
        if root is not None and root.has_issue:
            threads.append((f"Comments on issue #{root.issue_number}", root.issue_number, False))
        return threads

    @staticmethod
    def _after_trigger(task: Task, number: int, review: bool, remark: Remark) -> bool:
        """The request itself (quoted on its own) and what followed it in the same thread.

        Comment ids grow with time, so this is exact where timestamps tie to the second.
        """
        if task.trigger_comment_id is None or number != task.issue_number:
            return False
        if review != (task.source is TaskSource.REVIEW):
            return False
        return remark.id >= task.trigger_comment_id

    async def _relations(self, task: Task, newest_first: list[Remark]) -> dict[str, str]:
        """Each author's standing: write access or not, looked up for a few authors at most."""
        relations: dict[str, str] = {}
        lookups = 0
        for remark in newest_first:
            author = remark.author
            if author in relations:
                continue
            if remark.by_bot:
                relations[author] = "a bot"
            elif lookups >= MAX_LOOKUPS:
                relations[author] = "write access not checked"
            else:
                lookups += 1
                role = await self.forge.permission(task.installation_id, task.repo, author)
                relations[author] = "write access" if role in WRITERS else "no write access"
        return relations

    def _note(self, left_out: int, clipped: int, edited: int, stale: list[int]) -> str:
        """What the agent did not see, in a sentence for the tracking comment."""
        parts = []
        if left_out:
            parts.append(
                f"{_comments(left_out, 'earlier ')} not shown "
                f"(the prompt quotes at most {self.max_chars:,} characters)"
            )
        if clipped:
            parts.append(f"{_comments(clipped, 'long ')} clipped")
        if edited:
            parts.append(f"{_comments(edited)} edited after the request left out")
        if stale:
            refs = ", ".join(f"#{n}" for n in stale)
            parts.append(f"{refs} changed after the request, not quoted")
        return "; ".join(parts)
