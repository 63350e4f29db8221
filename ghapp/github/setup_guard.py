"""Who may use the set-up page: the browser that opened the token link ghapp logged, by a
host name that is ours (no DNS rebinding), with a `state` that works once within an hour."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web

COOKIE = "ghapp_setup"
STATE_TTL_S = 3600.0
MAX_STATES = 256  # a reloading browser cannot grow this without bound
MAX_SESSIONS = 64  # nor can opening the token link again and again
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(header: str) -> str | None:
    """The lower-case host of a Host header value (port and IPv6 brackets dropped)."""
    try:
        name = urlsplit("//" + header.strip()).hostname
    except ValueError:
        return None
    return name or None


def known_hosts(*urls: str | None) -> frozenset[str]:
    """localhost, this machine's name, and the hosts of the configured public URLs."""
    names = set(LOCAL_NAMES) | {socket.gethostname().lower()}
    names |= {h for u in urls if u and (h := urlsplit(u).hostname)}
    return frozenset(names)


@dataclass
class SetupGuard:
    """The token printed in the log, the browser sessions it opened, and their states."""

    hosts: frozenset[str]
    now: Callable[[], float] = time.monotonic
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    _sessions: dict[str, None] = field(default_factory=dict)  # in the order they were opened
    _states: dict[str, tuple[str, float]] = field(default_factory=dict)

    def host_ok(self, request: web.Request) -> bool:
        """Every host the request names is ours: a name we know, or an IP address.

        A rebound DNS name arrives as its own Host; an IP literal cannot be rebound.
        """
        headers: Iterable[str] = [request.host, *request.headers.getall("X-Forwarded-Host", [])]
        for value in headers:
            for part in value.split(","):
                name = host_name(part)
                if name is None:
                    return False
                if name in self.hosts or name.endswith(".localhost"):
                    continue
                try:
                    ipaddress.ip_address(name)
                except ValueError:
                    return False
        return True

    def open_session(self, request: web.Request) -> tuple[str | None, bool]:
        """The browser's session, and whether the token link just opened it (set the cookie)."""
        cookie = request.cookies.get(COOKIE, "")
        if cookie in self._sessions:
            return cookie, False
        offered = request.query.get("token", "")
        if offered and hmac.compare_digest(offered.encode(), self.token.encode()):
            session = secrets.token_urlsafe(24)
            if len(self._sessions) >= MAX_SESSIONS:
                del self._sessions[next(iter(self._sessions))]
            self._sessions[session] = None
            return session, True
        return None, False

    def session(self, request: web.Request) -> str | None:
        """The session of a browser that opened the token link earlier (its cookie)."""
        cookie = request.cookies.get(COOKIE, "")
        return cookie if cookie in self._sessions else None

    def issue_state(self, session: str) -> str:
        """A fresh state for this browser's registration; GitHub hands it back."""
        now = self.now()
        for state, (_, issued) in list(self._states.items()):
            if now - issued > STATE_TTL_S or len(self._states) >= MAX_STATES:
                del self._states[state]
        state = secrets.token_urlsafe(24)
        self._states[state] = (session, now)
        return state

    def take_state(self, session: str | None, state: str) -> bool:
        """True once for a state issued to this session less than an hour ago."""
        issued = self._states.get(state)
        if session is None or issued is None or issued[0] != session:
            return False
        del self._states[state]
        return self.now() - issued[1] <= STATE_TTL_S


def set_session_cookie(response: web.StreamResponse, session: str) -> None:
    """HttpOnly; Lax so that GitHub's redirect back (a top-level GET) still carries it."""
    response.set_cookie(
        COOKIE, session, httponly=True, samesite="Lax", path="/", max_age=int(STATE_TTL_S) * 24
    )
