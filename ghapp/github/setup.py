"""Setup mode (Probot's manifest flow): with no APP_ID, register the GitHub App from a web page."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from gidgethub import BadRequest, GitHubException

from ghapp.config import ConfigError
from ghapp.endpoints import GITHUB_API_URL
from ghapp.github.auth import GitHubClient
from ghapp.github.envfile import save_private_key, update_dotenv
from ghapp.github.manifest import ManifestError, build_manifest, load_app_yml, registration_url
from ghapp.github.setup_guard import SetupGuard, known_hosts, set_session_cookie
from ghapp.github.setup_page import (
    error_page,
    needs_token,
    only_local,
    redirect,
    register_page,
    wrong_host,
)

log = logging.getLogger(__name__)

DONE_PATH = "/setup/done"
# Written by setup; a real environment variable would silently override the .env value.
WRITTEN = (
    "APP_ID",
    "WEBHOOK_SECRET",
    "PRIVATE_KEY_PATH",
    "GITHUB_CLIENT_ID",
    "GITHUB_CLIENT_SECRET",
)
_CODE = re.compile(r"[A-Za-z0-9_.-]{1,200}")
_ORG = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")


@dataclass(frozen=True)
class SetupConfig:
    """What setup mode reads from the environment; the rest of Settings is not needed yet."""

    directory: Path
    host: str = "0.0.0.0"
    port: int = 3000
    webhook_path: str = "/api/github/webhooks"
    api_url: str = GITHUB_API_URL
    web_url: str = "https://github.com"
    org: str | None = None
    public_url: str | None = None
    webhook_proxy_url: str | None = None
    overridden: tuple[str, ...] = field(default=())

    @property
    def env_path(self) -> Path:
        return self.directory / ".env"

    def hook_url(self, base: str) -> str:
        """WEBHOOK_PROXY_URL as is (Probot), else PUBLIC_URL or the page's base + WEBHOOK_PATH."""
        if self.webhook_proxy_url:
            return self.webhook_proxy_url
        return (self.public_url or base).rstrip("/") + self.webhook_path


def _url(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = (env.get(name) or "").strip() or default
    if value is not None and not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name}: must start with http:// or https://, got {value!r}")
    return value.rstrip("/") if value else None


def setup_config(
    env: Mapping[str, str], directory: Path, process_env: Mapping[str, str] | None = None
) -> SetupConfig:
    """Validate the few variables setup mode uses; ConfigError names the bad one."""
    ghe = (env.get("GHE_HOST") or "").strip() or None
    api = _url(env, "GITHUB_API_URL", f"https://{ghe}/api/v3" if ghe else GITHUB_API_URL)
    web_url = _url(env, "GITHUB_WEB_URL", f"https://{ghe}" if ghe else "https://github.com")
    raw_port = (env.get("PORT") or "3000").strip()
    if not raw_port.isdigit() or int(raw_port) > 65535:
        raise ConfigError(f"PORT: must be a port number, got {raw_port!r}")
    path = (env.get("WEBHOOK_PATH") or "/api/github/webhooks").strip()
    if not path.startswith("/") or path.startswith(DONE_PATH) or path == "/":
        raise ConfigError(f"WEBHOOK_PATH: must start with '/' and not be a setup page: {path!r}")
    org = (env.get("GH_ORG") or "").strip() or None
    if org is not None and not _ORG.fullmatch(org):
        raise ConfigError(f"GH_ORG: must be a GitHub organisation login, got {org!r}")
    real = os.environ if process_env is None else process_env
    return SetupConfig(
        directory=directory,
        host=(env.get("HOST") or "").strip() or "0.0.0.0",
        port=int(raw_port),
        webhook_path=path,
        api_url=api or GITHUB_API_URL,
        web_url=web_url or "https://github.com",
        org=org,
        public_url=_url(env, "PUBLIC_URL"),
        webhook_proxy_url=_url(env, "WEBHOOK_PROXY_URL"),
        overridden=tuple(n for n in (*WRITTEN, "PRIVATE_KEY") if (real.get(n) or "").strip()),
    )


@dataclass(frozen=True)
class SetupResult:
    """The registered app and where its credentials were written."""

    app_id: int
    slug: str
    install_url: str
    env_path: Path
    key_path: Path


class ConversionError(Exception):
    """The code exchange failed; the message is for the person at the browser."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def browser_base(request: web.Request) -> str:
    """The URL the user reached ghapp at, as a reverse proxy forwards it."""
    proto = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
    host = request.headers.get("X-Forwarded-Host", request.host).split(",")[0].strip()
    return f"{proto}://{host}"


class SetupApp:
    """The aiohttp app of setup mode; `done` is set once .env holds a working app."""

    def __init__(self, config: SetupConfig) -> None:
        self.config = config
        self.guard = SetupGuard(known_hosts(config.public_url))
        self.done = asyncio.Event()
        self.result: SetupResult | None = None
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.index)
        app.router.add_get(DONE_PATH, self.finish)
        app.router.add_post(self.config.webhook_path, self.webhook)
        app.router.add_get("/healthz", self.healthz)
        app.cleanup_ctx.append(self._client)
        return app

    async def _client(self, _: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            self._session = session
            yield
            self._session = None

    def _warnings(self, hook: str) -> list[str]:
        notes = [
            f"{name} is set in the environment and will override the value written to .env; "
            "unset it before continuing."
            for name in self.config.overridden
        ]
        if only_local(hook) and "github.com" in self.config.web_url:
            notes.append(
                f"GitHub will send webhooks to {hook}, which GitHub cannot reach. Set "
                "PUBLIC_URL (ghapp's public address) or WEBHOOK_PROXY_URL (a forwarding "
                "channel such as smee.io) and reload this page, or change the webhook URL in "
                "the app's settings on GitHub later."
            )
        return notes

    def link(self) -> str:
        """The address to open, token included, as the log prints it."""
        shown = "localhost" if self.config.host in ("0.0.0.0", "::", "") else self.config.host
        shown = f"[{shown}]" if ":" in shown else shown
        base = self.config.public_url or f"http://{shown}:{self.config.port}"
        return f"{base}/?token={self.guard.token}"

    async def index(self, request: web.Request) -> web.Response:
        """The explanation and the one button, for the browser that opened the token link."""
        if self.result is not None:
            return redirect(self.result.install_url)
        if not self.guard.host_ok(request):
            return wrong_host(request.host)
        session, opened = self.guard.open_session(request)
        if session is None:
            return needs_token()
        response = self._register(request, session)
        if opened:
            set_session_cookie(response, session)
        return response

    def _register(self, request: web.Request, session: str) -> web.Response:
        base = browser_base(request)
        try:
            app_yml = load_app_yml(self.config.directory / "app.yml")
        except (ManifestError, OSError) as exc:
            return error_page(500, "app.yml cannot be read", str(exc), start_again=False)
        hook = self.config.hook_url(base)
        manifest = build_manifest(app_yml, hook, base + DONE_PATH)
        state = self.guard.issue_state(session)
        target = registration_url(self.config.web_url, self.config.org, state)
        account = f"the organisation {self.config.org}" if self.config.org else "your account"
        env_path = str(self.config.env_path.resolve())
        return register_page(manifest, target, account, env_path, self._warnings(hook))

    async def finish(self, request: web.Request) -> web.Response:
        """GitHub's redirect back: exchange the code, write .env and the key, go install."""
        if self.result is not None:
            return redirect(self.result.install_url)
        if not self.guard.host_ok(request):
            return wrong_host(request.host)
        code = request.query.get("code", "")
        if not _CODE.fullmatch(code):
            return error_page(400, "No registration code", "GitHub's redirect had no code.")
        session = self.guard.session(request)
        if session is None:
            return needs_token()
        if not self.guard.take_state(session, request.query.get("state", "")):
            message = (
                "This link does not come from a set-up page this browser opened in the last "
                "hour, or it was used already (state mismatch)."
            )
            return error_page(400, "Unexpected registration", message)
        async with self._lock:
            if self.result is None:
                try:
                    data = await self._convert(code)
                    self.result = self._write(data)
                except ConversionError as exc:
                    log.warning("setup: code exchange failed: %s", exc)
                    return error_page(exc.status, "Registration failed", str(exc))
                except (OSError, ValueError) as exc:
                    log.error("setup: cannot write %s: %s", self.config.env_path, exc)
                    message = f"Could not write {self.config.env_path}: {exc}"
                    return error_page(500, "Cannot save the app", message, start_again=False)
                log.info(
                    "setup: registered GitHub App %s (id %s); wrote %s and %s",
                    self.result.slug,
                    self.result.app_id,
                    self.result.env_path,
                    self.result.key_path,
                )
                self.done.set()
        return redirect(self.result.install_url)

    async def _convert(self, code: str) -> dict[str, Any]:
        """POST /app-manifests/{code}/conversions (no auth) and check the answer's shape."""
        assert self._session is not None
        gh = GitHubClient(self._session, base_url=self.config.api_url)
        try:
            data = await gh.post("/app-manifests/{code}/conversions", {"code": code}, data=b"")
        except BadRequest as exc:
            raise ConversionError(
                400,
                f"GitHub refused the registration code (HTTP {int(exc.status_code)}). A code "
                "works once and expires after an hour; register the app again.",
            ) from None
        except GitHubException as exc:
            raise ConversionError(502, f"GitHub failed to convert the code: {exc}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            message = f"Could not reach GitHub at {self.config.api_url}: {exc!r}"
            raise ConversionError(502, message) from None
        ok = (
            isinstance(data, dict)
            and str(data.get("id", "")).isdigit()
            and "PRIVATE KEY-----" in str(data.get("pem", ""))
            and isinstance(data.get("webhook_secret"), str)
            and bool(data["webhook_secret"])
            and str(data.get("html_url", "")).startswith(("http://", "https://"))
        )
        if not ok:
            raise ConversionError(502, "GitHub's answer lacks the app id, key or secret.")
        return dict(data)

    def _write(self, data: dict[str, Any]) -> SetupResult:
        """The key first, then .env: a half-done write never leaves an APP_ID without its key."""
        directory = self.config.directory
        app_id = int(data["id"])
        key_path = save_private_key(directory, app_id, str(data["pem"]))
        values = {
            "APP_ID": str(app_id),
            "WEBHOOK_SECRET": str(data["webhook_secret"]),
            "PRIVATE_KEY_PATH": str(key_path.resolve()),
        }
        for name, key in (
            ("GITHUB_CLIENT_ID", "client_id"),
            ("GITHUB_CLIENT_SECRET", "client_secret"),
        ):
            if data.get(key):
                values[name] = str(data[key])
        update_dotenv(self.config.env_path, values, drop=("PRIVATE_KEY",))
        install = str(data["html_url"]).rstrip("/") + "/installations/new"
        return SetupResult(
            app_id, str(data.get("slug", "")), install, self.config.env_path, key_path
        )

    async def webhook(self, _: web.Request) -> web.Response:
        """No app, no secret: refuse every webhook until setup is done."""
        message = (
            "ghapp is in setup mode: no GitHub App is configured (APP_ID is not set), "
            "so no webhook is accepted. Open ghapp's / page to register the app."
        )
        return web.json_response({"error": message}, status=503)

    async def healthz(self, _: web.Request) -> web.Response:
        """Not ready: nothing runs until the app is registered."""
        return web.json_response({"ok": False, "mode": "setup"}, status=503)


async def serve_setup(config: SetupConfig, stop: asyncio.Event | None = None) -> SetupResult | None:
    """Serve setup mode until .env is written (the result) or a signal/`stop` (None)."""
    setup = SetupApp(config)
    runner = web.AppRunner(setup.application(), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    loop = asyncio.get_running_loop()
    own_signals = stop is None
    stop = stop or asyncio.Event()
    if own_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    try:
        await site.start()
        log.warning(
            "setup mode: APP_ID is not set. Open %s in a browser to register the GitHub "
            "App; ghapp continues by itself once it is registered.",
            setup.link(),
        )
        waiters = [asyncio.ensure_future(setup.done.wait()), asyncio.ensure_future(stop.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
    finally:
        await runner.cleanup()  # graceful: the redirect to the install page is sent first
        if own_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
    return setup.result
