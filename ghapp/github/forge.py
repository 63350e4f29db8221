"""The Forge port over GitHub's REST API: comments, reactions, permissions, pull requests."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from cachetools import TTLCache
from gidgethub import BadRequest

from ghapp.core.model import PullRequest, Repository
from ghapp.core.publish import Scrubber
from ghapp.github.auth import AppAuth, GitHubClient

log = logging.getLogger(__name__)

MAX_COMMENT_CHARS = 65536
COMMENT_PAGE = 100
MAX_COMMENT_PAGES = 50  # an issue with more comments than this gets a new tracking comment
ROLES = ("admin", "maintain", "write", "triage", "read", "none")
REACTION_URLS = {
    "issue": "/repos/{owner}/{name}/issues/{number}/reactions",
    "comment": "/repos/{owner}/{name}/issues/comments/{number}/reactions",
    "review": "/repos/{owner}/{name}/pulls/comments/{number}/reactions",
}


def trim_body(body: str, limit: int = MAX_COMMENT_CHARS) -> str:
    """Cut a body GitHub would refuse (422 "Body is too long") and say so at the end."""
    if len(body) <= limit:
        return body
    omitted = len(body) - limit
    while True:  # the marker's length depends on the count it reports; settles in <= 3 rounds
        marker = f"\n\n… (trimmed: {omitted} characters not shown)"
        keep = limit - len(marker)
        if len(body) - keep == omitted:
            return body[:keep] + marker
        omitted = len(body) - keep


def _role(data: dict[str, Any]) -> str:
    """The exact role when GitHub names a standard one, else the legacy permission."""
    role = data.get("role_name")
    if role in ROLES:
        return str(role)
    legacy = data.get("permission")
    return str(legacy) if legacy in ROLES else "none"


def _repo_vars(repo: str, **extra: object) -> dict[str, Any]:
    owner, _, name = repo.partition("/")
    if not owner or not name:
        raise ValueError(f"repository must be owner/name, got {repo!r}")
    return {"owner": owner, "name": name, **extra}


def _pull(data: dict[str, Any]) -> PullRequest:
    return PullRequest(
        number=int(data["number"]),
        url=str(data["html_url"]),
        head=str(data["head"]["ref"]),
        state=str(data.get("state", "open")),
    )


class GitHubForge:
    """Forge on GitHub: relative URLs, one token retry after a 401, serial spaced writes."""

    def __init__(
        self,
        auth: AppAuth,
        *,
        client: GitHubClient | None = None,
        write_interval_s: float = 1.0,
        permission_ttl_s: float = 300.0,
        secrets: Iterable[str] = (),
    ) -> None:
        self._auth = auth
        self._scrub = Scrubber(secrets)
        self._gh = client or auth.gh
        self.write_interval_s = write_interval_s
        self._write_lock = asyncio.Lock()
        self._last_write = float("-inf")
        self._permissions: TTLCache[tuple[int, str, str], str] = TTLCache(
            maxsize=4096, ttl=permission_ttl_s
        )

    async def _call(
        self,
        installation_id: int,
        method: str,
        url: str,
        url_vars: dict[str, Any],
        data: Any = None,
    ) -> Any:
        """One REST call with the installation's token; a refused token is re-minted once."""
        token = await self._auth.installation_token(installation_id)
        try:
            return await self._send(method, url, url_vars, data, token)
        except BadRequest as exc:
            if int(exc.status_code) != 401:
                raise
        log.info("installation %s token refused (401); minting a new one", installation_id)
        self._auth.invalidate(installation_id, token)
        token = await self._auth.installation_token(installation_id)
        return await self._send(method, url, url_vars, data, token)

    async def _send(
        self, method: str, url: str, url_vars: dict[str, Any], data: Any, token: str
    ) -> Any:
        if method == "GET":
            return await self._gh.getitem(url, url_vars, oauth_token=token)
        data = self._scrubbed(data)
        async with self._write_lock:  # GitHub asks for serial writes spaced >= 1 s
            wait = self._last_write + self.write_interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                if method == "POST":
                    return await self._gh.post(url, url_vars, data=data, oauth_token=token)
                return await self._gh.patch(url, url_vars, data=data, oauth_token=token)
            finally:
                self._last_write = time.monotonic()

    def _scrubbed(self, data: Any) -> Any:
        """What ghapp writes to GitHub, with secrets and token shapes removed from its text."""
        if not isinstance(data, dict):
            return data
        return {
            key: self._scrub(value)
            if key in ("body", "title") and isinstance(value, str)
            else value
            for key, value in data.items()
        }

    async def token(self, installation_id: int, refused: str | None = None) -> str:
        """A valid installation token, for git calls only; a refused one is replaced."""
        if refused is not None:
            self._auth.invalidate(installation_id, refused)
        return await self._auth.installation_token(installation_id)

    async def permission(
        self, installation_id: int, repo: str, user: str, *, fresh: bool = False
    ) -> str:
        """admin, maintain, write, triage, read or none; cached for a few minutes unless fresh."""
        key = (installation_id, repo.lower(), user.lower())
        cached = None if fresh else self._permissions.get(key)
        if cached is not None:
            return cached
        url = "/repos/{owner}/{name}/collaborators/{user}/permission"
        try:
            role = _role(await self._call(installation_id, "GET", url, _repo_vars(repo, user=user)))
        except BadRequest as exc:
            if int(exc.status_code) != 404:
                raise
            role = "none"
        self._permissions[key] = role
        return role

    async def repository(self, installation_id: int, repo: str) -> Repository:
        data = await self._call(installation_id, "GET", "/repos/{owner}/{name}", _repo_vars(repo))
        return Repository(
            full_name=str(data["full_name"]),
            default_branch=str(data["default_branch"]),
            clone_url=str(data["clone_url"]),
        )

    async def comment(self, installation_id: int, repo: str, number: int, body: str) -> int:
        """Post an issue or PR comment; returns its id."""
        url = "/repos/{owner}/{name}/issues/{number}/comments"
        data = await self._call(
            installation_id, "POST", url, _repo_vars(repo, number=number), {"body": trim_body(body)}
        )
        return int(data["id"])

    async def edit_comment(
        self, installation_id: int, repo: str, comment_id: int, body: str
    ) -> None:
        url = "/repos/{owner}/{name}/issues/comments/{number}"
        await self._call(
            installation_id,
            "PATCH",
            url,
            _repo_vars(repo, number=comment_id),
            {"body": trim_body(body)},
        )

    async def find_comment(
        self, installation_id: int, repo: str, number: int, marker: str
    ) -> int | None:
        """The first comment by a GitHub App (ghapp) on the issue that holds `marker`."""
        url = "/repos/{owner}/{name}/issues/{number}/comments{?per_page,page}"
        for page in range(1, MAX_COMMENT_PAGES + 1):
            url_vars = _repo_vars(repo, number=number, per_page=COMMENT_PAGE, page=page)
            items = await self._call(installation_id, "GET", url, url_vars)
            for item in items:
                user = item.get("user") or {}
                if user.get("type") == "Bot" and marker in str(item.get("body") or ""):
                    return int(item["id"])
            if len(items) < COMMENT_PAGE:
                break
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
        """Add a reaction to an issue, an issue comment, or a review comment."""
        if comment_id is not None:
            kind, number = ("review" if review_comment else "comment"), comment_id
        elif issue_number is not None:
            kind, number = "issue", issue_number
        else:
            raise ValueError("react needs issue_number or comment_id")
        await self._call(
            installation_id,
            "POST",
            REACTION_URLS[kind],
            _repo_vars(repo, number=number),
            {"content": content},
        )

    async def find_pr(self, installation_id: int, repo: str, branch: str) -> PullRequest | None:
        """The open pull request whose head is this branch, if any."""
        url_vars = _repo_vars(repo)
        url_vars.update(head=f"{url_vars['owner']}:{branch}", state="open")
        data = await self._call(
            installation_id, "GET", "/repos/{owner}/{name}/pulls{?head,state}", url_vars
        )
        return _pull(data[0]) if data else None

    async def open_pr(
        self, installation_id: int, repo: str, *, head: str, base: str, title: str, body: str
    ) -> PullRequest:
        """Open a PR; if one is already open for this head, return that one instead."""
        payload = {"title": title, "head": head, "base": base, "body": trim_body(body)}
        try:
            data = await self._call(
                installation_id, "POST", "/repos/{owner}/{name}/pulls", _repo_vars(repo), payload
            )
        except BadRequest as exc:
            text = " ".join(str(a) for a in exc.args)
            if int(exc.status_code) != 422 or "already exists" not in text:
                raise
            existing = await self.find_pr(installation_id, repo, head)
            if existing is None:
                raise
            return existing
        return _pull(data)

    async def update_pr(self, installation_id: int, repo: str, number: int, *, body: str) -> None:
        url = "/repos/{owner}/{name}/pulls/{number}"
        await self._call(
            installation_id,
            "PATCH",
            url,
            _repo_vars(repo, number=number),
            {"body": trim_body(body)},
        )
