"""GitHub App authentication: app JWTs and cached, single-flight installation tokens."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import jwt
from cachetools import TLRUCache
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from gidgethub import GitHubBroken, HTTPException, RateLimitExceeded
from gidgethub import aiohttp as gh_aiohttp

from ghapp.endpoints import GITHUB_API_URL

log = logging.getLogger(__name__)

REQUESTER = "ghapp"
# The Link header of the last response in this task (gidgethub keeps only rel="next").
_LINK: ContextVar[str | None] = ContextVar("ghapp_link", default=None)
_LINK_PART = re.compile(r'<([^>]*)>\s*;\s*rel="?([\w ]+)"?')
_PAGE = re.compile(r"[?&]page=(\d+)")


def link_pages(header: str | None) -> dict[str, int]:
    """Page numbers of a Link header's relations (first, prev, next, last)."""
    pages: dict[str, int] = {}
    for url, rels in _LINK_PART.findall(header or ""):
        page = _PAGE.search(url)
        if page is not None:
            for rel in rels.split():
                pages[rel] = int(page.group(1))
    return pages


def retry_delay(exc: HTTPException, attempt: int) -> float | None:
    """Seconds to wait before retrying a rate-limited request; None if it is no rate limit."""
    status = int(exc.status_code)
    if status not in (403, 429):
        return None
    headers = exc.headers
    retry_after = headers.get("retry-after")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            pass
    if headers.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in headers:
        try:
            return max(1.0, float(headers["x-ratelimit-reset"]) - time.time())
        except ValueError:
            pass
    text = " ".join(str(a) for a in exc.args).lower()
    if status == 429 or "rate limit" in text:
        # GitHub's advice when it says nothing: wait a minute, then back off exponentially.
        return 60.0 * float(2 ** (attempt - 1))
    return None  # a 403 that is a real permission error


def github_unavailable(exc: BaseException) -> bool:
    """GitHub is down, unreachable or rate-limiting: the same call may work later."""
    if isinstance(exc, GitHubBroken | RateLimitExceeded | aiohttp.ClientError | OSError):
        return True  # 5xx, an exhausted quota, no connection (TimeoutError is an OSError)
    return isinstance(exc, HTTPException) and retry_delay(exc, 1) is not None


class GitHubClient(gh_aiohttp.GitHubAPI):
    """gidgethub over aiohttp that waits out 403/429 rate limits a bounded number of times."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        requester: str = REQUESTER,
        *,
        base_url: str = GITHUB_API_URL,
        max_retries: int = 3,
        max_wait_s: float = 300.0,
    ) -> None:
        super().__init__(session, requester, base_url=base_url)
        self.max_retries = max_retries
        self.max_wait_s = max_wait_s

    async def handle_rate_limit_error(
        self, *, method: str, url: str, exception: HTTPException, attempt: int
    ) -> bool:
        """Retry after GitHub's advised wait, unless the wait is unreasonable."""
        delay = retry_delay(exception, attempt)
        if delay is None or attempt > self.max_retries or delay > self.max_wait_s:
            return False
        log.warning(
            "GitHub rate limit (%s) on %s %s; retrying in %.1fs",
            int(exception.status_code),
            method,
            url,
            delay,
        )
        await self.sleep(delay)
        return True

    async def _request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> tuple[int, Mapping[str, str], bytes]:
        status, response_headers, data = await super()._request(method, url, headers, body)
        _LINK.set(response_headers.get("link"))
        return status, response_headers, data

    async def getpage(
        self, url: str, url_vars: dict[str, Any], *, oauth_token: str
    ) -> tuple[Any, dict[str, int]]:
        """One page of a list and the page numbers its Link header names, such as "last"."""
        reset = _LINK.set(None)
        try:
            data = await self.getitem(url, url_vars, oauth_token=oauth_token)
            return data, link_pages(_LINK.get())
        finally:
            _LINK.reset(reset)


@dataclass(frozen=True)
class _Token:
    value: str = field(repr=False)
    issued: float
    expires: float


class AppAuth:
    """Mints installation tokens with the app's key and reuses them until shortly before expiry."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        app_id: str | int,
        private_key: str,
        base_url: str = GITHUB_API_URL,
        *,
        refresh_margin_s: float = 300.0,
        client: GitHubClient | None = None,
        max_installations: int = 1024,
    ) -> None:
        self.app_id = str(app_id)  # PyJWT refuses an integer iss
        # Parsed once: loading the PEM checks the RSA key, about 0.1 s of CPU that would
        # otherwise stall the event loop (and every webhook waiting on it) at each app JWT.
        self._key = load_pem_private_key(private_key.encode(), password=None)
        self.gh = client or GitHubClient(session, base_url=base_url)
        self.refresh_margin_s = refresh_margin_s
        self._tokens: TLRUCache[int, _Token] = TLRUCache(
            maxsize=max_installations, ttu=self._refresh_at, timer=time.time
        )
        self._locks: dict[int, asyncio.Lock] = {}

    def _refresh_at(self, _key: int, token: _Token, _now: float) -> float:
        """Refresh `margin` before expiry, but never in the first half of a token's life."""
        halfway = token.issued + (token.expires - token.issued) / 2
        return max(token.expires - self.refresh_margin_s, halfway)

    def app_jwt(self) -> str:
        """A fresh app JWT, valid 10 minutes, its iat backdated 60 s for clock drift."""
        issued = int(time.time()) - 60
        claims = {"iat": issued, "exp": issued + 600, "iss": self.app_id}
        return jwt.encode(claims, self._key, algorithm="RS256")  # type: ignore[arg-type]

    async def installation_token(self, installation_id: int) -> str:
        """A live token for the installation; concurrent callers share one mint."""
        cached = self._tokens.get(installation_id)
        if cached is not None:
            return cached.value
        lock = self._locks.setdefault(installation_id, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(installation_id)
            if cached is not None:
                return cached.value
            token = await self._mint(installation_id)
            self._tokens[installation_id] = token
            return token.value

    async def _mint(self, installation_id: int) -> _Token:
        issued = time.time()
        data = await self.gh.post(
            f"/app/installations/{installation_id}/access_tokens", data=b"", jwt=self.app_jwt()
        )
        expires = datetime.fromisoformat(str(data["expires_at"]).replace("Z", "+00:00"))
        log.info("minted token for installation %s, expires %s", installation_id, expires)
        return _Token(str(data["token"]), issued, expires.timestamp())

    def invalidate(self, installation_id: int, token: str | None = None) -> None:
        """Forget a refused token; with `token`, only if no newer one replaced it."""
        cached = self._tokens.get(installation_id)
        if cached is not None and (token is None or cached.value == token):
            self._tokens.pop(installation_id, None)

    async def app_getitem(self, url: str, url_vars: dict[str, str] | None = None) -> Any:
        """GET an app-level endpoint (e.g. /app, /app/hook/deliveries) with the app JWT."""
        return await self.gh.getitem(url, url_vars or {}, jwt=self.app_jwt())
