"""Checkouts and the commands run on them: git work, repository settings, checks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ghapp.core.gate import CheckResult, RepoSettings
from ghapp.core.model import (
    Repository,
    Task,
)


@dataclass(frozen=True)
class Workspace:
    """A task's private checkout, ready for the agent."""

    path: Path
    home: Path
    branch: str
    base_sha: str
    start_sha: str
    prior_commits: tuple[str, ...] = ()


class Vcs(Protocol):
    """Git work on mirrors and task checkouts; the token only ever lives in env."""

    async def prepare(
        self, task: Task, repo: Repository, token: str, *, fetch: bool = True
    ) -> Workspace:
        """Fetch the mirror (fetch=False: it was just fetched), make the private checkout.

        Reuses the remote task branch when it already exists (a retry or follow-up).
        """
        ...

    async def rescue(self, ws: Workspace) -> bool:
        """Commit anything left uncommitted as "WIP: auto-rescue"; True if it did."""
        ...

    async def commits_since(self, ws: Workspace, base: str) -> list[str]:
        """One line per commit in base..HEAD, newest first."""
        ...

    async def push(self, ws: Workspace, token: str) -> None: ...

    async def head(self, ws: Workspace) -> str:
        """The checkout's HEAD commit."""
        ...

    async def reset(self, ws: Workspace, sha: str) -> None:
        """Put the checkout back at `sha` exactly, dropping what checks wrote or committed."""
        ...

    async def changed_files(self, ws: Workspace, base: str) -> list[str]:
        """Paths that base..HEAD changes."""
        ...

    async def cleanup(self, ws: Workspace) -> None: ...


class SettingsSource(Protocol):
    """A repository's own settings, read where the agent cannot change them."""

    async def load(self, repo: Repository, token: str) -> RepoSettings:
        """Fetch the repository; its settings at the head of its default branch.

        No file gives the operator's settings; an invalid one raises SettingsInvalid.
        """
        ...


class Checks(Protocol):
    """Runs a repository's setup or verify commands on a checkout, confined like the agent."""

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
        """Each command in order, each within timeout_s; stops at the first failure unless
        keep_going, and at `stop`."""
        ...
