"""`python -m ghapp` with no APP_ID: setup page, registration, then normal mode, no restart."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from ghapp.config import read_dotenv
from tests.conftest import webhook_headers
from tests.fakes.ghapp_process import free_port
from tests.fakes.github import FakeGitHub
from tests.fakes.setup_flow import submit_to_github

ROOT = Path(__file__).resolve().parents[2]


async def poll(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        await asyncio.sleep(0.05)


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    gh = FakeGitHub()
    gh.add_installation(1, "octocat")
    await gh.start()
    yield gh
    await gh.close()


async def test_setup_then_normal_mode_on_the_same_port(fake: FakeGitHub, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(ROOT),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "GITHUB_API_URL": fake.base_url,
        "GITHUB_WEB_URL": fake.root_url,
        "CLAUDE_BIN": "true",
    }
    log = tmp_path / "ghapp.log"
    cwd = tmp_path / "fresh"
    cwd.mkdir()
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ghapp",
            env=env,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:

            async def answers(path: str, status: int) -> bool:
                assert proc.returncode is None, log.read_text()
                try:
                    async with http.get(base + path, allow_redirects=False) as r:
                        return r.status == status
                except aiohttp.ClientError:
                    return False

            await poll(lambda: answers("/", 403), 30, "setup page")
            async with http.post(base + "/api/github/webhooks", json={}) as refused:
                assert refused.status == 503 and "setup mode" in await refused.text()
            # The log holds a ready link with the token; the browser keeps its cookie.
            found = re.search(r"Open (http://\S+/\?token=\S+) in a browser", log.read_text())
            assert found is not None, log.read_text()
            link = URL(found.group(1))
            assert link.host == "127.0.0.1" and link.port == port
            async with http.get(link) as response:
                assert response.status == 200
                back = URL(await submit_to_github(http, await response.text()))
            assert str(back.origin()) == base and back.path == "/setup/done"
            async with http.get(back, allow_redirects=False) as done:
                assert done.status == 302, await done.text()
                assert done.headers["Location"].endswith("/installations/new")

            # Normal mode, though no task can run yet (no Claude CLI or model credential here):
            # 503 like setup mode's /healthz, so wait for the report of normal mode itself.
            report: dict[str, object] = {}

            async def normal_mode() -> bool:
                assert proc.returncode is None, log.read_text()
                try:
                    async with http.get(base + "/healthz") as health:
                        report.clear()
                        report.update(await health.json())
                        return health.status == 503 and "database" in report
                except (aiohttp.ClientError, ValueError):
                    return False

            await poll(normal_mode, 30, "normal mode")
            assert report["database"] == "ok" and "mode" not in report
            assert "ANTHROPIC_API_KEY" in str(report["tasks"]) and report["ok"] is False

            # The webhook secret GitHub generated is the one in force now.
            secret = read_dotenv(cwd / ".env")["WEBHOOK_SECRET"]
            body = json.dumps({"zen": "Keep it logically awesome."}).encode()
            headers = webhook_headers(secret, "ping", "setup-ping-1", body)
            async with http.post(base + "/api/github/webhooks", data=body, headers=headers) as r:
                assert r.status == 202, await r.text()
            wrong = webhook_headers("not-the-secret", "ping", "setup-ping-2", body)
            async with http.post(base + "/api/github/webhooks", data=body, headers=wrong) as r:
                assert r.status == 401
        assert proc.returncode is None  # the same process throughout: no restart
        assert stat.S_IMODE((cwd / ".env").stat().st_mode) == 0o600
        assert stat.S_IMODE((cwd / "private-key.pem").stat().st_mode) == 0o600
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, log.read_text()
    assert "setup mode" in log.read_text()
