"""The checks that ask the far ends, at no cost: GitHub (the app and its installations)
and the model API (GET /v1/models with the operator's credential)."""

from __future__ import annotations

import aiohttp
from gidgethub import BadRequest, GitHubException

from ghapp.config import Settings
from ghapp.github.auth import AppAuth

Check = tuple[str, bool, str]
ANTHROPIC_URL = "https://api.anthropic.com"
TIMEOUT = aiohttp.ClientTimeout(total=20)


async def _github(session: aiohttp.ClientSession, settings: Settings) -> list[Check]:
    if settings.app_id is None or settings.private_key is None:
        return [("GitHub App", False, "APP_ID is not set: register the app (README) first")]
    auth = AppAuth(session, settings.app_id, settings.private_key, settings.github_api_url)
    try:
        app = await auth.app_getitem("/app")
        installs = await auth.app_getitem("/app/installations")
    except BadRequest as exc:
        why = "APP_ID and the private key do not match" if exc.status_code == 401 else str(exc)
        return [("GitHub App", False, f"GitHub refused the app's JWT ({why})")]
    except (GitHubException, aiohttp.ClientError, TimeoutError, OSError) as exc:
        where = settings.github_api_url
        return [("GitHub App", False, f"cannot reach {where} ({type(exc).__name__}: {exc})")]
    results: list[Check] = [("GitHub App", True, f"{app.get('slug', '?')} authenticates")]
    if not installs:
        results.append(("installations", False, "none: install the app on a repository"))
    else:
        names = ", ".join(str(i.get("account", {}).get("login", "?")) for i in installs[:5])
        results.append(("installations", True, f"{len(installs)}: {names}"))
    return results


async def _model(session: aiohttp.ClientSession, settings: Settings) -> Check:
    env = settings.anthropic_env
    headers = {"anthropic-version": "2023-06-01"}
    if key := env.get("ANTHROPIC_API_KEY"):
        headers["x-api-key"], name = key, "ANTHROPIC_API_KEY"
    elif token := env.get("ANTHROPIC_AUTH_TOKEN"):
        headers["authorization"], name = f"Bearer {token}", "ANTHROPIC_AUTH_TOKEN"
    else:
        return ("model credential", False, "ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN) is not set")
    base = (env.get("ANTHROPIC_BASE_URL") or ANTHROPIC_URL).rstrip("/")
    try:
        async with session.get(f"{base}/v1/models", headers=headers, timeout=TIMEOUT) as resp:
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return ("model credential", False, f"cannot reach {base} ({type(exc).__name__})")
    if status in (401, 403):
        return ("model credential", False, f"{name} is refused by {base} (HTTP {status})")
    if status != 200:
        return ("model credential", False, f"{base}/v1/models answered HTTP {status}")
    return ("model credential", True, f"{name} accepted by {base} (a free request)")


async def remote_checks(settings: Settings) -> list[Check]:
    """GitHub and the model API, asked once each."""
    async with aiohttp.ClientSession() as session:
        return [*await _github(session, settings), await _model(session, settings)]
