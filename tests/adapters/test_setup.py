"""Setup mode in-process against the fake GitHub: the page, the code exchange, the .env."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from ghapp.config import ConfigError, load_settings, read_dotenv
from ghapp.github.auth import AppAuth
from ghapp.github.manifest import DEFAULTS, load_app_yml
from ghapp.github.setup import SetupApp, SetupConfig, setup_config
from tests.fakes.github import FakeGitHub
from tests.fakes.setup_flow import setup_form, submit_to_github

ROOT = Path(__file__).resolve().parents[2]
ClientFactory = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]
OLD_ENV = "# my settings\nMC_CONCURRENCY=2\nexport LOG_LEVEL=debug\nPRIVATE_KEY=old\nAPP_ID=\n"


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    gh = FakeGitHub()
    gh.add_installation(1, "octocat")
    await gh.start()
    yield gh
    await gh.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def config_for(fake: FakeGitHub, directory: Path, **env: str) -> SetupConfig:
    values = {"GITHUB_API_URL": fake.base_url, "GITHUB_WEB_URL": fake.root_url, **env}
    return setup_config(values, directory, process_env={})


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def start(
    aiohttp_client: ClientFactory, config: SetupConfig
) -> tuple[SetupApp, TestClient[Any, Any]]:
    setup = SetupApp(config)
    return setup, await aiohttp_client(setup.application())


async def page(client: TestClient[Any, Any], **headers: str) -> str:
    response = await client.get("/", headers=headers)
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    return await response.text()


async def test_page_posts_the_manifest_from_app_yml(
    aiohttp_client: ClientFactory, fake: FakeGitHub, tmp_path: Path
) -> None:
    (tmp_path / "app.yml").write_text((ROOT / "app.yml").read_text())
    setup, client = await start(aiohttp_client, config_for(fake, tmp_path))
    html = await page(client)
    action, _, manifest = setup_form(html)
    base = str(client.make_url("")).rstrip("/")
    assert action == f"{fake.root_url}/settings/apps/new?state={setup.state}"
    assert manifest == {
        **load_app_yml(ROOT / "app.yml"),
        "hook_attributes": {"url": f"{base}/api/github/webhooks", "active": True},
        "redirect_url": f"{base}/setup/done",
    }
    assert manifest["public"] is False and manifest["name"] == "MissionControl"
    assert "GitHub cannot reach" not in html  # only github.com is warned about loopback


async def test_org_ghe_and_public_url(tmp_path: Path) -> None:
    env = {"GHE_HOST": "ghe.example", "GH_ORG": "acme", "PUBLIC_URL": "https://mc.example/"}
    config = setup_config(env, tmp_path, process_env={})
    assert config.api_url == "https://ghe.example/api/v3"
    assert config.web_url == "https://ghe.example"
    assert config.hook_url("http://localhost:3000") == "https://mc.example/api/github/webhooks"
    proxy = setup_config({"WEBHOOK_PROXY_URL": "https://smee.io/abc"}, tmp_path, process_env={})
    assert proxy.web_url == "https://github.com" and proxy.api_url == "https://api.github.com"
    assert proxy.hook_url("http://localhost:3000") == "https://smee.io/abc"
    for bad in ({"PORT": "http"}, {"GH_ORG": "a b"}, {"PUBLIC_URL": "mc.example"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            setup_config(bad, tmp_path, process_env={})


async def test_org_page_targets_the_org_form_and_honours_the_proxy_headers(
    aiohttp_client: ClientFactory, fake: FakeGitHub, tmp_path: Path
) -> None:
    setup, client = await start(aiohttp_client, config_for(fake, tmp_path, GH_ORG="acme"))
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "mc.example"}
    action, _, manifest = setup_form(await page(client, **headers))
    assert action == f"{fake.root_url}/organizations/acme/settings/apps/new?state={setup.state}"
    assert manifest["redirect_url"] == "https://mc.example/setup/done"
    assert manifest["hook_attributes"]["url"] == "https://mc.example/api/github/webhooks"
    assert manifest["default_events"] == DEFAULTS["default_events"]  # no app.yml here


async def test_loopback_webhook_url_is_warned_about_on_github_com(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    config = setup_config({}, tmp_path, process_env={"WEBHOOK_SECRET": "x"})
    _, client = await start(aiohttp_client, config)
    html = await page(client)
    assert "GitHub cannot reach" in html and "PUBLIC_URL" in html
    assert "WEBHOOK_SECRET is set in the environment" in html
    action, _, _ = setup_form(html)
    assert action.startswith("https://github.com/settings/apps/new?state=")


async def test_setup_mode_refuses_webhooks(
    aiohttp_client: ClientFactory, fake: FakeGitHub, tmp_path: Path
) -> None:
    _, client = await start(aiohttp_client, config_for(fake, tmp_path))
    response = await client.post("/api/github/webhooks", json={"zen": "hi"})
    assert response.status == 503
    assert "setup mode" in (await response.json())["error"]
    health = await client.get("/healthz")
    assert health.status == 503 and (await health.json())["mode"] == "setup"


async def test_redirect_writes_a_working_env_and_goes_to_install(
    aiohttp_client: ClientFactory, fake: FakeGitHub, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    (tmp_path / ".env").write_text(OLD_ENV)
    setup, client = await start(aiohttp_client, config_for(fake, tmp_path))
    back = URL(await submit_to_github(http, await page(client)))
    assert back.path == "/setup/done" and back.query["state"] == setup.state

    response = await client.get(back.path_qs, allow_redirects=False)
    assert response.status == 302
    created = next(iter(fake.apps.apps.values()))
    install = f"{fake.root_url}/apps/{created.slug}/installations/new"
    assert response.headers["Location"] == install
    assert setup.done.is_set() and setup.result is not None
    async with http.get(install) as landing:
        assert landing.status == 200 and "Install MissionControl" in await landing.text()

    env_file, key_file = tmp_path / ".env", tmp_path / "private-key.pem"
    assert mode(env_file) == 0o600 and mode(key_file) == 0o600
    text = env_file.read_text()
    assert text.startswith("# my settings\nMC_CONCURRENCY=2\nexport LOG_LEVEL=debug\n")
    assert "# PRIVATE_KEY=old" in text and text.count("APP_ID=") == 1
    values = read_dotenv(env_file)
    assert values["APP_ID"] == str(created.id)
    assert values["WEBHOOK_SECRET"] == created.webhook_secret
    assert values["PRIVATE_KEY_PATH"] == str(key_file.resolve())
    assert values["GITHUB_CLIENT_ID"] == created.client_id
    assert values["GITHUB_CLIENT_SECRET"] == created.client_secret
    assert key_file.read_text().strip() == created.pem.strip()

    # The written configuration works: settings load, and GitHub accepts the app's JWT.
    settings = load_settings({**values, "GITHUB_API_URL": fake.base_url})
    assert settings.app_id == str(created.id) and settings.webhook_secret
    assert settings.private_key is not None
    auth = AppAuth(http, settings.app_id, settings.private_key, settings.github_api_url)
    assert (await auth.app_getitem("/app"))["id"] == created.id
    assert (await auth.installation_token(1)).startswith("ghs_")

    again = await client.get("/", allow_redirects=False)
    assert again.status == 302 and again.headers["Location"] == install


async def test_bad_or_expired_code_writes_nothing(
    aiohttp_client: ClientFactory, fake: FakeGitHub, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    (tmp_path / ".env").write_text(OLD_ENV)
    setup, client = await start(aiohttp_client, config_for(fake, tmp_path))
    state = setup.state

    async def done(query: str, status: int, needle: str) -> None:
        response = await client.get(f"/setup/done?{query}", allow_redirects=False)
        assert response.status == status
        assert needle in await response.text()

    await done(f"code=nope&state={state}", 400, "expires after an hour")
    await done("code=x", 400, "state mismatch")
    await done(f"state={state}", 400, "no code")
    back = URL(await submit_to_github(http, await page(client)))
    fake.apps.expire_codes()
    await done(back.query_string, 400, "register the app again")
    back = URL(await submit_to_github(http, await page(client)))
    fake.fail_next(f"/app-manifests/{back.query['code']}/conversions", status=500)
    await done(back.query_string, 502, "GitHub failed")

    assert (tmp_path / ".env").read_text() == OLD_ENV
    assert names(tmp_path) == [".env"]
    assert not setup.done.is_set()


async def test_unreachable_github_is_a_clear_error(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    config = setup_config({"GITHUB_API_URL": "http://127.0.0.1:9"}, tmp_path, process_env={})
    setup, client = await start(aiohttp_client, config)
    response = await client.get(f"/setup/done?code=abc&state={setup.state}")
    assert response.status == 502 and "Could not reach GitHub" in await response.text()
    assert names(tmp_path) == []


async def test_unreadable_app_yml_is_shown(
    aiohttp_client: ClientFactory, fake: FakeGitHub, tmp_path: Path
) -> None:
    (tmp_path / "app.yml").write_text("name: x\nname: y\n")
    _, client = await start(aiohttp_client, config_for(fake, tmp_path))
    response = await client.get("/")
    assert response.status == 500 and "line 2" in await response.text()
