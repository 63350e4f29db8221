"""The Forge port on GitHub: issues and comments, repositories and pull requests, checks."""

from __future__ import annotations

from collections.abc import Iterable

from cachetools import TTLCache

from ghapp.github.auth import AppAuth, GitHubClient
from ghapp.github.checks_api import ChecksApi
from ghapp.github.issues_api import IssuesApi
from ghapp.github.repos_api import ReposApi
from ghapp.github.rest import Pacer


class GitHubForge(IssuesApi, ReposApi, ChecksApi):
    """Forge on GitHub over one REST transport; permissions cached for a few minutes."""

    def __init__(
        self,
        auth: AppAuth,
        *,
        client: GitHubClient | None = None,
        write_interval_s: float = 1.0,
        permission_ttl_s: float = 300.0,
        secrets: Iterable[str] = (),
        pacer: Pacer | None = None,
    ) -> None:
        super().__init__(
            auth, client=client, write_interval_s=write_interval_s, secrets=secrets, pacer=pacer
        )
        self._permissions = TTLCache(maxsize=4096, ttl=permission_ttl_s)
