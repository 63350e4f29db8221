"""Setup mode in a real headless Chromium: click the button, land on GitHub's install page."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from ghapp.config import load_settings, read_dotenv
from ghapp.github.auth import AppAuth
from ghapp.github.setup import SetupApp, setup_config
from tests.fakes.chromium import Chromium, require_chromium
from tests.fakes.github import FakeGitHub


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    gh = FakeGitHub()
    gh.add_installation(1, "octocat")
    await gh.start()
    yield gh
    await gh.close()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Chromium]:
    chromium = Chromium(require_chromium(), tmp_path / "profile")
    await chromium.start()
    try:
        yield chromium
    finally:
        await chromium.close()


async def test_click_through_registration_to_the_install_page(
    fake: FakeGitHub, browser: Chromium, tmp_path: Path
) -> None:
    directory = tmp_path / "ghapp"
    directory.mkdir()
    (directory / ".env").write_text("MC_CONCURRENCY=2\n")
    env = {"GITHUB_API_URL": fake.base_url, "GITHUB_WEB_URL": fake.root_url}
    setup = SetupApp(setup_config(env, directory, process_env={}))
    runner = web.AppRunner(setup.application())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        page = await browser.new_page()
        await page.goto(f"http://{host}:{port}/")  # without the link from the log: refused
        assert await page.evaluate("document.title") == "Open the link from ghapp's log"
        await page.goto(f"http://{host}:{port}/?token={setup.guard.token}")
        assert await page.evaluate("document.title") == "Set up ghapp"
        action = await page.evaluate("document.querySelector('form').action")
        await page.click("#register")
        final = await page.wait_until(
            lambda href, ready: "/installations/new" in href and ready == "complete"
        )
        title = await page.evaluate("document.title")
    finally:
        await runner.cleanup()

    created = next(iter(fake.apps.apps.values()))
    assert final == f"{fake.root_url}/apps/{created.slug}/installations/new"
    assert title == "Install MissionControl"
    assert setup.done.is_set()
    registered = fake.requests_to("/settings/apps/new", "POST")
    state = action.split("?state=", 1)[1]
    assert len(registered) == 1 and registered[0].query == f"state={state}"
    assert state not in setup.guard._states  # used, so it cannot be used again
    assert created.manifest["redirect_url"] == f"http://{host}:{port}/setup/done"

    values = read_dotenv(directory / ".env")
    assert values["MC_CONCURRENCY"] == "2" and values["APP_ID"] == str(created.id)
    assert mode(directory / ".env") == 0o600
    key = Path(values["PRIVATE_KEY_PATH"])
    assert key.parent == directory.resolve() and mode(key) == 0o600
    settings = load_settings({**values, "GITHUB_API_URL": fake.base_url})
    assert settings.app_id is not None and settings.private_key is not None
    async with aiohttp.ClientSession() as session:
        auth = AppAuth(session, settings.app_id, settings.private_key, settings.github_api_url)
        assert (await auth.installation_token(1)).startswith("ghs_")
