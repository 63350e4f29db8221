"""Issues and comments on GitHub: tracking comments, reactions, the conversation a task reads."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from gidgethub import BadRequest

from ghapp.core.model import IssueText, Remark, Thread
from ghapp.github.rest import GitHubRest, gh_time, positive, repo_vars, text

MAX_COMMENT_CHARS = 65536
COMMENT_PAGE = 100
MAX_COMMENT_PAGES = 50  # an issue with more comments than this gets a new tracking comment
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


def _remark(data: dict[str, Any], app_id: str) -> Remark | None:
    """A comment as the core reads it; None for one too mangled to place in time."""
    created = gh_time(data.get("created_at"))
    ident = positive(data.get("id"))
    if created is None or ident is None:
        return None
    raw_user = data.get("user")
    user: dict[str, Any] = raw_user if isinstance(raw_user, dict) else {}
    app = data.get("performed_via_github_app")
    login = text(user.get("login")) or "ghost"
    return Remark(
        id=ident,
        author=login,
        body=text(data.get("body")),
        created_at=created,
        updated_at=gh_time(data.get("updated_at")) or created,
        by_bot=user.get("type") == "Bot" or login.endswith("[bot]"),
        ours=isinstance(app, dict) and str(app.get("id")) == app_id,
        path=text(data.get("path")) or None,
        line=positive(data.get("line")) or positive(data.get("original_line")),
    )


class IssuesApi(GitHubRest):
    """Comments, reactions and conversations of issues and pull requests."""

    async def comment(self, installation_id: int, repo: str, number: int, body: str) -> int:
        """Post an issue or PR comment; returns its id."""
        url = "/repos/{owner}/{name}/issues/{number}/comments"
        data = await self._call(
            installation_id, "POST", url, repo_vars(repo, number=number), {"body": trim_body(body)}
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
            repo_vars(repo, number=comment_id),
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
            url_vars = repo_vars(repo, number=number, per_page=COMMENT_PAGE, page=page, since=stamp)
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
            repo_vars(repo, number=number),
            {"content": content},
        )

    async def thread(
        self, installation_id: int, repo: str, number: int, *, review: bool = False
    ) -> Thread:
        """The newest comments, oldest first: page 1 names the last page; then the last pages."""
        url = COMMENT_URLS[review]

        async def page(n: int) -> tuple[list[Any], dict[str, int]]:
            url_vars = repo_vars(repo, number=number, per_page=PER_PAGE, page=n)
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
            data = await self._call(installation_id, "GET", url, repo_vars(repo, number=number))
        except BadRequest as exc:
            if int(exc.status_code) in (404, 410):
                return None
            raise
        return IssueText(
            number=number,
            title=text(data.get("title")),
            body=text(data.get("body")),
            is_pull_request="pull_request" in data,
            updated_at=gh_time(data.get("updated_at")),
        )
