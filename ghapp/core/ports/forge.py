"""The code host as the core needs it: comments, pull requests, CI, repositories."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ghapp.core.model import (
    CheckRun,
    IssueText,
    PullHead,
    PullRequest,
    Repository,
    Thread,
)


class Forge(Protocol):
    """The code host's REST API as the core needs it (GitHub in production)."""

    async def token(self, installation_id: int, refused: str | None = None) -> str:
        """A valid installation token, for git calls only; `refused` is one git rejected."""
        ...

    async def permission(
        self, installation_id: int, repo: str, user: str, *, fresh: bool = False
    ) -> str:
        """The user's role on the repository: admin, maintain, write, triage, read or none.

        An adapter may cache the answer for a few minutes; `fresh` asks the forge now.
        """
        ...

    async def repository(self, installation_id: int, repo: str) -> Repository: ...

    async def comment(self, installation_id: int, repo: str, number: int, body: str) -> int:
        """Post an issue or PR comment; returns its id."""
        ...

    async def edit_comment(
        self, installation_id: int, repo: str, comment_id: int, body: str
    ) -> None: ...

    async def find_comment(
        self, installation_id: int, repo: str, number: int, marker: str, since: datetime
    ) -> int | None:
        """The id of ghapp's own comment, updated since `since`, whose body holds `marker`."""
        ...

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
        """Add a reaction to an issue, an issue comment, or a review comment."""
        ...

    async def find_pr(self, installation_id: int, repo: str, branch: str) -> PullRequest | None:
        """The open pull request whose head is this branch, if any."""
        ...

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
        """Open a PR; a draft where the repository allows drafts, else ready and saying so."""
        ...

    async def update_pr(
        self, installation_id: int, repo: str, number: int, *, body: str
    ) -> None: ...

    async def thread(
        self, installation_id: int, repo: str, number: int, *, review: bool = False
    ) -> Thread:
        """An issue's or PR's conversation comments (`review`: a PR's inline review comments).

        Oldest first; a long conversation costs a few paginated calls and yields its newest
        comments, with the count of older ones left unfetched.
        """
        ...

    async def issue(self, installation_id: int, repo: str, number: int) -> IssueText | None:
        """An issue's or PR's title and description; None when it does not exist."""
        ...


class CiForge(Protocol):
    """What the forge says about CI on a pull request (GitHub: checks and Actions)."""

    async def pull_head(self, installation_id: int, repo: str, number: int) -> PullHead | None:
        """The pull request's current head; None when it does not exist."""
        ...

    async def check_runs(self, installation_id: int, repo: str, sha: str) -> list[CheckRun]:
        """The latest check run of each name on a commit."""
        ...

    async def committer_email(self, installation_id: int, repo: str, sha: str) -> str:
        """Who committed a commit (its committer's email), to tell ghapp's from a person's."""
        ...

    async def job_log(self, installation_id: int, repo: str, job_id: int) -> str | None:
        """An Actions job's log; None when the check run has none (another app's check)."""
        ...


@dataclass(frozen=True)
class InstallationAccess:
    """What one installation of the app may do, as the forge reports it now."""

    installation_id: int
    account: str
    organization: bool
    administration: str  # the repository permission: "write", "read" or "none"
    settings_url: str  # where an owner accepts new permissions for this installation


class RepoAdmin(Protocol):
    """Creating repositories, which only an organization installation with admin rights may."""

    async def access(self, installation_id: int) -> InstallationAccess: ...

    async def app_settings_url(self) -> str:
        """Where the app's owner changes the permissions the app asks for."""
        ...

    async def create_repo(self, installation_id: int, owner: str, name: str) -> Repository:
        """A new private repository initialised with a README; GhappError saying why not."""
        ...
