"""The GitHub App manifest: app.yml (a small YAML subset) merged over ghapp's defaults."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

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
    ],
    "default_permissions": {
        "issues": "write",
        "pull_requests": "write",
        "contents": "write",
        "metadata": "read",
    },
}

_WORDS: dict[str, Any] = {
    "true": True,
    "yes": True,
    "on": True,
    "false": False,
    "no": False,
    "off": False,
    "null": None,
    "~": None,
    "": None,
}


class ManifestError(ValueError):
    """app.yml uses YAML this reader does not understand, or is not a mapping."""


def _strip_comment(text: str) -> str:
    """The line without a trailing `# comment` that sits outside quotes."""
    quote_char = ""
    for i, ch in enumerate(text):
        if quote_char:
            if ch == quote_char:
                quote_char = ""
        elif ch in "'\"":
            quote_char = ch
        elif ch == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
    return text.rstrip()


def _scalar(text: str, where: str) -> Any:
    """A plain, quoted or tiny flow scalar."""
    text = text.strip()
    if text[:1] in ("|", ">", "&", "*", "!"):
        raise ManifestError(f"{where}: block scalars, anchors and tags are not supported")
    if text.startswith('"'):
        try:
            return json.loads(text)
        except ValueError:
            raise ManifestError(f"{where}: bad double-quoted string") from None
    if text.startswith("'"):
        if len(text) < 2 or not text.endswith("'"):
            raise ManifestError(f"{where}: bad single-quoted string")
        return text[1:-1].replace("''", "'")
    if text.startswith("["):
        if not text.endswith("]"):
            raise ManifestError(f"{where}: flow lists must close on the same line")
        inner = text[1:-1].strip()
        return [_scalar(part, where) for part in inner.split(",")] if inner else []
    if text == "{}":
        return {}
    if text.startswith("{"):
        raise ManifestError(f"{where}: flow mappings are not supported; use indentation")
    if text.lower() in _WORDS:
        return _WORDS[text.lower()]
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


Line = tuple[int, str, int]  # indent, content, line number


def _block(lines: list[Line], pos: int, indent: int) -> tuple[Any, int]:
    """Parse the mapping or list whose items sit at `indent`, from lines[pos]."""
    is_list = lines[pos][1] == "-" or lines[pos][1].startswith("- ")
    result: Any = [] if is_list else {}
    while pos < len(lines) and lines[pos][0] == indent:
        _, text, number = lines[pos]
        where = f"app.yml line {number}"
        if is_list != (text == "-" or text.startswith("- ")):
            if is_list:
                break  # `key:` then `- item`s at the key's own indent: the list ends here
            raise ManifestError(f"{where}: a list item where a `key: value` belongs")
        if is_list:
            item = text[1:].strip()
            if not item or re.match(r"[^'\"]*:(\s|$)", item):
                raise ManifestError(f"{where}: only scalar list items are supported")
            result.append(_scalar(item, where))
            pos += 1
            continue
        match = re.fullmatch(r"""("[^"]*"|'[^']*'|[^:'"]+):(?:\s+(.*))?""", text)
        if match is None:
            raise ManifestError(f"{where}: expected `key: value`")
        key = str(_scalar(match.group(1), where))
        rest = match.group(2) or ""
        pos += 1
        nested = pos < len(lines) and (
            lines[pos][0] > indent
            or (lines[pos][0] == indent and (lines[pos][1] + " ").startswith("- "))
        )
        if rest == "" and nested:
            result[key], pos = _block(lines, pos, lines[pos][0])
        else:
            result[key] = _scalar(rest, where)
    if pos < len(lines) and lines[pos][0] > indent:
        raise ManifestError(f"app.yml line {lines[pos][2]}: unexpected indentation")
    return result, pos


def parse_app_yml(text: str) -> dict[str, Any]:
    """The mapping in app.yml; raises ManifestError on YAML outside the supported subset."""
    lines: list[Line] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise ManifestError(f"app.yml line {number}: indent with spaces, not tabs")
        content = _strip_comment(raw)
        if content.strip() in ("", "---"):
            continue
        lines.append((len(content) - len(content.lstrip(" ")), content.strip(), number))
    if not lines:
        return {}
    data, pos = _block(lines, 0, lines[0][0])
    if pos != len(lines):
        raise ManifestError(f"app.yml line {lines[pos][2]}: unexpected indentation")
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
