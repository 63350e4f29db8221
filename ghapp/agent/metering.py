"""The agent's only way to the model: swaps its attempt token for the operator's key and meters.

The agent holds a per-attempt token, never the operator's credential. Each response is
priced from the usage the upstream reported and booked as soon as it ends; a request is
refused once the attempt has spent its cap, with an error the CLI stops on.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from ghapp.agent.prices import PriceError, PriceTable
from ghapp.agent.usage import UsageMeter

log = logging.getLogger(__name__)

DEFAULT_UPSTREAM = "https://api.anthropic.com"
MAX_REQUEST = 64 << 20
# Request headers passed upstream besides every anthropic-* header; the credential is ours.
FORWARD_HEADERS = ("content-type", "accept", "user-agent", "x-stainless-retry-count")
RESPONSE_HEADERS = ("content-type", "request-id", "anthropic-ratelimit-unified-status")
Book = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Upstream:
    """Where the operator's model API is and how ghapp authenticates to it."""

    base_url: str = DEFAULT_UPSTREAM
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Upstream:
        """ANTHROPIC_BASE_URL and the operator's key (or OAuth token) from ghapp's settings."""
        headers: dict[str, str] = {}
        if token := env.get("ANTHROPIC_AUTH_TOKEN"):
            headers["authorization"] = f"Bearer {token}"
        elif key := env.get("ANTHROPIC_API_KEY"):
            headers["x-api-key"] = key
        base = (env.get("ANTHROPIC_BASE_URL") or DEFAULT_UPSTREAM).rstrip("/")
        return cls(base, headers)


@dataclass
class Account:
    """One attempt's standing with the proxy: its token, cap and what it has spent."""

    cap_usd: float
    token: str = field(default_factory=lambda: "mc-" + secrets.token_urlsafe(24), repr=False)
    spent_usd: float = 0.0
    responses: int = 0
    cap_reached: asyncio.Event = field(default_factory=asyncio.Event)

    def admits(self) -> bool:
        """Whether one more request may start: nothing is forwarded once the cap is spent."""
        return self.spent_usd < self.cap_usd


def _error(status: int, kind: str, message: str) -> web.Response:
    """An Anthropic-shaped error the CLI reports and, with x-should-retry false, stops on."""
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status, headers={"x-should-retry": "false"})


class MeteringProxy:
    """Serves one attempt's Messages API on a unix socket (sandbox) or a loopback port."""

    def __init__(
        self,
        account: Account,
        upstream: Upstream,
        prices: PriceTable,
        session: aiohttp.ClientSession,
        book: Book,
        label: str = "",
    ) -> None:
        self.account, self.upstream, self.prices = account, upstream, prices
        self.session, self.book, self.label = session, book, label
        self._runner: web.AppRunner | None = None
        self._admit = asyncio.Lock()
        self._inflight: set[asyncio.Task[object]] = set()

    async def start(self, unix_path: Path | None = None) -> str:
        """Listen; returns the socket path, or the http:// URL of a loopback port."""
        app = web.Application(client_max_size=MAX_REQUEST)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True
        )
        await self._runner.setup()
        if unix_path is not None:
            await web.UnixSite(self._runner, str(unix_path)).start()
            return str(unix_path)
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def close(self) -> None:
        """Stop serving; responses still streaming are cut off and billed for what they used."""
        for task in list(self._inflight):
            task.cancel()
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=5)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _authorised(self, request: web.Request) -> bool:
        """The attempt's own token, as x-api-key or a bearer token."""
        given = request.headers.get("x-api-key") or ""
        bearer = request.headers.get("authorization") or ""
        if bearer.lower().startswith("bearer "):
            given = given or bearer[7:]
        return hmac.compare_digest(given.encode(), self.account.token.encode())

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """Answer the probe locally, check the token and cap, then forward and meter."""
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            return await self._answer(request)
        finally:
            self._inflight.discard(task)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        """The proxy's decision for one request."""
        if request.method == "HEAD":
            return web.Response(status=200)
        if not self._authorised(request):
            log.warning("%s: model request without the attempt token refused", self.label)
            return _error(401, "authentication_error", "ghapp: unknown attempt token")
        billable = request.method == "POST" and request.path == "/v1/messages"
        free = (request.method, request.path) in {
            ("POST", "/v1/messages/count_tokens"),
            ("GET", "/v1/models"),
        }
        if not billable and not free:
            return _error(404, "not_found_error", f"ghapp: {request.path} is not served")
        body = await request.read()
        if not billable:
            return await self._forward(request, body, None)
        try:
            model = json.loads(body).get("model")
        except (ValueError, AttributeError, RecursionError):
            return _error(400, "invalid_request_error", "ghapp: the body is not a JSON object")
        if not isinstance(model, str) or not self.prices.knows(model):
            return _error(
                400,
                "invalid_request_error",
                f"ghapp: no price for model {model!r}; the operator can add it to MC_PRICES",
            )
        async with self._admit:
            if not self.account.admits():
                self.account.cap_reached.set()
                spent, cap = self.account.spent_usd, self.account.cap_usd
                return _error(
                    402,
                    "billing_error",
                    f"ghapp: attempt budget of ${cap:.2f} spent (${spent:.4f} used)",
                )
        return await self._forward(request, body, UsageMeter(model))

    def _headers(self, request: web.Request) -> dict[str, str]:
        """The agent's anthropic-* headers with the operator's credential instead of its own."""
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower().startswith("anthropic-") or name.lower() in FORWARD_HEADERS
        }
        headers["accept-encoding"] = "identity"
        headers.update(self.upstream.headers)
        return headers

    async def _forward(
        self, request: web.Request, body: bytes, meter: UsageMeter | None
    ) -> web.StreamResponse:
        """Stream the upstream's bytes through as they come; meter them on the way."""
        url = self.upstream.base_url + request.path_qs
        try:
            upstream = await self.session.request(
                request.method,
                url,
                data=body or None,
                headers=self._headers(request),
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
            )
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("%s: model upstream unreachable: %s", self.label, exc)
            return _error(502, "api_error", "ghapp: the model API is unreachable")
        resp = web.StreamResponse(status=upstream.status)
        for name in RESPONSE_HEADERS:
            if name in upstream.headers:
                resp.headers[name] = upstream.headers[name]
        if "x-should-retry" in upstream.headers:
            resp.headers["x-should-retry"] = upstream.headers["x-should-retry"]
        streaming = "text/event-stream" in upstream.headers.get("content-type", "")
        body_parts: list[bytes] = []
        try:
            await resp.prepare(request)
            async for chunk in upstream.content.iter_any():
                if meter is not None:
                    if streaming:
                        meter.feed(chunk)
                    elif sum(map(len, body_parts)) < MAX_REQUEST:
                        body_parts.append(chunk)
                await resp.write(chunk)
            await resp.write_eof()
        except (ConnectionResetError, aiohttp.ClientError, asyncio.CancelledError) as exc:
            log.info("%s: response cut short: %s", self.label, type(exc).__name__)
            if isinstance(exc, asyncio.CancelledError):
                await self._settle(meter, body_parts, upstream.status)
                raise
        finally:
            upstream.release()
        await self._settle(meter, body_parts, upstream.status)
        return resp

    async def _settle(self, meter: UsageMeter | None, parts: list[bytes], status: int) -> None:
        """Price what the response used and book it now, so a crash later loses none of it."""
        if meter is None:
            return
        if parts:
            meter.feed_body(b"".join(parts))
            parts.clear()
        if meter.error:
            log.warning("%s: the model API streamed an error: %s", self.label, meter.error)
        if not meter.usage:
            return
        try:
            cost = self.prices.cost(meter.model, meter.billed())
        except PriceError as exc:
            log.error("%s: %s; response not priced", self.label, exc)
            return
        self.account.spent_usd += cost
        self.account.responses += 1
        if not self.account.admits():
            self.account.cap_reached.set()
        log.debug("%s: response %s cost $%.6f", self.label, status, cost)
        try:
            await self.book(cost)
        except Exception:
            log.exception("%s: could not book $%.6f; the attempt's end books it", self.label, cost)
