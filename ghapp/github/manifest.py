"""The GitHub App manifest: app.yml (YAML, loaded safely) merged over ghapp's defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

# The same app as the repository's app.yml, so a fresh directory still registers a useful app.
DEFAULTS: dict[str, Any] = {
    "name": "MissionControl",
    "description": "Turns GitHub issues into pull requests with Claude Code, on your own machine.",
    "url": "https://github.com/",
    "public": False,
    "default_events": [
        "issues",
        "issue_comment",
        "pull_request",
        "pull_request_review",
        "pull_request_review_comment",
        "installation",
        "installation_repositories",
        "check_suite",
        "check_run",
    ],
    "default_permissions": {
        "issues": "write",
        "pull_requests": "write",
        "contents": "write",
        "metadata": "read",
        "checks": "read",
        "actions": "read",
    },
}


class ManifestError(ValueError):
    """app.yml is not valid YAML, or its top level is not a mapping."""


def parse_app_yml(text: str) -> dict[str, Any]:
    """The mapping in app.yml, loaded safely as YAML 1.2 (duplicate keys refused)."""
    try:
        data = YAML(typ="safe", pure=True).load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"app.yml line {mark.line + 1}" if mark is not None else "app.yml"
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        raise ManifestError(f"{where}: {problem}") from None
    except (YAMLError, RecursionError, ValueError) as exc:
        raise ManifestError(f"app.yml: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ManifestError("app.yml: the top level must be a mapping")
    return data


def load_app_yml(path: Path) -> dict[str, Any]:
    """app.yml's mapping, or {} when the file is absent (as in Probot)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    return parse_app_yml(text)


def build_manifest(app_yml: dict[str, Any], hook_url: str, redirect_url: str) -> dict[str, Any]:
    """Probot's getManifest: app.yml over defaults; redirect_url is always ours, or setup breaks."""
    manifest: dict[str, Any] = dict(DEFAULTS)
    manifest["hook_attributes"] = {"url": hook_url, "active": True}
    manifest.update(app_yml)
    manifest["redirect_url"] = redirect_url
    return manifest


def registration_url(web_url: str, org: str | None, state: str) -> str:
    """Where the setup form POSTs: the user's or an organisation's 'new GitHub App' page."""
    base = web_url.rstrip("/")
    path = (
        f"/organizations/{quote(org, safe='')}/settings/apps/new" if org else "/settings/apps/new"
    )
    return f"{base}{path}?state={quote(state, safe='')}"
