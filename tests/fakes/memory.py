"""In-memory port fakes for unit tests of the core: one copy, shared by every test."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ghapp.core.gate import CheckResult, RepoSettings
from ghapp.core.model import IssueText, PullRequest, Repository, Task, Thread
from ghapp.core.ports import AgentOutcome, AgentRequest, Notice, StopReason, Workspace


class FakeClock:
    """A clock tests move by hand, to turn the UTC day."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, **kwargs: float) -> None:
        self.current += timedelta(**kwargs)


@dataclass
class MemoryForge:
    """Records every call the core makes to GitHub."""

    permissions: dict[str, str] = field(default_factory=dict)
    comments: list[tuple[str, int, str]] = field(default_factory=list)
    edits: list[tuple[int, str]] = field(default_factory=list)
    reactions: list[tuple[str, str]] = field(default_factory=list)
    prs: list[PullRequest] = field(default_factory=list)  # every one opened: a duplicate shows
    pr_bodies: dict[int, str] = field(default_factory=dict)
    tokens_issued: int = 0
    fail_repository: Exception | None = None
    threads: dict[tuple[int, bool], Thread] = field(default_factory=dict)  # (number, review)
    issues: dict[int, IssueText] = field(default_factory=dict)
    reads: list[str] = field(default_factory=list)

    async def token(self, installation_id: int, refused: str | None = None) -> str:
        self.tokens_issued += 1
        return f"ghs_memory{self.tokens_issued}"

    async def permission(
        self, installation_id: int, repo: str, user: str, *, fresh: bool = False
    ) -> str:
        return self.permissions.get(user, "read")

    async def repository(self, installation_id: int, repo: str) -> Repository:
        if self.fail_repository is not None:
            raise self.fail_repository
        return Repository(repo, "main", f"https://example.invalid/{repo}.git")

    async def comment(self, installation_id: int, repo: str, number: int, body: str) -> int:
        self.comments.append((repo, number, body))
        return 1000 + len(self.comments)

    async def edit_comment(
        self, installation_id: int, repo: str, comment_id: int, body: str
    ) -> None:
        self.edits.append((comment_id, body))

    async def find_comment(
        self, installation_id: int, repo: str, number: int, marker: str, since: datetime
    ) -> int | None:
        for index, (on_repo, on_number, body) in enumerate(self.comments):
            if (on_repo, on_number) == (repo, number) and marker in body:
                edited = [text for cid, text in self.edits if cid == 1001 + index]
                if marker in (edited[-1] if edited else body):
                    return 1001 + index
        return None

    async def react(
        self,
        installation_id: int,
        repo: str,
        content: str,
        *,
        issue_number: int | None = None,
        comment_id: int | None = None,
        review_comment: bool = False,
    ) -> None:
        target = f"comment:{comment_id}" if comment_id is not None else f"issue:{issue_number}"
        self.reactions.append((target, content))

    async def find_pr(self, installation_id: int, repo: str, branch: str) -> PullRequest | None:
        return next((pr for pr in reversed(self.prs) if pr.head == branch), None)

    async def open_pr(
        self,
        installation_id: int,
        repo: str,
        *,
        head: str,
        base: str,
        title: str,
        body: str,
        draft: bool = False,
    ) -> PullRequest:
        number = 500 + len(self.prs)
        pr = PullRequest(number, f"https://github.test/{repo}/pull/{number}", head, draft=draft)
        self.prs.append(pr)
        self.pr_bodies[number] = body
        return pr

    async def update_pr(self, installation_id: int, repo: str, number: int, *, body: str) -> None:
        self.pr_bodies[number] = body

    async def thread(
        self, installation_id: int, repo: str, number: int, *, review: bool = False
    ) -> Thread:
        self.reads.append(f"{'review' if review else 'comments'}:{number}")
        return self.threads.get((number, review), Thread())

    async def issue(self, installation_id: int, repo: str, number: int) -> IssueText | None:
        self.reads.append(f"issue:{number}")
        return self.issues.get(number)

    def bodies(self) -> list[str]:
        """Every comment text and every edit, in order."""
        return [c[2] for c in self.comments] + [e[1] for e in self.edits]


@dataclass
class MemoryVcs:
    """A workspace whose commits the test decides; the agent fake adds to them."""

    root: Path
    commits: list[str] = field(default_factory=list)
    dirty: bool = False
    pushed: list[tuple[str, int]] = field(default_factory=list)
    cleaned: int = 0
    existing_branch_commits: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)  # commit subject -> paths
    resets: list[str] = field(default_factory=list)
    bases: list[str] = field(default_factory=list)  # the base branch of each prepare

    async def prepare(
        self, task: Task, repo: Repository, token: str, *, fetch: bool = True
    ) -> Workspace:
        self.bases.append(repo.default_branch)
        branch = task.branch or f"mc/{task.issue_number}-task"
        self.commits = list(self.existing_branch_commits.get(branch, []))
        path = self.root / f"task-{task.id}"
        path.mkdir(parents=True, exist_ok=True)
        return Workspace(
            path, path / "home", branch, "base0", f"start{len(self.commits)}", tuple(self.commits)
        )

    async def rescue(self, ws: Workspace) -> bool:
        if not self.dirty:
            return False
        self.commits.insert(0, "WIP: auto-rescue")
        self.dirty = False
        return True

    async def commits_since(self, ws: Workspace, base: str) -> list[str]:
        if base == ws.start_sha:
            return self.commits[: len(self.commits) - len(ws.prior_commits)]
        return list(self.commits)

    async def push(self, ws: Workspace, token: str) -> None:
        self.pushed.append((ws.branch, len(self.commits)))
        self.existing_branch_commits[ws.branch] = list(self.commits)

    async def head(self, ws: Workspace) -> str:
        return f"sha{len(self.commits)}"

    async def reset(self, ws: Workspace, sha: str) -> None:
        self.resets.append(sha)

    async def changed_files(self, ws: Workspace, base: str) -> list[str]:
        """Paths of the commits after `base` (a head() value), or of all of them."""
        newer = self.commits
        if base.startswith("sha"):
            newer = self.commits[: len(self.commits) - int(base[3:])]
        return [p for c in newer for p in self.files.get(c, [f"src/{c.split()[0]}.py"])]

    async def cleanup(self, ws: Workspace) -> None:
        self.cleaned += 1


@dataclass
class ScriptedWorker:
    """An agent whose behaviour each test scripts: commits, dirt, outcome, or a wait."""

    vcs: MemoryVcs | None = None
    outcome: AgentOutcome = field(default_factory=lambda: AgentOutcome(True, 0.5, "did it"))
    make_commits: int = 1
    leave_dirty: bool = False
    block: bool = False
    requests: list[AgentRequest] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    # as the metering proxy does: spend booked while the agent runs (task, attempt, usd)
    book: Callable[[int, int, float], Awaitable[object]] | None = None
    running_cost: float = 0.75

    async def run(self, request: AgentRequest, stop: asyncio.Event) -> AgentOutcome:
        self.requests.append(request)
        if self.block and self.book is not None:
            await self.book(request.task_id, request.attempt, self.running_cost)
        self.started.set()
        if self.vcs is not None:
            for i in range(self.make_commits):
                self.vcs.commits.insert(0, f"c{i} agent work")
            self.vcs.dirty = self.leave_dirty
        if self.block:
            await stop.wait()
            return AgentOutcome(False, 0.25, stopped=StopReason.CANCELLED, reason="stopped")
        return self.outcome


@dataclass
class RecordingMessenger:
    """Keeps every notice the core sends to the operator."""

    notices: list[Notice] = field(default_factory=list)

    async def notify(self, notice: Notice) -> None:
        self.notices.append(notice)

    def kinds(self) -> list[str]:
        return [n.kind for n in self.notices]


@dataclass
class MemoryLogs:
    """A LogReader whose answers the test sets."""

    lines: list[str] = field(default_factory=lambda: ["$ git commit", "done"])

    async def tail(self, task: Task) -> list[str]:
        return list(self.lines)


@dataclass
class MemorySettings:
    """A SettingsSource whose answer the test sets: settings, or an error to raise."""

    settings: RepoSettings = field(default_factory=RepoSettings)
    error: Exception | None = None
    loads: int = 0

    async def load(self, repo: Repository, token: str) -> RepoSettings:
        self.loads += 1
        if self.error is not None:
            raise self.error
        return self.settings


@dataclass
class ScriptedChecks:
    """Checks whose verdict the test scripts: `passes(command)` decides each command."""

    passes: Callable[[str], bool] = lambda command: True
    runs: list[tuple[tuple[str, ...], bool]] = field(default_factory=list)  # (commands, network)
    output: str = "FAILED tests/test_app.py::test_it - assert 1 == 2"

    async def run(
        self,
        commands: Sequence[str],
        ws: Workspace,
        *,
        network: bool,
        timeout_s: float,
        stop: asyncio.Event,
        keep_going: bool,
    ) -> list[CheckResult]:
        self.runs.append((tuple(commands), network))
        results = []
        for command in commands:
            ok = self.passes(command)
            results.append(CheckResult(command, ok, 0.25, "" if ok else self.output))
            if not ok and not keep_going:
                break
        return results
