"""Drive ghapp's setup page over plain HTTP, as a browser without JavaScript would."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

import aiohttp


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method: str | None = None
        self.fields: dict[str, str] = {}
        self.buttons: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None:
            self.action, self.method = a.get("action", ""), a.get("method", "get").lower()
        elif tag == "input" and a.get("type") == "hidden":
            self.fields[a.get("name", "")] = a.get("value", "")
        elif tag == "button":
            self.buttons.append(a.get("id", ""))


def setup_form(html: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The form's action, its hidden fields, and the decoded manifest."""
    parser = _FormParser()
    parser.feed(html)
    assert parser.action and parser.method == "post", "no POST form on the setup page"
    assert list(parser.fields) == ["manifest"], parser.fields
    assert parser.buttons == ["register"]
    return parser.action, parser.fields, json.loads(parser.fields["manifest"])


async def submit_to_github(session: aiohttp.ClientSession, page: str) -> str:
    """POST the page's form to (fake) GitHub; returns where GitHub redirects back to."""
    action, fields, _ = setup_form(page)
    async with session.post(action, data=fields, allow_redirects=False) as response:
        assert response.status == 302, await response.text()
        return response.headers["Location"]
