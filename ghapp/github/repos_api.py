"""Repositories, permissions and pull requests on GitHub, and the organization's new repos."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from cachetools import TTLCache
from gidgethub import BadRequest

from ghapp.core.model import GhappError, PullRequest, Repository
from ghapp.core.ports import InstallationAccess
from ghapp.github.issues_api import trim_body
from ghapp.github.rest import GitHubRest, repo_vars

log = logging.getLogger(__name__)
ROLES = ("admin", "maintain", "write", "triage", "read", "none")


def _role(data: dict[str, Any]) -> str:
    """The exact role when GitHub names a standard one, else the legacy permission."""
    role = data.get("role_name")
    if role in ROLES:
        return str(role)
    legacy = data.get("permission")
    return str(legacy) if legacy in ROLES else "none"


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


class ReposApi(GitHubRest):
    """Who may write, what a repository is, and the pull requests ghapp opens."""

    _permissions: TTLCache[tuple[int, str, str], str]  # made by GitHubForge, with its TTL

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
            role = _role(await self._call(installation_id, "GET", url, repo_vars(repo, user=user)))
        except BadRequest as exc:
            if int(exc.status_code) != 404:
                raise
            role = "none"
        self._permissions[key] = role
        return role

    async def repository(self, installation_id: int, repo: str) -> Repository:
        data = await self._call(installation_id, "GET", "/repos/{owner}/{name}", repo_vars(repo))
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

    async def find_pr(self, installation_id: int, repo: str, branch: str) -> PullRequest | None:
        """The open pull request whose head is this branch, if any."""
        url_vars = repo_vars(repo)
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
            data = await self._call(installation_id, "POST", url, repo_vars(repo), payload)
        except BadRequest as exc:
            text = " ".join(str(a) for a in exc.args)
            if draft and int(exc.status_code) == 422 and DRAFTS_UNSUPPORTED in text:
                log.info("%s refuses draft pull requests; opening one ready", repo)
                payload |= {"draft": False, "body": trim_body(body + DRAFT_REFUSED_NOTE)}
                return _pull(
                    await self._call(installation_id, "POST", url, repo_vars(repo), payload)
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
            repo_vars(repo, number=number),
            {"body": trim_body(body)},
        )
