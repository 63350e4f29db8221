"""A fake of GitHub's REST API on loopback, so adapters are tested over real HTTP."""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.git_http import PushRules, git_routes
from tests.fakes.github_apps import AppsDesk, HookDelivery

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LEGACY_PERMISSION = {
    "admin": "admin",
    "maintain": "write",
    "write": "write",
    "triage": "read",
    "read": "read",
    "none": "none",
}
REACTIONS = {"+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"}
MAX_BODY = 65536


class Fail(Exception):
    """A GitHub-shaped error response raised from a handler."""

    def __init__(
        self,
        status: int,
        message: str,
        errors: list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors
        self.headers = headers or {}


def _invalid(resource: str, code: str, field: str | None = None, message: str = "") -> Fail:
    """GitHub's 422 "Validation Failed" with one error entry."""
    error = {"resource": resource, "code": code, "field": field, "message": message}
    return Fail(422, "Validation Failed", [{k: v for k, v in error.items() if v}])


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Repo:
    full_name: str
    default_branch: str = "main"
    private: bool = False
    id: int = 0


DEFAULT_APP_PERMISSIONS = {"contents": "write", "issues": "write", "pull_requests": "write"}


@dataclass
class Installation:
    id: int
    account: str
    repos: list[str] = field(default_factory=list)
    account_type: str = "User"  # or "Organization"
    permissions: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_APP_PERMISSIONS))


def _stamp(moment: datetime) -> str:
    """GitHub's timestamp format: UTC, whole seconds, Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Comment:
    id: int
    repo: str
    issue_number: int
    body: str
    user: str
    created_at: datetime = field(default_factory=_now)
    updated_at: datetime | None = None  # set by an edit
    by_app: bool = False  # posted through the API with this app's installation token
    path: str | None = None  # review comments: the file and line they are on
    line: int | None = None


@dataclass
class Issue:
    repo: str
    number: int
    title: str = ""
    body: str = ""
    is_pr: bool = False
    updated_at: datetime = field(default_factory=_now)


@dataclass
class Pull:
    repo: str
    number: int
    head: str
    base: str
    title: str
    body: str
    state: str = "open"
    merged: bool = False
    draft: bool = False


@dataclass
class LoggedRequest:
    method: str
    path: str
    auth: str  # 'jwt', 'token', 'basic', 'none'
    query: str = ""
    at: float = field(default_factory=time.monotonic)  # when it arrived


@dataclass
class _Failure:
    path: str
    method: str | None
    times: int
    status: int
    headers: dict[str, str]
    message: str


class FakeGitHub:
    """In-memory GitHub: seed it, run it, point real clients at it, inspect what they did."""

    def __init__(
        self, git_root: Path | None = None, *, prefix: str = "", app_id: int = 4242
    ) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        self._public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.app_id, self.app_slug = app_id, "ghapp-test"
        self.bot_login = f"{self.app_slug}[bot]"
        self.git_root, self.prefix = git_root, prefix.rstrip("/")
        self.html_base = "https://github.com"
        self.token_lifetime_s = 3600.0
        self.repos: dict[str, Repo] = {}
        self.installations: dict[int, Installation] = {}
        self.permissions: dict[tuple[str, str], str] = {}
        self.missing_users: set[str] = set()
        self.issues: dict[tuple[str, int], Issue] = {}
        self.comments: dict[int, Comment] = {}
        self.review_comments: dict[int, Comment] = {}
        self.reactions: list[tuple[str, str]] = []
        self.comment_edits: list[tuple[int, str]] = []  # (comment id, new body), in order
        self.pulls: dict[tuple[str, int], Pull] = {}
        self.drafts_supported = True  # False: a private repository on GitHub Free
        self.check_runs: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (repo, sha)
        self.job_logs: dict[int, str] = {}  # Actions job id (= its check run's id) -> log
        self.tokens: dict[str, tuple[int, float]] = {}  # token -> (installation, expiry)
        self.log: list[LoggedRequest] = []
        self.requests = 0
        self.token_mints = 0
        self._failures: list[_Failure] = []
        self.push_rules = PushRules()  # what a push may not do (workflows, protection, size)
        self.outage: int | None = None  # a status (502, 503) every request gets while set
        self._ids = itertools.count(1001)
        self._runner: web.AppRunner | None = None
        self.root_url = ""
        # App webhook deliveries log and manifest registrations (tests/fakes/github_apps.py).
        self.apps = AppsDesk(self._check_jwt, lambda: self.root_url)

    # -- seeding and inspection ----------------------------------------------------------
    def add_installation(self, installation_id: int, account: str) -> Installation:
        return self.installations.setdefault(
            installation_id, Installation(installation_id, account)
        )

    def add_repo(
        self,
        full_name: str,
        *,
        installation_id: int | None = 1,
        default_branch: str = "main",
        private: bool = False,
    ) -> Repo:
        repo = Repo(full_name, default_branch, private, next(self._ids))
        self.repos[full_name] = repo
        if installation_id is not None:
            inst = self.add_installation(installation_id, full_name.split("/")[0])
            if full_name not in inst.repos:
                inst.repos.append(full_name)
        return repo

    def set_permission(self, repo: str, user: str, role: str) -> None:
        self.permissions[(repo, user.lower())] = role

    def add_issue(self, repo: str, title: str = "", body: str = "") -> int:
        number = self._next_number(repo)
        self.issues[(repo, number)] = Issue(repo, number, title, body)
        return number

    def add_comment(
        self,
        repo: str,
        number: int,
        body: str,
        user: str = "octocat",
        *,
        at: datetime | None = None,
        by_app: bool = False,
    ) -> int:
        """A comment by `user`, created `at` (now); it bumps its issue's updated_at."""
        cid = next(self._ids)
        comment = Comment(cid, repo, number, body, user, at or _now(), by_app=by_app)
        self.comments[cid] = comment
        if (issue := self.issues.get((repo, number))) is not None:
            issue.updated_at = max(issue.updated_at, comment.created_at)
        return cid

    def add_review_comment(
        self,
        repo: str,
        pr_number: int,
        body: str,
        user: str = "octocat",
        *,
        path: str = "README.md",
        line: int | None = 1,
        at: datetime | None = None,
    ) -> int:
        cid = next(self._ids)
        self.review_comments[cid] = Comment(
            cid, repo, pr_number, body, user, at or _now(), path=path, line=line
        )
        return cid

    def edit_comment_as_user(self, cid: int, body: str, at: datetime | None = None) -> None:
        """A person edits their comment (or review comment) on GitHub's web page."""
        comment = self.comments.get(cid) or self.review_comments[cid]
        comment.body, comment.updated_at = body, at or _now()

    def edit_issue(self, repo: str, number: int, body: str, at: datetime | None = None) -> None:
        issue = self.issues[(repo, number)]
        issue.body, issue.updated_at = body, at or _now()

    def comments_on(self, repo: str, number: int) -> list[Comment]:
        return [c for c in self.comments.values() if (c.repo, c.issue_number) == (repo, number)]

    def revoke_all_tokens(self) -> None:
        self.tokens.clear()

    def expire_token(self, token: str) -> None:
        if token in self.tokens:
            self.tokens[token] = (self.tokens[token][0], time.time() - 1)

    def live_tokens(self) -> list[str]:
        now = time.time()
        return [t for t, (_, exp) in self.tokens.items() if exp > now]

    def token_allows(self, token: str, repo: str) -> bool:
        """Whether a live installation token reaches this repository (git auth uses it)."""
        entry = self.tokens.get(token)
        if entry is None or entry[1] <= time.time():
            return False
        inst = self.installations.get(entry[0])
        return inst is not None and repo in inst.repos and repo in self.repos

    def fail_next(
        self,
        path: str,
        times: int = 1,
        *,
        status: int = 429,
        retry_after: float | None = 1,
        reset_in: float | None = None,
        method: str | None = None,
        message: str = "You have exceeded a secondary rate limit.",
    ) -> None:
        """Make the next `times` requests to `path` (prefix excluded) answer a rate limit."""
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["retry-after"] = f"{retry_after:g}"
        if reset_in is not None:
            headers["x-ratelimit-remaining"] = "0"
            headers["x-ratelimit-reset"] = str(int(time.time() + reset_in))
        self._failures.append(_Failure(path, method, times, status, headers, message))

    def add_hook_delivery(self, guid: str, event: str, *args: Any, **kw: Any) -> HookDelivery:
        """Seed GET /app/hook/deliveries; see AppsDesk.add_delivery for the fields."""
        return self.apps.add_delivery(guid, event, *args, **kw)

    def requests_to(self, path: str, method: str | None = None) -> list[LoggedRequest]:
        return [r for r in self.log if r.path == path and method in (None, r.method)]

    @property
    def base_url(self) -> str:
        return self.root_url + self.prefix

    def clone_url(self, repo: str) -> str:
        """Git lives at the host root, as on GHE where the API sits under /api/v3."""
        return f"{self.root_url}/{repo}.git"

    # -- server --------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application(middlewares=[self._middleware])
        p = self.prefix
        r = "/repos/{owner}/{repo}"
        app.add_routes(
            [
                web.get(p + "/app", self._get_app),
                web.get(p + "/app/installations", self._list_installations),
                web.get(p + "/app/installations/{id:\\d+}", self._get_installation),
                web.post(p + "/orgs/{org}/repos", self._create_org_repo),
                web.post(p + "/app/installations/{id}/access_tokens", self._mint),
                web.get(p + "/installation/repositories", self._installation_repos),
                web.get(p + r, self._get_repo),
                web.get(p + r + "/collaborators/{user}/permission", self._permission),
                web.get(p + r + "/issues/{number:\\d+}", self._get_issue),
                web.get(p + r + "/issues/{number:\\d+}/comments", self._list_comments),
                web.post(p + r + "/issues/{number:\\d+}/comments", self._create_comment),
                web.patch(p + r + "/issues/comments/{id:\\d+}", self._edit_comment),
                web.post(p + r + "/issues/{number:\\d+}/reactions", self._react_issue),
                web.post(p + r + "/issues/comments/{id:\\d+}/reactions", self._react_comment),
                web.post(p + r + "/pulls/comments/{id:\\d+}/reactions", self._react_review),
                web.get(p + r + "/pulls/{number:\\d+}/comments", self._list_review_comments),
                web.get(p + r + "/pulls", self._list_pulls),
                web.post(p + r + "/pulls", self._create_pull),
                web.get(p + r + "/pulls/{number:\\d+}", self._get_pull),
                web.patch(p + r + "/pulls/{number:\\d+}", self._update_pull),
                web.get(p + r + "/commits/{sha}/check-runs", self._list_check_runs),
                web.get(p + r + "/commits/{sha}", self._get_commit),
                web.get(p + r + "/actions/jobs/{id:\\d+}/logs", self._job_logs),
                web.get("/_blobs/job-logs/{id:\\d+}", self._job_log_blob),
            ]
        )
        app.add_routes(self.apps.routes(p))
        if self.git_root is not None:
            app.add_routes(git_routes(self.git_root, self.token_allows, self.push_rules))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.root_url = f"http://{host}:{port}"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        api = path.startswith(self.prefix + "/") and ".git/" not in path
        rel = path[len(self.prefix) :] if api else path
        self.requests += 1
        self.log.append(
            LoggedRequest(request.method, rel, _auth_kind(request), request.query_string)
        )
        if self.outage is not None:  # GitHub down: its edge answers HTML, API and git alike
            text = "<html>Unicorn! GitHub is down</html>"
            return web.Response(status=self.outage, text=text, content_type="text/html")
        try:
            failure = self._take_failure(request.method, rel)
            if failure is not None:
                raise Fail(failure.status, failure.message, headers=failure.headers)
            response = await handler(request)
        except json.JSONDecodeError:
            response = web.json_response({"message": "Problems parsing JSON"}, status=400)
        except web.HTTPException as http_exc:
            if not api or http_exc.status < 400:
                raise
            response = web.json_response({"message": http_exc.reason}, status=http_exc.status)
        except Fail as exc:
            payload: dict[str, Any] = {"message": exc.message}
            if exc.errors is not None:
                payload["errors"] = exc.errors
            payload["documentation_url"] = "https://docs.github.com/rest"
            response = web.json_response(payload, status=exc.status, headers=exc.headers)
        if api and not response.prepared and "x-ratelimit-remaining" not in response.headers:
            response.headers["x-ratelimit-limit"] = "5000"
            response.headers["x-ratelimit-remaining"] = str(max(1, 5000 - self.requests))
            response.headers["x-ratelimit-reset"] = str(int(time.time()) + 3600)
            response.headers["x-ratelimit-resource"] = "core"
        return response

    def _take_failure(self, method: str, path: str) -> _Failure | None:
        for failure in self._failures:
            if failure.path == path and failure.method in (None, method) and failure.times > 0:
                failure.times -= 1
                return failure
        return None

    # -- auth ----------------------------------------------------------------------------
    def _check_jwt(self, request: web.Request) -> str:
        """Verify the app JWT; returns its issuer (this app's id or a manifest-created one)."""
        kind, _, value = request.headers.get("authorization", "").partition(" ")
        if kind.lower() != "bearer" or value.count(".") != 2:
            raise Fail(401, "A JSON web token could not be decoded")
        try:
            issuer = str(jwt.decode(value, options={"verify_signature": False}).get("iss"))
        except jwt.PyJWTError:
            raise Fail(401, "A JSON web token could not be decoded") from None
        key = self._public_pem if issuer == str(self.app_id) else self.apps.public_key(issuer)
        if key is None:
            raise Fail(401, "A JSON web token could not be decoded")
        try:
            claims = jwt.decode(
                value,
                key,
                algorithms=["RS256"],
                options={"require": ["exp", "iat", "iss"], "verify_iss": False},
            )
        except jwt.ExpiredSignatureError:
            raise Fail(
                401,
                "'Expiration time' claim ('exp') must be a numeric value "
                "representing the future time at which the assertion expires",
            ) from None
        except jwt.PyJWTError:
            raise Fail(401, "A JSON web token could not be decoded") from None
        if int(claims["exp"]) - int(claims["iat"]) > 660 or claims["exp"] > time.time() + 660:
            raise Fail(401, "'Expiration time' claim ('exp') is too far in the future")
        return issuer

    def _installation_for(self, request: web.Request) -> Installation:
        kind, _, value = request.headers.get("authorization", "").partition(" ")
        if kind.lower() not in ("token", "bearer"):
            raise Fail(401, "Requires authentication")
        entry = self.tokens.get(value)
        if entry is None or entry[1] <= time.time():
            raise Fail(401, "Bad credentials")
        inst = self.installations.get(entry[0])
        if inst is None:
            raise Fail(401, "Bad credentials")
        return inst

    def _repo(self, request: web.Request) -> str:
        """Authenticate with a token and resolve the repo; invisible repos are 404s."""
        inst = self._installation_for(request)
        name = f"{request.match_info['owner']}/{request.match_info['repo']}"
        if name not in self.repos or name not in inst.repos:
            raise Fail(404, "Not Found")
        return name

    # -- app endpoints -------------------------------------------------------------------
    async def _get_app(self, request: web.Request) -> web.Response:
        created = self.apps.app_json(self._check_jwt(request))
        if created is not None:
            return web.json_response(created)
        return web.json_response(
            {
                "id": self.app_id,
                "slug": self.app_slug,
                "name": self.app_slug,
                "owner": {"login": "app-owner", "type": "User"},
                "html_url": f"{self.html_base}/apps/{self.app_slug}",
            }
        )

    async def _get_installation(self, request: web.Request) -> web.Response:
        self._check_jwt(request)
        inst = self.installations.get(int(request.match_info["id"]))
        if inst is None:
            raise Fail(404, "Not Found")
        kind = "organizations" if inst.account_type == "Organization" else "settings"
        prefix = f"/organizations/{inst.account}" if kind == "organizations" else ""
        return web.json_response(
            {
                "id": inst.id,
                "account": {"login": inst.account, "type": inst.account_type},
                "permissions": inst.permissions,
                "repository_selection": "selected",
                "html_url": f"{self.html_base}{prefix}/settings/installations/{inst.id}",
            }
        )

    async def _create_org_repo(self, request: web.Request) -> web.Response:
        """POST /orgs/{org}/repos as GitHub answers an installation token."""
        inst = self._installation_for(request)
        org = request.match_info["org"]
        if inst.account.lower() != org.lower() or inst.account_type != "Organization":
            raise Fail(404, "Not Found")
        if inst.permissions.get("administration") != "write":
            raise Fail(403, "Resource not accessible by integration")
        data = await self._body(request, "Repository")
        name = str(data.get("name", ""))
        full = f"{inst.account}/{name}"
        if not name:
            raise _invalid("Repository", "missing_field", "name")
        if full in self.repos:
            raise _invalid("Repository", "custom", "name", "name already exists on this account")
        if self.git_root is not None and data.get("auto_init"):
            from tests.fakes.git_http import make_bare_repo

            make_bare_repo(self.git_root, full, {"README.md": f"# {name}\n"})
        repo = self.add_repo(full, installation_id=inst.id, private=bool(data.get("private")))
        return web.json_response(self._repo_json(repo), status=201)

    async def _list_installations(self, request: web.Request) -> web.Response:
        self._check_jwt(request)
        return web.json_response(
            [{"id": i.id, "account": {"login": i.account}} for i in self.installations.values()]
        )

    async def _mint(self, request: web.Request) -> web.Response:
        self._check_jwt(request)
        inst = self.installations.get(int(request.match_info["id"]))
        if inst is None:
            raise Fail(404, "Not Found")
        token = "ghs_" + secrets.token_urlsafe(27)
        expires = time.time() + self.token_lifetime_s
        self.tokens[token] = (inst.id, expires)
        self.token_mints += 1
        body = {"token": token, "expires_at": _iso(expires), "repository_selection": "selected"}
        return web.json_response(body, status=201)

    async def _installation_repos(self, request: web.Request) -> web.Response:
        inst = self._installation_for(request)
        repos = [self._repo_json(self.repos[n]) for n in inst.repos if n in self.repos]
        return web.json_response({"total_count": len(repos), "repositories": repos})

    # -- repository endpoints ------------------------------------------------------------
    def _repo_json(self, repo: Repo) -> dict[str, Any]:
        owner, name = repo.full_name.split("/")
        return {
            "id": repo.id,
            "name": name,
            "full_name": repo.full_name,
            "owner": {"login": owner},
            "private": repo.private,
            "default_branch": repo.default_branch,
            "html_url": f"{self.html_base}/{repo.full_name}",
            "clone_url": self.clone_url(repo.full_name),
        }

    async def _get_repo(self, request: web.Request) -> web.Response:
        return web.json_response(self._repo_json(self.repos[self._repo(request)]))

    async def _permission(self, request: web.Request) -> web.Response:
        repo, user = self._repo(request), request.match_info["user"]
        if user.lower() in self.missing_users:
            raise Fail(404, "Not Found")
        role = self.permissions.get((repo, user.lower()), "read")
        legacy = LEGACY_PERMISSION.get(role, "read")
        return web.json_response({"permission": legacy, "role_name": role, "user": {"login": user}})

    def _issue(self, repo: str, request: web.Request) -> Issue:
        issue = self.issues.get((repo, int(request.match_info["number"])))
        if issue is None:
            raise Fail(404, "Not Found")
        return issue

    async def _get_issue(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        issue = self._issue(repo, request)
        data: dict[str, Any] = {
            "number": issue.number,
            "title": issue.title,
            "body": issue.body,
            "updated_at": _stamp(issue.updated_at),
            "comments": len(self.comments_on(repo, issue.number)),
        }
        if issue.is_pr:
            data["pull_request"] = {"url": f"{self.base_url}/repos/{repo}/pulls/{issue.number}"}
        return web.json_response(data | {"state": "open"})

    def _association(self, repo: str, user: str) -> str:
        role = self.permissions.get((repo, user.lower()))
        if repo.split("/")[0].lower() == user.lower():
            return "OWNER"
        return "COLLABORATOR" if role in ("admin", "maintain", "write", "triage") else "NONE"

    def _comment_json(self, c: Comment) -> dict[str, Any]:
        bot = c.by_app or c.user.endswith("[bot]")
        app = {"id": self.app_id, "slug": self.app_slug} if c.by_app else None
        data: dict[str, Any] = {
            "id": c.id,
            "body": c.body,
            "user": {"login": c.user, "type": "Bot" if bot else "User"},
            "created_at": _stamp(c.created_at),
            "updated_at": _stamp(c.updated_at or c.created_at),
            "author_association": self._association(c.repo, c.user),
            "performed_via_github_app": app,
        }
        if c.path is None:
            data["html_url"] = (
                f"{self.html_base}/{c.repo}/issues/{c.issue_number}#issuecomment-{c.id}"
            )
            data["issue_url"] = f"{self.base_url}/repos/{c.repo}/issues/{c.issue_number}"
        else:
            data["html_url"] = f"{self.html_base}/{c.repo}/pull/{c.issue_number}#discussion_r{c.id}"
            data |= {"path": c.path, "line": c.line, "original_line": c.line, "position": 1}
        return data

    def _paginated(self, request: web.Request, items: list[Comment]) -> web.Response:
        """One page of a list as GitHub serves it: per_page (30, at most 100), Link relations."""
        try:
            per_page = min(100, max(1, int(request.query.get("per_page", "30"))))
            page = max(1, int(request.query.get("page", "1")))
        except ValueError:
            raise Fail(400, "Invalid pagination parameters") from None
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        links = []

        def url(n: int) -> str:
            return str(request.url.update_query(per_page=per_page, page=n))

        if page < last:
            links += [f'<{url(page + 1)}>; rel="next"', f'<{url(last)}>; rel="last"']
        if page > 1:
            links += [f'<{url(1)}>; rel="first"', f'<{url(min(page, last + 1) - 1)}>; rel="prev"']
        headers = {"link": ", ".join(links)} if links else {}
        return web.json_response([self._comment_json(c) for c in chunk], headers=headers)

    async def _list_comments(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        issue = self._issue(repo, request)
        found = self.comments_on(repo, issue.number)
        if since := request.query.get("since"):  # GitHub: updated at or after this time
            moment = datetime.fromisoformat(since.replace("Z", "+00:00"))
            found = [c for c in found if (c.updated_at or c.created_at) >= moment]
        return self._paginated(request, found)

    async def _list_review_comments(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        pr = self._pull(repo, request)
        found = [
            c
            for c in self.review_comments.values()
            if (c.repo, c.issue_number) == (repo, pr.number)
        ]
        return self._paginated(request, sorted(found, key=lambda c: c.id))

    async def _body(self, request: web.Request, resource: str) -> dict[str, Any]:
        data = await request.json()
        body = data.get("body")
        if isinstance(body, str) and len(body) > MAX_BODY:
            too_long = f"Body is too long (maximum is {MAX_BODY} characters)"
            raise _invalid(resource, "unprocessable", "data", too_long)
        return dict(data)

    async def _create_comment(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        issue = self._issue(repo, request)
        data = await self._body(request, "IssueComment")
        if not data.get("body"):
            raise Fail(422, 'Invalid request.\n\nNo subschema in "oneOf" matched.')
        cid = self.add_comment(repo, issue.number, data["body"], self.bot_login, by_app=True)
        return web.json_response(self._comment_json(self.comments[cid]), status=201)

    async def _edit_comment(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        comment = self.comments.get(int(request.match_info["id"]))
        if comment is None or comment.repo != repo:
            raise Fail(404, "Not Found")
        comment.body = (await self._body(request, "IssueComment"))["body"]
        comment.updated_at = _now()
        self.comment_edits.append((comment.id, comment.body))
        return web.json_response(self._comment_json(comment))

    async def _react(self, request: web.Request, subject: str) -> web.Response:
        content = (await request.json()).get("content")
        if content not in REACTIONS:
            raise _invalid("Reaction", "invalid", "content")
        status = 200 if (subject, content) in self.reactions else 201
        if status == 201:
            self.reactions.append((subject, content))
        body = {"id": next(self._ids), "content": content, "user": {"login": self.bot_login}}
        return web.json_response(body, status=status)

    async def _react_issue(self, request: web.Request) -> web.Response:
        issue = self._issue(self._repo(request), request)
        return await self._react(request, f"issue:{issue.repo}#{issue.number}")

    async def _react_comment(self, request: web.Request) -> web.Response:
        repo, cid = self._repo(request), int(request.match_info["id"])
        if cid not in self.comments or self.comments[cid].repo != repo:
            raise Fail(404, "Not Found")
        return await self._react(request, f"comment:{cid}")

    async def _react_review(self, request: web.Request) -> web.Response:
        repo, cid = self._repo(request), int(request.match_info["id"])
        if cid not in self.review_comments or self.review_comments[cid].repo != repo:
            raise Fail(404, "Not Found")
        return await self._react(request, f"review_comment:{cid}")

    # -- pull requests -------------------------------------------------------------------
    def _next_number(self, repo: str) -> int:
        return 1 + max((n for (r, n) in self.issues if r == repo), default=0)

    def _pull_json(self, pr: Pull, head_sha: str = "") -> dict[str, Any]:
        owner = pr.repo.split("/")[0]

        def ref(name: str) -> dict[str, Any]:
            data = {"ref": name, "label": f"{owner}:{name}", "repo": {"full_name": pr.repo}}
            return data | ({"sha": head_sha} if head_sha and name == pr.head else {})

        return {
            "number": pr.number,
            "state": pr.state,
            "title": pr.title,
            "body": pr.body,
            "html_url": f"{self.html_base}/{pr.repo}/pull/{pr.number}",
            "url": f"{self.base_url}/repos/{pr.repo}/pulls/{pr.number}",
            "head": ref(pr.head),
            "base": ref(pr.base),
            "merged": pr.merged,
            "draft": pr.draft,
            "user": {"login": self.bot_login, "type": "Bot"},
        }

    async def _list_pulls(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        state, head = request.query.get("state", "open"), request.query.get("head")
        base = request.query.get("base")
        owner = repo.split("/")[0]
        found = [
            self._pull_json(p)
            for (r, _), p in sorted(self.pulls.items(), key=lambda kv: -kv[0][1])
            if r == repo
            and state in ("all", p.state)
            and (head is None or head == f"{owner}:{p.head}")
            and base in (None, p.base)
        ]
        return web.json_response(found)

    async def _git(self, repo: str, *args: str) -> tuple[int, str]:
        assert self.git_root is not None
        proc = await asyncio.create_subprocess_exec(
            "git",
            "--git-dir",
            str(self.git_root / f"{repo}.git"),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode().strip()

    async def _create_pull(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        data = await self._body(request, "PullRequest")
        head = str(data.get("head", "")).split(":", 1)[-1]
        base = str(data.get("base", ""))
        for field_name, value in (("head", head), ("base", base)):
            if not value:
                raise _invalid("PullRequest", "missing_field", field_name)
        if self.git_root is not None:
            for field_name, value in (("head", head), ("base", base)):
                rc, _ = await self._git(repo, "rev-parse", "--verify", "-q", f"refs/heads/{value}")
                if rc:
                    raise _invalid("PullRequest", "invalid", field_name)
            _, count = await self._git(repo, "rev-list", "--count", f"{base}..{head}")
            if count == "0":
                raise _invalid(
                    "PullRequest", "custom", None, f"No commits between {base} and {head}"
                )
        for p in self.pulls.values():
            if p.repo == repo and p.state == "open" and (p.head, p.base) == (head, base):
                exists = f"A pull request already exists for {repo.split('/')[0]}:{head}."
                raise _invalid("PullRequest", "custom", None, exists)
        if data.get("draft") and not self.drafts_supported:
            refused = "Draft pull requests are not supported in this repository."
            raise _invalid("PullRequest", "custom", None, refused)
        number = self._next_number(repo)
        title, body = str(data.get("title", "")), str(data.get("body") or "")
        self.issues[(repo, number)] = Issue(repo, number, title, body, is_pr=True)
        pr = Pull(repo, number, head, base, title, body, draft=bool(data.get("draft")))
        self.pulls[(repo, number)] = pr
        return web.json_response(self._pull_json(pr), status=201)

    def _pull(self, repo: str, request: web.Request) -> Pull:
        pr = self.pulls.get((repo, int(request.match_info["number"])))
        if pr is None:
            raise Fail(404, "Not Found")
        return pr

    async def _get_pull(self, request: web.Request) -> web.Response:
        pr = self._pull(self._repo(request), request)
        sha = ""
        if self.git_root is not None:
            sha = (await self._git(pr.repo, "rev-parse", f"refs/heads/{pr.head}"))[1]
        return web.json_response(self._pull_json(pr, sha))

    # -- checks and Actions ------------------------------------------------------------------
    def add_check_run(
        self,
        repo: str,
        sha: str,
        name: str,
        conclusion: str | None = "failure",
        *,
        status: str = "completed",
        summary: str = "",
        app: str = "github-actions",
        log: str | None = None,
    ) -> int:
        """A check run on a commit, as an App (GitHub Actions by default) reports it."""
        run_id = next(self._ids)
        self.check_runs.setdefault((repo, sha), []).append(
            {
                "id": run_id,
                "name": name,
                "head_sha": sha,
                "status": status,
                "conclusion": conclusion if status == "completed" else None,
                "output": {"title": f"{name} {conclusion}", "summary": summary, "text": None},
                "app": {"slug": app, "name": app},
                "details_url": f"{self.html_base}/{repo}/actions/runs/1/job/{run_id}",
            }
        )
        if log is not None:
            self.job_logs[run_id] = log
        return run_id

    async def _list_check_runs(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        runs = self.check_runs.get((repo, request.match_info["sha"]), [])
        if request.query.get("filter", "latest") == "latest":
            latest: dict[str, dict[str, Any]] = {}
            for run in runs:
                latest[run["name"]] = run
            runs = list(latest.values())
        per_page = min(100, int(request.query.get("per_page", "30")))
        page = int(request.query.get("page", "1"))
        chunk = runs[(page - 1) * per_page : page * per_page]
        return web.json_response({"total_count": len(runs), "check_runs": chunk})

    async def _get_commit(self, request: web.Request) -> web.Response:
        repo, sha = self._repo(request), request.match_info["sha"]
        if self.git_root is None:
            raise Fail(404, "Not Found")
        fmt = "%H%x00%an%x00%ae%x00%cn%x00%ce"
        rc, out = await self._git(repo, "show", "-s", f"--format={fmt}", sha)
        if rc or not out:
            raise Fail(422, f"No commit found for SHA: {sha}")
        full, an, ae, cn, ce = out.split("\0")
        return web.json_response(
            {
                "sha": full,
                "commit": {
                    "author": {"name": an, "email": ae},
                    "committer": {"name": cn, "email": ce},
                },
            }
        )

    async def _job_logs(self, request: web.Request) -> web.Response:
        """302 to a short-lived, unauthenticated blob URL, as GitHub answers."""
        self._repo(request)
        job = int(request.match_info["id"])
        if job not in self.job_logs:
            raise Fail(404, "Not Found")
        location = f"{self.root_url}/_blobs/job-logs/{job}?sig={secrets.token_hex(8)}"
        raise web.HTTPFound(location)

    async def _job_log_blob(self, request: web.Request) -> web.Response:
        log = self.job_logs.get(int(request.match_info["id"]))
        if log is None:
            raise web.HTTPNotFound()
        return web.Response(text=log, content_type="text/plain")

    def check_event(
        self, event: str, repo: str, sha: str, branch: str, pr_number: int
    ) -> dict[str, Any]:
        """A check_suite or check_run `completed` delivery, shaped as GitHub documents it."""
        owner = repo.split("/")[0]
        pr = {
            "number": pr_number,
            "url": f"{self.base_url}/repos/{repo}/pulls/{pr_number}",
            "head": {"ref": branch, "sha": sha, "repo": {"name": repo.split("/")[1]}},
            "base": {"ref": self.repos[repo].default_branch, "sha": "0" * 40},
        }
        runs = self.check_runs.get((repo, sha), [])
        failed = any(r["conclusion"] in ("failure", "timed_out") for r in runs)
        suite = {
            "id": next(self._ids),
            "head_branch": branch,
            "head_sha": sha,
            "status": "completed",
            "conclusion": "failure" if failed else "success",
            "app": {"slug": "github-actions"},
            "pull_requests": [pr],
        }
        body: dict[str, Any] = {
            "action": "completed",
            "repository": self._repo_json(self.repos[repo]),
            "sender": {"login": "github-actions[bot]", "type": "Bot"},
            "installation": {"id": next(iter(self.installations)), "node_id": "MDIz"},
        }
        body["repository"]["owner"] = {"login": owner}
        if event == "check_suite":
            return body | {"check_suite": suite}
        run = dict(runs[-1]) if runs else {"id": 1, "name": "ci", "status": "completed"}
        return body | {"check_run": run | {"pull_requests": [pr], "check_suite": suite}}

    async def _update_pull(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        pr = self._pull(repo, request)
        data = await self._body(request, "PullRequest")
        for key in ("title", "body", "state", "base"):
            if key in data:
                setattr(pr, key, data[key])
        return web.json_response(self._pull_json(pr))


def _auth_kind(request: web.Request) -> str:
    kind, _, value = request.headers.get("authorization", "").partition(" ")
    kind = kind.lower()
    if kind == "basic":
        return "basic"
    if kind == "bearer" and value.count(".") == 2:
        return "jwt"
    return "token" if kind in ("token", "bearer") else "none"
