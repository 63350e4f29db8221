"""GitHub's REST API as ghapp sends it: the installation token (re-minted once after a 401),
serial writes spaced per installation, and secrets scrubbed from what is written."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from gidgethub import BadRequest

from ghapp.core.publish import Scrubber
from ghapp.github.auth import AppAuth, GitHubClient

log = logging.getLogger(__name__)
Pacer = Callable[[int], Awaitable[float]]  # installation -> seconds to wait before a write


def repo_vars(repo: str, **extra: object) -> dict[str, Any]:
    """URL variables for an `owner/name` repository, plus any others."""
    owner, _, name = repo.partition("/")
    if not owner or not name:
        raise ValueError(f"repository must be owner/name, got {repo!r}")
    return {"owner": owner, "name": name, **extra}


def gh_time(value: object) -> datetime | None:
    """A GitHub timestamp as an aware datetime; None when missing or malformed."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def text(value: object) -> str:
    """A string field, or empty when GitHub sent something else."""
    return value if isinstance(value, str) else ""


def positive(value: object) -> int | None:
    """A positive integer field (an id, a line), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


class GitHubRest:
    """Every call of the GitHub adapters goes through `_call`: relative URLs, one token
    retry after a 401, serial spaced writes."""

    def __init__(
        self,
        auth: AppAuth,
        *,
        client: GitHubClient | None = None,
        write_interval_s: float = 1.0,
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
