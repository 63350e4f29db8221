"""HTML of setup mode: the register button, the error pages; everything user-given is escaped."""

from __future__ import annotations

import ipaddress
import json
from html import escape
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:44rem;margin:3rem auto;padding:0 1rem;"
    "line-height:1.5;color:#1f2328}code{background:#f6f8fa;padding:0 .25rem}"
    ".warn{background:#fff8c5;border:1px solid #d4a72c;padding:.5rem 1rem}"
    ".error{background:#ffebe9;border:1px solid #ff8182;padding:.5rem 1rem}"
    "button{font-size:1.1rem;padding:.5rem 1.25rem;background:#1f883d;color:#fff;border:0;"
    "border-radius:6px;cursor:pointer}"
)


def _html(
    status: int, title: str, body: str, headers: dict[str, str] | None = None
) -> web.Response:
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )
    return web.Response(
        status=status,
        text=page,
        content_type="text/html",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def only_local(url: str) -> bool:
    """Whether GitHub cannot reach this URL: localhost, loopback, private or link-local."""
    host = (urlsplit(url).hostname or "").lower()
    if host in ("localhost", "") or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "." not in host  # a bare machine name
    return ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified


def register_page(
    manifest: dict[str, Any], target: str, account: str, env_path: str, warnings: list[str]
) -> web.Response:
    """The page whose one button POSTs the manifest to GitHub's 'new GitHub App' form."""
    hook = str(manifest.get("hook_attributes", {}).get("url", ""))
    events = ", ".join(str(e) for e in manifest.get("default_events") or []) or "none"
    perms = manifest.get("default_permissions") or {}
    perm_text = ", ".join(f"{k}: {v}" for k, v in perms.items()) or "none"
    warn = "".join(f'<p class="warn">{escape(n)}</p>' for n in warnings)
    body = (
        "<p>ghapp is running in <strong>setup mode</strong>: no GitHub App is configured "
        "yet (<code>APP_ID</code> is not set), so it accepts no webhooks.</p>"
        f"<p>The button below registers a GitHub App named <strong>{escape(str(manifest['name']))}"
        f"</strong> for {escape(account)} on GitHub (you can change the name there). GitHub "
        "then sends you back here; ghapp writes <code>APP_ID</code>, "
        f"<code>WEBHOOK_SECRET</code> and the private key into <code>{escape(env_path)}</code>, "
        "starts serving at once (no restart) and sends you on to install the app on your "
        "repositories.</p>"
        f"<ul><li>Webhook URL: <code>{escape(hook)}</code></li>"
        f"<li>Events: {escape(events)}</li><li>Permissions: {escape(perm_text)}</li></ul>"
        f"{warn}"
        f'<form action="{escape(target)}" method="post">'
        f'<input type="hidden" name="manifest" value="{escape(json.dumps(manifest))}">'
        '<button type="submit" id="register">Register the GitHub App</button></form>'
    )
    return _html(200, "Set up ghapp", body)


def error_page(status: int, title: str, message: str, start_again: bool = True) -> web.Response:
    """A failed step, what it means, and the way back to the start."""
    again = '<p><a href="/">Start again</a></p>' if start_again else ""
    return _html(status, title, f'<p class="error">{escape(message)}</p>{again}')


def needs_token() -> web.Response:
    """403 without the token: say where the link is, issue nothing."""
    message = (
        "This set-up page only answers the browser that opened the link ghapp printed when "
        'it started. Find the line that says "setup mode" in ghapp\'s output (for example '
        "journalctl -u ghapp, or the terminal it runs in) and open the address it gives, "
        "which ends in /?token=…"
    )
    return _html(403, "Open the link from ghapp's log", f'<p class="error">{escape(message)}</p>')


def wrong_host(host: str) -> web.Response:
    """403 for a Host that is not ours: a rebound DNS name must not reach the page."""
    message = (
        f"ghapp's set-up page does not answer to the host name {host!r}. Open it at localhost, "
        "at the machine's IP address or name, or set PUBLIC_URL to the address you use."
    )
    return _html(403, "Unknown host name", f'<p class="error">{escape(message)}</p>')


def redirect(location: str) -> web.Response:
    """A 302 that also works for a human if the browser does not follow it."""
    body = f'<p>Continue to <a href="{escape(location)}">{escape(location)}</a>.</p>'
    return _html(302, "GitHub App registered", body, {"Location": location})
