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


async def page(client: TestClient[Any, Any], setup: SetupApp, **headers: str) -> str:
    """The page as the operator gets it: through the token link, then by the cookie."""
    response = await client.get("/", params={"token": setup.guard.token}, headers=headers)
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    return await response.text()


def state_of(html: str) -> str:
    """The state the page's form sends to GitHub."""
    action, _, _ = setup_form(html)
    return URL(action).query["state"]


async def test_page_posts_the_manifest_from_app_yml(
    aiohttp_client: ClientFactory, fake: FakeGitHub, tmp_path: Path
) -> None:
    (tmp_path / "app.yml").write_text((ROOT / "app.yml").read_text())
    setup, client = await start(aiohttp_client, config_for(fake, tmp_path))
    html = await page(client, setup)
    action, _, manifest = setup_form(html)
    base = str(client.make_url("")).rstrip("/")
    assert action == f"{fake.root_url}/settings/apps/new?state={state_of(html)}"
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
    config = config_for(fake, tmp_path, GH_ORG="acme", PUBLIC_URL="https://mc.example")
    setup, client = await start(aiohttp_client, config)
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "mc.example"}
    html = await page(client, setup, **headers)
    action, _, manifest = setup_form(html)
    assert action == f"{fake.root_url}/organizations/acme/settings/apps/new?state={state_of(html)}"
    assert manifest["redirect_url"] == "https://mc.example/setup/done"
    assert manifest["hook_attributes"]["url"] == "https://mc.example/api/github/webhooks"
    assert manifest["default_events"] == DEFAULTS["default_events"]  # no app.yml here


async def test_loopback_webhook_url_is_warned_about_on_github_com(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    config = setup_config({}, tmp_path, process_env={"WEBHOOK_SECRET": "x"})
    setup, client = await start(aiohttp_client, config)
    html = await page(client, setup)
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
    html = await page(client, setup)
    back = URL(await submit_to_github(http, html))
    assert back.path == "/setup/done" and back.query["state"] == state_of(html)

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

    async def done(query: str, status: int, needle: str) -> None:
        response = await client.get(f"/setup/done?{query}", allow_redirects=False)
        assert response.status == status
        assert needle in await response.text()

    state = state_of(await page(client, setup))
    await done(f"code=nope&state={state}", 400, "expires after an hour")
    await done(f"code=nope&state={state}", 400, "state mismatch")  # a state works once
    await done("code=x", 400, "state mismatch")
    await done(f"state={state_of(await page(client, setup))}", 400, "no code")
    back = URL(await submit_to_github(http, await page(client, setup)))
    fake.apps.expire_codes()
    await done(back.query_string, 400, "register the app again")
    back = URL(await submit_to_github(http, await page(client, setup)))
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
    state = state_of(await page(client, setup))
    response = await client.get(f"/setup/done?code=abc&state={state}")
    assert response.status == 502 and "Could not reach GitHub" in await response.text()
    assert names(tmp_path) == []


async def test_unreadable_app_yml_is_shown(
    aiohttp_client: ClientFactory, fake: FakeGitHub, tmp_path: Path
) -> None:
    (tmp_path / "app.yml").write_text("name: x\nname: y\n")
    setup, client = await start(aiohttp_client, config_for(fake, tmp_path))
    response = await client.get("/", params={"token": setup.guard.token})
    assert response.status == 500 and "line 2" in await response.text()


async def test_without_the_token_the_page_is_403_and_issues_no_state(
    aiohttp_client: ClientFactory, fake: FakeGitHub, tmp_path: Path
) -> None:
    setup, client = await start(aiohttp_client, config_for(fake, tmp_path))
    for params in ({}, {"token": "guessed"}, {"token": setup.guard.token[:-1]}):
        response = await client.get("/", params=params)
        assert response.status == 403
        text = await response.text()
        assert "setup mode" in text and "/?token=" in text
        assert "state=" not in text and "manifest" not in text
        assert "ghapp_setup" not in response.cookies
    assert setup.guard._states == {}


async def test_a_stranger_cannot_finish_with_the_operators_state(
    aiohttp_client: ClientFactory, fake: FakeGitHub, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The review's takeover: a state read off the page, a code of the stranger's own app."""
    (tmp_path / ".env").write_text(OLD_ENV)
    setup, operator = await start(aiohttp_client, config_for(fake, tmp_path))
    state = state_of(await page(operator, setup))
    stranger_code = URL(await submit_to_github(http, await page(operator, setup))).query["code"]
    done = operator.make_url("/setup/done").with_query(code=stranger_code, state=state)

    async with http.get(done, allow_redirects=False) as response:  # no cookie
        assert response.status == 403 and "/?token=" in await response.text()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        # Even a second browser that has the token cannot use a state issued to the first.
        async with other.get(operator.make_url("/"), params={"token": setup.guard.token}) as r:
            assert r.status == 200
        async with other.get(done, allow_redirects=False) as response:
            assert response.status == 400 and "state mismatch" in await response.text()
    assert fake.requests_to(f"/app-manifests/{stranger_code}/conversions", "POST") == []
    assert (tmp_path / ".env").read_text() == OLD_ENV and not setup.done.is_set()

    # The operator's own browser still can, with that state, once.
    async with operator.get(done.path_qs, allow_redirects=False) as response:
        assert response.status == 302
    assert setup.done.is_set()


async def test_a_state_expires_after_an_hour(
    aiohttp_client: ClientFactory, fake: FakeGitHub, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    setup, client = await start(aiohttp_client, config_for(fake, tmp_path))
    issued = setup.guard.now()
    back = URL(await submit_to_github(http, await page(client, setup)))
    setup.guard.now = lambda: issued + 3601
    response = await client.get(back.path_qs, allow_redirects=False)
    assert response.status == 400 and "state mismatch" in await response.text()
    assert fake.requests_to(f"/app-manifests/{back.query['code']}/conversions", "POST") == []
    assert not setup.done.is_set()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Host": "evil.example"}, 403),
        ({"Host": "evil.example:3000"}, 403),
        ({"Host": "localhost.evil.example"}, 403),
        ({"X-Forwarded-Host": "evil.example"}, 403),
        ({"X-Forwarded-Host": "mc.example, evil.example"}, 403),
        ({"Host": "localhost:3000"}, 200),
        ({"Host": "ghapp.localhost"}, 200),
        ({"Host": "192.0.2.7:3000"}, 200),
        ({"Host": "[::1]:3000"}, 200),
        ({"Host": "MC.example"}, 200),  # PUBLIC_URL's host
        ({"X-Forwarded-Host": "mc.example"}, 200),
    ],
)
async def test_unknown_host_names_are_refused(
    aiohttp_client: ClientFactory,
    fake: FakeGitHub,
    tmp_path: Path,
    headers: dict[str, str],
    status: int,
) -> None:
    """A DNS name rebound to ghapp arrives under its own Host: no page, no state, no .env."""
    setup, client = await start(
        aiohttp_client, config_for(fake, tmp_path, PUBLIC_URL="https://mc.example")
    )
    response = await client.get("/", params={"token": setup.guard.token}, headers=headers)
    assert response.status == status
    if status == 403:
        assert "host name" in await response.text() and setup.guard._states == {}
        done = await client.get("/setup/done?code=abc&state=x", headers=headers)
        assert done.status == 403
