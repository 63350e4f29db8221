"""The Forge port over GitHub's REST API: comments, reactions, permissions, pull requests."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cachetools import TTLCache
from gidgethub import BadRequest

from ghapp.core.model import GhappError, IssueText, PullRequest, Remark, Repository, Thread
from ghapp.core.ports import InstallationAccess
from ghapp.core.publish import Scrubber
from ghapp.github.auth import AppAuth, GitHubClient
from ghapp.github.checks_api import ChecksApi

log = logging.getLogger(__name__)
Pacer = Callable[[int], Awaitable[float]]  # installation -> seconds to wait before a write

MAX_COMMENT_CHARS = 65536
COMMENT_PAGE = 100
MAX_COMMENT_PAGES = 50  # an issue with more comments than this gets a new tracking comment
ROLES = ("admin", "maintain", "write", "triage", "read", "none")
PER_PAGE = 100
MAX_PAGES = 3  # per conversation: the first (to learn the last), then the newest
COMMENT_URLS = {
    False: "/repos/{owner}/{name}/issues/{number}/comments{?per_page,page}",
    True: "/repos/{owner}/{name}/pulls/{number}/comments{?per_page,page}",
}
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


def _time(value: object) -> datetime | None:
    """A GitHub timestamp as an aware datetime; None when missing or malformed."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _positive(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _remark(data: dict[str, Any], app_id: str) -> Remark | None:
    """A comment as the core reads it; None for one too mangled to place in time."""
    created = _time(data.get("created_at"))
    ident = _positive(data.get("id"))
    if created is None or ident is None:
        return None
    raw_user = data.get("user")
    user: dict[str, Any] = raw_user if isinstance(raw_user, dict) else {}
    app = data.get("performed_via_github_app")
    login = _text(user.get("login")) or "ghost"
    return Remark(
        id=ident,
        author=login,
        body=_text(data.get("body")),
        created_at=created,
        updated_at=_time(data.get("updated_at")) or created,
        by_bot=user.get("type") == "Bot" or login.endswith("[bot]"),
        ours=isinstance(app, dict) and str(app.get("id")) == app_id,
        path=_text(data.get("path")) or None,
        line=_positive(data.get("line")) or _positive(data.get("original_line")),
    )


def _repository(data: dict[str, Any]) -> Repository:
    return Repository(
        full_name=str(data["full_name"]),
        default_branch=str(data["default_branch"]),
        clone_url=str(data["clone_url"]),
        html_url=str(data.get("html_url", "")),
    )


DRAFTS_UNSUPPORTED = "Draft pull requests are not supported"
DRAFT_REFUSED_NOTE = (
    "\n\n> GitHub does not allow draft pull requests in this repository, so this one is "
    "open for review although MissionControl meant it as a draft."
)


def _pull(data: dict[str, Any]) -> PullRequest:
    return PullRequest(
        number=int(data["number"]),
        url=str(data["html_url"]),
        head=str(data["head"]["ref"]),
        state=str(data.get("state", "open")),
        draft=data.get("draft") is True,
    )


class GitHubForge(ChecksApi):
    """Forge on GitHub: relative URLs, one token retry after a 401, serial spaced writes."""

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
        self._auth = auth
        self._scrub = Scrubber(secrets)
        self._gh = client or auth.gh
        self.write_interval_s = write_interval_s
        self._pacer = pacer or self._pace_locally
        self._write_locks: dict[int, asyncio.Lock] = {}
        self._next_write: dict[int, float] = {}
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
            return await self._send(installation_id, method, url, url_vars, data, token)
        except BadRequest as exc:
            if int(exc.status_code) != 401:
                raise
        log.info("installation %s token refused (401); minting a new one", installation_id)
        self._auth.invalidate(installation_id, token)
        token = await self._auth.installation_token(installation_id)
        return await self._send(installation_id, method, url, url_vars, data, token)

    async def _pace_locally(self, installation_id: int) -> float:
        """Seconds until this process may write for the installation again (one process)."""
        now = time.monotonic()
        last = self._next_write.get(installation_id)
        slot = now if last is None else max(now, last + self.write_interval_s)
        self._next_write[installation_id] = slot
        return slot - now

    async def _send(
        self,
        installation_id: int,
        method: str,
        url: str,
        url_vars: dict[str, Any],
        data: Any,
        token: str,
    ) -> Any:
        if method == "GET":
            return await self._gh.getitem(url, url_vars, oauth_token=token)
        if method == "PAGE":  # a GET that also returns the Link header's page numbers
            return await self._gh.getpage(url, url_vars, oauth_token=token)
        data = self._scrubbed(data)
        # GitHub asks for serial writes spaced >= 1 s per installation: serial here, and
        # spaced by slots that the pacer (the shared store in production) hands out.
        async with self._write_locks.setdefault(installation_id, asyncio.Lock()):
            if self.write_interval_s > 0:
                wait = await self._pacer(installation_id)
                if wait > 0:
                    await asyncio.sleep(wait)
            if method == "POST":
                return await self._gh.post(url, url_vars, data=data, oauth_token=token)
            return await self._gh.patch(url, url_vars, data=data, oauth_token=token)

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
        return _repository(data)

    # -- RepoAdmin: /create ---------------------------------------------------------------
    async def access(self, installation_id: int) -> InstallationAccess:
        """The installation's account and permissions as GitHub reports them now (app JWT)."""
        data = await self._auth.app_getitem("/app/installations/{id}", {"id": str(installation_id)})
        account = data.get("account") or {}
        return InstallationAccess(
            installation_id=installation_id,
            account=str(account.get("login", "")),
            organization=account.get("type") == "Organization",
            administration=str((data.get("permissions") or {}).get("administration", "none")),
            settings_url=str(data.get("html_url", "")),
        )

    async def app_settings_url(self) -> str:
        """The app's permissions page, under its owner's settings."""
        data = await self._auth.app_getitem("/app")
        parts = urlsplit(str(data.get("html_url") or "https://github.com/apps/"))
        web = f"{parts.scheme}://{parts.netloc}"
        owner = data.get("owner") or {}
        slug = data.get("slug", "")
        if owner.get("type") == "Organization":
            return f"{web}/organizations/{owner.get('login')}/settings/apps/{slug}/permissions"
        return f"{web}/settings/apps/{slug}/permissions"

    async def create_repo(self, installation_id: int, owner: str, name: str) -> Repository:
        """A private repository with a README in the organization; GhappError saying why not."""
        payload = {"name": name, "private": True, "auto_init": True}
        try:
            data = await self._call(
                installation_id, "POST", "/orgs/{owner}/repos", {"owner": owner}, payload
            )
        except BadRequest as exc:
            status = int(exc.status_code)
            text = " ".join(str(a) for a in exc.args)
            if status == 422 and "already exists" in text:
                raise GhappError(f"{owner}/{name} already exists on GitHub.") from None
            if status in (403, 404):
                raise GhappError(
                    f"GitHub refused to create {owner}/{name} ({status}: {text}); the "
                    "installation needs the Administration: Read and write permission."
                ) from None
            raise
        return _repository(data)

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
        self, installation_id: int, repo: str, number: int, marker: str, since: datetime
    ) -> int | None:
        """The first comment by a GitHub App (ghapp) on the issue that holds `marker`.

        Only comments updated since `since` (the task's creation) are listed: a page or so.
        """
        url = "/repos/{owner}/{name}/issues/{number}/comments{?per_page,page,since}"
        stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for page in range(1, MAX_COMMENT_PAGES + 1):
            url_vars = _repo_vars(
                repo, number=number, per_page=COMMENT_PAGE, page=page, since=stamp
            )
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
        """Open a PR; if one is already open for this head, return that one instead.

        A draft that GitHub refuses (422 on plans without drafts) is opened ready, saying so.
        """
        payload: dict[str, Any] = {"title": title, "head": head, "base": base}
        payload |= {"body": trim_body(body), "draft": draft}
        url = "/repos/{owner}/{name}/pulls"
        try:
            data = await self._call(installation_id, "POST", url, _repo_vars(repo), payload)
        except BadRequest as exc:
            text = " ".join(str(a) for a in exc.args)
            if draft and int(exc.status_code) == 422 and DRAFTS_UNSUPPORTED in text:
                log.info("%s refuses draft pull requests; opening one ready", repo)
                payload |= {"draft": False, "body": trim_body(body + DRAFT_REFUSED_NOTE)}
                return _pull(
                    await self._call(installation_id, "POST", url, _repo_vars(repo), payload)
                )
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

    async def thread(
        self, installation_id: int, repo: str, number: int, *, review: bool = False
    ) -> Thread:
        """The newest comments, oldest first: page 1 names the last page; then the last pages."""
        url = COMMENT_URLS[review]

        async def page(n: int) -> tuple[list[Any], dict[str, int]]:
            url_vars = _repo_vars(repo, number=number, per_page=PER_PAGE, page=n)
            data, links = await self._call(installation_id, "PAGE", url, url_vars)
            return (data if isinstance(data, list) else []), links

        first, links = await page(1)
        last = links.get("last", 1)
        wanted = range(max(2, last - MAX_PAGES + 2), last + 1)
        rest = await asyncio.gather(*(page(n) for n in wanted))
        older = 0
        items = first
        if wanted and wanted.start > 2:  # pages in between are skipped: page 1 is too old
            older, items = (wanted.start - 1) * PER_PAGE, []
        for data, _ in rest:
            items = items + data
        found = (_remark(i, self._auth.app_id) for i in items if isinstance(i, dict))
        remarks = sorted((r for r in found if r is not None), key=lambda r: (r.created_at, r.id))
        return Thread(tuple(remarks), older)

    async def issue(self, installation_id: int, repo: str, number: int) -> IssueText | None:
        """An issue's or PR's title and description; None when it does not exist."""
        url = "/repos/{owner}/{name}/issues/{number}"
        try:
            data = await self._call(installation_id, "GET", url, _repo_vars(repo, number=number))
        except BadRequest as exc:
            if int(exc.status_code) in (404, 410):
                return None
            raise
        return IssueText(
            number=number,
            title=_text(data.get("title")),
            body=_text(data.get("body")),
            is_pull_request="pull_request" in data,
            updated_at=_time(data.get("updated_at")),
        )
