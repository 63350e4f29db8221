"""AppAuth against the fake GitHub over real HTTP: JWTs, token cache, single-flight mints."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from gidgethub import BadRequest

from ghapp.github.auth import AppAuth
from tests.fakes.github import FakeGitHub

REPO = "octo/hello"
MINT_PATH = "/app/installations/1/access_tokens"


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    gh = FakeGitHub()
    gh.add_repo(REPO, installation_id=1)
    gh.add_repo("other/repo", installation_id=2)
    await gh.start()
    yield gh
    await gh.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def auth(fake: FakeGitHub, session: aiohttp.ClientSession) -> AppAuth:
    return AppAuth(session, fake.app_id, fake.private_key_pem, fake.base_url)


def _other_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


async def test_app_jwt_is_accepted_by_github(auth: AppAuth, fake: FakeGitHub) -> None:
    app = await auth.app_getitem("/app")
    assert app["id"] == fake.app_id
    assert fake.log[-1].auth == "jwt"


async def test_an_app_jwt_does_not_stall_the_event_loop(auth: AppAuth) -> None:
    # Parsing the PEM for each JWT took 0.1-0.2 s here: webhooks waited that long.
    started = time.perf_counter()
    for _ in range(5):
        auth.app_jwt()
    assert (time.perf_counter() - started) / 5 < 0.03


async def test_jwt_signed_with_wrong_key_is_refused(
    fake: FakeGitHub, session: aiohttp.ClientSession
) -> None:
    bad = AppAuth(session, fake.app_id, _other_key(), fake.base_url)
    with pytest.raises(BadRequest) as err:
        await bad.installation_token(1)
    assert err.value.status_code == 401
    assert fake.token_mints == 0


async def test_jwt_for_another_app_id_is_refused(
    fake: FakeGitHub, session: aiohttp.ClientSession
) -> None:
    bad = AppAuth(session, fake.app_id + 1, fake.private_key_pem, fake.base_url)
    with pytest.raises(BadRequest) as err:
        await bad.app_getitem("/app")
    assert err.value.status_code == 401


async def test_jwt_living_too_long_is_refused(
    fake: FakeGitHub, session: aiohttp.ClientSession
) -> None:
    now = int(time.time())
    claims = {"iat": now - 60, "exp": now + 3600, "iss": str(fake.app_id)}
    token = jwt.encode(claims, fake.private_key_pem, algorithm="RS256")
    headers = {"authorization": f"Bearer {token}", "accept": "application/vnd.github+json"}
    async with session.post(fake.base_url + MINT_PATH, headers=headers) as resp:
        assert resp.status == 401
        assert "too far in the future" in (await resp.json())["message"]
    assert fake.token_mints == 0


async def test_token_is_minted_once_and_reused(auth: AppAuth, fake: FakeGitHub) -> None:
    tokens = {await auth.installation_token(1) for _ in range(5)}
    assert len(tokens) == 1
    assert fake.token_mints == 1
    token = tokens.pop()
    assert token.startswith("ghs_")
    assert fake.token_allows(token, REPO)
    assert not fake.token_allows(token, "other/repo")


async def test_concurrent_callers_share_one_mint(auth: AppAuth, fake: FakeGitHub) -> None:
    tokens = await asyncio.gather(*(auth.installation_token(1) for _ in range(20)))
    assert len(set(tokens)) == 1
    assert fake.token_mints == 1


async def test_each_installation_gets_its_own_token(auth: AppAuth, fake: FakeGitHub) -> None:
    one, two = await asyncio.gather(auth.installation_token(1), auth.installation_token(2))
    assert one != two
    assert fake.token_mints == 2
    assert fake.token_allows(two, "other/repo")


async def test_token_is_refreshed_before_it_expires(auth: AppAuth, fake: FakeGitHub) -> None:
    fake.token_lifetime_s = 8  # refreshed after 4 s (half its life), live until 7-8 s
    first = await auth.installation_token(1)
    assert await auth.installation_token(1) == first
    await asyncio.sleep(4.6)
    second = await auth.installation_token(1)
    assert second != first
    assert fake.token_mints == 2
    assert fake.token_allows(first, REPO), "refreshed while the old token was still live"


async def test_invalidate_forces_a_new_mint(auth: AppAuth, fake: FakeGitHub) -> None:
    first = await auth.installation_token(1)
    auth.invalidate(1)
    second = await auth.installation_token(1)
    assert second != first
    auth.invalidate(1, token=first)  # stale: must not drop the newer token
    assert await auth.installation_token(1) == second
    assert fake.token_mints == 2


async def test_unknown_installation_is_404(auth: AppAuth) -> None:
    with pytest.raises(BadRequest) as err:
        await auth.installation_token(999)
    assert err.value.status_code == 404


async def test_mint_waits_out_a_429_and_retries(auth: AppAuth, fake: FakeGitHub) -> None:
    fake.fail_next(MINT_PATH, status=429, retry_after=1)
    started = time.monotonic()
    token = await auth.installation_token(1)
    assert time.monotonic() - started >= 0.9
    assert fake.token_allows(token, REPO)
    assert len(fake.requests_to(MINT_PATH)) == 2


async def test_base_url_with_path_prefix(session: aiohttp.ClientSession) -> None:
    fake = FakeGitHub(prefix="/api/v3")
    fake.add_repo(REPO, installation_id=1)
    base = await fake.start()
    try:
        assert base.endswith("/api/v3")
        auth = AppAuth(session, fake.app_id, fake.private_key_pem, base)
        assert fake.token_allows(await auth.installation_token(1), REPO)
    finally:
        await fake.close()


async def test_token_never_reaches_the_log(
    auth: AppAuth, fake: FakeGitHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.fail_next(MINT_PATH, status=429, retry_after=0)
    token = await auth.installation_token(1)
    assert "installation 1" in caplog.text
    assert token not in caplog.text
    assert token not in repr(auth._tokens)
