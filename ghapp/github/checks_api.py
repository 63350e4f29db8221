"""The CiForge port on GitHub's REST API: a PR's head, check runs, committers, job logs.

Needs the App's `checks: read` and `actions: read` permissions (app.yml)."""

from __future__ import annotations

from typing import Any

from gidgethub import BadRequest

from ghapp.core.model import CheckRun, PullHead
from ghapp.github.rest import GitHubRest, repo_vars

MAX_RUNS_PAGES = 3


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _run(data: dict[str, Any]) -> CheckRun | None:
    """A check run from the API; None when it lacks an id or a name."""
    ident, name = data.get("id"), _text(data.get("name"))
    if not isinstance(ident, int) or not name:
        return None
    output = _dict(data.get("output"))
    text = "\n\n".join(
        t for t in (_text(output.get(k)).strip() for k in ("title", "summary", "text")) if t
    )
    app = _dict(data.get("app"))
    conclusion = data.get("conclusion")
    return CheckRun(
        id=ident,
        name=name,
        status=_text(data.get("status")),
        conclusion=conclusion if isinstance(conclusion, str) else None,
        output=text,
        app=_text(app.get("slug")),
    )


class ChecksApi(GitHubRest):
    """A pull request's head, its check runs and their logs."""

    async def pull_head(self, installation_id: int, repo: str, number: int) -> PullHead | None:
        """The pull request's head commit and branch now; None when it does not exist."""
        url = "/repos/{owner}/{name}/pulls/{number}"
        try:
            data = await self._call(installation_id, "GET", url, repo_vars(repo, number=number))
        except BadRequest as exc:
            if int(exc.status_code) == 404:
                return None
            raise
        head = _dict(data.get("head"))
        return PullHead(
            number=number,
            sha=_text(head.get("sha")),
            branch=_text(head.get("ref")),
            open=data.get("state") == "open",
        )

    async def check_runs(self, installation_id: int, repo: str, sha: str) -> list[CheckRun]:
        """The latest run of each check on a commit (up to 300)."""
        url = "/repos/{owner}/{name}/commits/{sha}/check-runs{?per_page,page,filter}"
        runs: list[CheckRun] = []
        for page in range(1, MAX_RUNS_PAGES + 1):
            url_vars = repo_vars(repo, sha=sha, per_page=100, page=page, filter="latest")
            data = await self._call(installation_id, "GET", url, url_vars)
            items = data.get("check_runs") if isinstance(data, dict) else None
            if not isinstance(items, list):
                break
            runs += [r for r in (_run(i) for i in items if isinstance(i, dict)) if r]
            if len(items) < 100:
                break
        return runs

    async def committer_email(self, installation_id: int, repo: str, sha: str) -> str:
        """The email git recorded as the commit's committer."""
        url = "/repos/{owner}/{name}/commits/{sha}"
        data = await self._call(installation_id, "GET", url, repo_vars(repo, sha=sha))
        return _text(_dict(_dict(data.get("commit")).get("committer")).get("email"))

    async def job_log(self, installation_id: int, repo: str, job_id: int) -> str | None:
        """An Actions job's plain-text log (GitHub answers 302 to a short-lived blob URL)."""
        url = "/repos/{owner}/{name}/actions/jobs/{job}/logs"
        try:
            data = await self._call(installation_id, "GET", url, repo_vars(repo, job=job_id))
        except BadRequest as exc:
            if int(exc.status_code) in (404, 410):
                return None
            raise
        return data if isinstance(data, str) else None
