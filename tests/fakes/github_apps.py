"""FakeGitHub's app-level side: the webhook deliveries log and the manifest registration flow."""

from __future__ import annotations

import hashlib
import hmac
import html
import itertools
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from yarl import URL

CheckJwt = Callable[[web.Request], str]


@dataclass
class HookDelivery:
    """One delivery attempt in GET /app/hook/deliveries."""

    id: int
    guid: str
    event: str
    action: str | None
    status_code: int
    status: str
    delivered_at: datetime
    redelivery: bool = False
    installation_id: int | None = None
    repository_id: int | None = None
    payload: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "guid": self.guid,
            "delivered_at": self.delivered_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "redelivery": self.redelivery,
            "duration": 0.1,
            "status": self.status,
            "status_code": self.status_code,
            "event": self.event,
            "action": self.action,
            "installation_id": self.installation_id,
            "repository_id": self.repository_id,
            "throttled_at": None,
        }


@dataclass
class ManifestApp:
    """An app registered through POST /settings/apps/new."""

    id: int
    slug: str
    name: str
    owner: str
    org: str | None
    manifest: dict[str, Any]
    pem: str = field(repr=False)
    public_pem: bytes = field(repr=False)
    webhook_secret: str = field(repr=False)
    client_id: str
    client_secret: str = field(repr=False)
    code: str
    code_expires: float
    converted: bool = False


def _page(status: int, title: str, text: str) -> web.Response:
    body = (
        f"<!doctype html><html><head><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>"
    )
    return web.Response(status=status, text=body, content_type="text/html")


def _not_found() -> web.Response:
    body = {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}
    return web.json_response(body, status=404)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "app"


class AppsDesk:
    """State and handlers behind FakeGitHub's deliveries and manifest endpoints."""

    def __init__(self, check_jwt: CheckJwt, root_url: Callable[[], str]) -> None:
        self._check_jwt, self._root_url = check_jwt, root_url
        self.deliveries: list[HookDelivery] = []
        self.redelivery_requests: list[int] = []  # numeric attempt ids POSTed to /attempts
        self.hook_url: str | None = None  # where a redelivery is POSTed, if anywhere
        self.hook_secret = ""
        self.apps: dict[int, ManifestApp] = {}
        self.web_user = "octocat"
        self.code_lifetime_s = 3600.0
        self._ids = itertools.count(90_001)
        self._app_ids = itertools.count(777_001)

    # -- seeding and inspection ----------------------------------------------------------
    def add_delivery(
        self,
        guid: str,
        event: str,
        action: str | None = None,
        status_code: int = 202,
        status: str = "OK",
        delivered_at: datetime | None = None,
        *,
        redelivery: bool = False,
        installation_id: int | None = None,
        repository_id: int | None = None,
        payload: dict[str, Any] | None = None,
    ) -> HookDelivery:
        item = HookDelivery(
            next(self._ids),
            guid,
            event,
            action,
            status_code,
            status,
            delivered_at or datetime.now(UTC),
            redelivery,
            installation_id,
            repository_id,
            payload,
        )
        self.deliveries.append(item)
        return item

    def public_key(self, app_id: str) -> bytes | None:
        """Verification key of a manifest-created app, by JWT issuer."""
        app = self.apps.get(int(app_id)) if app_id.isdigit() else None
        return app.public_pem if app is not None else None

    def app_json(self, app_id: str) -> dict[str, Any] | None:
        app = self.apps.get(int(app_id)) if app_id.isdigit() else None
        if app is None:
            return None
        return {"id": app.id, "slug": app.slug, "name": app.name, "owner": {"login": app.owner}}

    def expire_codes(self) -> None:
        """Make every unconverted manifest code expired, as after GitHub's hour."""
        for app in self.apps.values():
            app.code_expires = time.time() - 1

    def routes(self, prefix: str) -> list[web.RouteDef]:
        """API routes under the prefix; the web pages at the host root, as on GHE."""
        return [
            web.get(prefix + "/app/hook/deliveries", self._list),
            web.post(prefix + "/app/hook/deliveries/{id:\\d+}/attempts", self._redeliver),
            web.post(prefix + "/app-manifests/{code}/conversions", self._convert),
            web.post("/settings/apps/new", self._new_app),
            web.post("/organizations/{org}/settings/apps/new", self._new_app),
            web.get("/apps/{slug}/installations/new", self._install_page),
        ]

    # -- deliveries ----------------------------------------------------------------------
    async def _list(self, request: web.Request) -> web.Response:
        self._check_jwt(request)
        per_page = max(1, min(100, int(request.query.get("per_page", "30"))))
        ordered = sorted(self.deliveries, key=lambda d: (d.delivered_at, d.id), reverse=True)
        start = 0
        cursor = request.query.get("cursor")
        if cursor:
            ids = [d.id for d in ordered]
            try:
                start = ids.index(int(cursor.removeprefix("v1_"))) + 1
            except ValueError:
                return web.json_response({"message": "Invalid cursor"}, status=422)
        chunk = ordered[start : start + per_page]
        headers: dict[str, str] = {}
        if start + per_page < len(ordered):
            nxt = request.url.with_query(per_page=per_page, cursor=f"v1_{chunk[-1].id}")
            headers["link"] = f'<{nxt}>; rel="next"'
        return web.json_response([d.to_json() for d in chunk], headers=headers)

    async def _redeliver(self, request: web.Request) -> web.Response:
        self._check_jwt(request)
        did = int(request.match_info["id"])
        original = next((d for d in self.deliveries if d.id == did), None)
        if original is None:
            return _not_found()
        self.redelivery_requests.append(did)
        if self.hook_url is not None:
            await self._send(original)
        return web.json_response({}, status=202)

    async def _send(self, original: HookDelivery) -> None:
        """POST the stored payload, signed, to hook_url and log the new attempt."""
        assert self.hook_url is not None
        payload = original.payload or {"action": original.action}
        body = json.dumps(payload).encode()
        digest = hmac.new(self.hook_secret.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": original.event,
            "X-GitHub-Delivery": original.guid,
            "X-Hub-Signature-256": f"sha256={digest}",
            "User-Agent": "GitHub-Hookshot/fake",
        }
        try:
            timeout = aiohttp.ClientTimeout(total=10)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(self.hook_url, data=body, headers=headers) as response,
            ):
                code = response.status
            status = "OK" if 200 <= code < 300 else f"Invalid HTTP Response: {code}"
        except (aiohttp.ClientError, TimeoutError):
            code, status = 0, "failed to connect to host"
        self.add_delivery(
            original.guid,
            original.event,
            original.action,
            code,
            status,
            redelivery=True,
            installation_id=original.installation_id,
            repository_id=original.repository_id,
            payload=original.payload,
        )

    # -- manifest flow -------------------------------------------------------------------
    async def _new_app(self, request: web.Request) -> web.Response:
        """GitHub's 'Create GitHub App' from a manifest, confirmed at once."""
        form = await request.post()
        raw = form.get("manifest")
        if not isinstance(raw, str) or not raw:
            return _page(422, "Invalid GitHub App manifest", "The manifest field is missing.")
        try:
            manifest = json.loads(raw)
        except ValueError:
            return _page(422, "Invalid GitHub App manifest", "The manifest is not JSON.")
        if not isinstance(manifest, dict):
            return _page(422, "Invalid GitHub App manifest", "The manifest must be an object.")
        hook = manifest.get("hook_attributes") or {}
        for name, value in (
            ("url", manifest.get("url")),
            ("redirect_url", manifest.get("redirect_url")),
            ("hook_attributes.url", hook.get("url") if isinstance(hook, dict) else None),
        ):
            if not isinstance(value, str) or not value.startswith(("http://", "https://")):
                return _page(422, "Invalid GitHub App manifest", f"{name} is missing or invalid.")
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,  # GitHub hands out PKCS#1
            serialization.NoEncryption(),
        ).decode()
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        org = request.match_info.get("org")
        name = str(manifest.get("name") or "my-app")
        app = ManifestApp(
            id=next(self._app_ids),
            slug=_slug(name),
            name=name,
            owner=org or self.web_user,
            org=org,
            manifest=manifest,
            pem=pem,
            public_pem=public,
            webhook_secret=secrets.token_hex(20),
            client_id="Iv1." + secrets.token_hex(8),
            client_secret=secrets.token_hex(20),
            code=secrets.token_hex(10),
            code_expires=time.time() + self.code_lifetime_s,
        )
        self.apps[app.id] = app
        query = {"code": app.code}
        if "state" in request.query:
            query["state"] = request.query["state"]
        target = URL(manifest["redirect_url"]).update_query(query)
        return web.Response(status=302, headers={"Location": str(target)})

    async def _convert(self, request: web.Request) -> web.Response:
        """POST /app-manifests/{code}/conversions: no auth, one use, one hour."""
        code = request.match_info["code"]
        app = next((a for a in self.apps.values() if a.code == code), None)
        if app is None or app.converted or app.code_expires <= time.time():
            return _not_found()
        app.converted = True
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "id": app.id,
            "slug": app.slug,
            "node_id": f"A_{app.id}",
            "owner": {"login": app.owner, "type": "Organization" if app.org else "User"},
            "name": app.name,
            "description": app.manifest.get("description"),
            "external_url": app.manifest.get("url"),
            "html_url": f"{self._root_url()}/apps/{app.slug}",
            "created_at": now,
            "updated_at": now,
            "permissions": app.manifest.get("default_permissions") or {},
            "events": app.manifest.get("default_events") or [],
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "webhook_secret": app.webhook_secret,
            "pem": app.pem,
        }
        return web.json_response(body, status=201)

    async def _install_page(self, request: web.Request) -> web.Response:
        slug = request.match_info["slug"]
        app = next((a for a in self.apps.values() if a.slug == slug), None)
        if app is None:
            return _page(404, "Page not found", f"No app named {slug}.")
        return _page(200, f"Install {app.name}", f"Choose where to install {app.name}.")
