"""GitHubForge driving the real gidgethub client over HTTP against the fake GitHub."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import DEVNULL
from typing import Any

import aiohttp
import pytest
from gidgethub import BadRequest, GitHubBroken

from ghapp.bootstrap import SystemClock, store_pacer
from ghapp.core.model import PullRequest
from ghapp.github.auth import AppAuth, GitHubClient, github_unavailable
from ghapp.github.forge import MAX_COMMENT_CHARS, GitHubForge
from ghapp.store.sqlite import SqliteTaskStore
from tests.fakes.git_http import make_bare_repo
from tests.fakes.github import FakeGitHub

REPO = "octo/hello"
IID = 1


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    gh = FakeGitHub()
    gh.add_repo(REPO, installation_id=IID, default_branch="trunk")
    gh.add_repo("other/repo", installation_id=2)
    await gh.start()
    yield gh
    await gh.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def make_forge(
    fake: FakeGitHub,
    session: aiohttp.ClientSession,
    *,
    write_interval_s: float = 0,
    permission_ttl_s: float = 300,
    secrets: tuple[str, ...] = (),
) -> GitHubForge:
    client = GitHubClient(session, base_url=fake.base_url, max_retries=3)
    auth = AppAuth(session, fake.app_id, fake.private_key_pem, fake.base_url, client=client)
    return GitHubForge(
        auth,
        write_interval_s=write_interval_s,
        permission_ttl_s=permission_ttl_s,
        secrets=secrets,
    )


@pytest.fixture
def forge(fake: FakeGitHub, session: aiohttp.ClientSession) -> GitHubForge:
    return make_forge(fake, session)


async def test_repository(forge: GitHubForge, fake: FakeGitHub) -> None:
    repo = await forge.repository(IID, REPO)
    assert (repo.full_name, repo.default_branch) == (REPO, "trunk")
    assert repo.clone_url == fake.clone_url(REPO)


async def test_repo_outside_the_installation_is_not_found(forge: GitHubForge) -> None:
    with pytest.raises(BadRequest) as err:
        await forge.repository(IID, "other/repo")
    assert err.value.status_code == 404


@pytest.mark.parametrize("role", ["admin", "maintain", "write", "triage", "read", "none"])
async def test_permission_reports_the_exact_role(
    forge: GitHubForge, fake: FakeGitHub, role: str
) -> None:
    fake.set_permission(REPO, "alice", role)
    assert await forge.permission(IID, REPO, "alice") == role


async def test_permission_of_unknown_user_is_none(forge: GitHubForge, fake: FakeGitHub) -> None:
    fake.missing_users.add("ghost")
    assert await forge.permission(IID, REPO, "ghost") == "none"


async def test_custom_role_falls_back_to_legacy_permission(
    forge: GitHubForge, fake: FakeGitHub
) -> None:
    fake.set_permission(REPO, "carol", "security-auditor")  # the fake maps it to legacy read
    assert await forge.permission(IID, REPO, "carol") == "read"


async def test_permission_is_cached_for_a_while(
    fake: FakeGitHub, session: aiohttp.ClientSession
) -> None:
    forge = make_forge(fake, session, permission_ttl_s=3.0)
    path = f"/repos/{REPO}/collaborators/bob/permission"
    fake.set_permission(REPO, "bob", "write")
    assert await forge.permission(IID, REPO, "bob") == "write"
    fake.set_permission(REPO, "bob", "read")
    assert await forge.permission(IID, REPO, "Bob") == "write"
    assert len(fake.requests_to(path)) == 1
    await asyncio.sleep(3.1)
    assert await forge.permission(IID, REPO, "bob") == "read"
    assert len(fake.requests_to(path)) == 2


async def test_a_fresh_permission_check_skips_the_cache(
    fake: FakeGitHub, session: aiohttp.ClientSession
) -> None:
    forge = make_forge(fake, session)
    fake.set_permission(REPO, "bob", "write")
    assert await forge.permission(IID, REPO, "bob") == "write"
    fake.set_permission(REPO, "bob", "none")  # removed while the answer is cached
    assert await forge.permission(IID, REPO, "bob") == "write"
    assert await forge.permission(IID, REPO, "bob", fresh=True) == "none"
    assert await forge.permission(IID, REPO, "bob") == "none"  # and the cache learns it


async def test_comment_create_and_edit(forge: GitHubForge, fake: FakeGitHub) -> None:
    issue = fake.add_issue(REPO, "Bug")
    cid = await forge.comment(IID, REPO, issue, "Working on it")
    assert [c.body for c in fake.comments_on(REPO, issue)] == ["Working on it"]
    assert fake.comments[cid].user == fake.bot_login
    await forge.edit_comment(IID, REPO, cid, "Done")
    assert fake.comments[cid].body == "Done"


async def test_find_comment_finds_only_the_apps_own_marked_comment(
    forge: GitHubForge, fake: FakeGitHub
) -> None:
    issue = fake.add_issue(REPO, "Bug")
    marker = "<!-- ghapp:task 7 20261127T120000 -->"
    created = datetime.now(UTC) - timedelta(minutes=5)
    old = created - timedelta(days=1)
    for n in range(300):  # before the task: never listed
        fake.add_comment(REPO, issue, f"old chatter {n}", at=old)
    assert await forge.find_comment(IID, REPO, issue, marker, created) is None
    fake.add_comment(REPO, issue, f"copied {marker}", user="mallory")  # not ours: ignored
    for n in range(130):  # the app's comment is on the second page of the recent ones
        fake.add_comment(REPO, issue, f"chatter {n}")
    ours = await forge.comment(IID, REPO, issue, f"tracking {marker}")
    before = len(fake.requests_to(f"/repos/{REPO}/issues/{issue}/comments", "GET"))
    assert await forge.find_comment(IID, REPO, issue, marker, created) == ours
    after = len(fake.requests_to(f"/repos/{REPO}/issues/{issue}/comments", "GET"))
    assert after - before == 2  # the 300 older comments cost nothing
    assert await forge.find_comment(IID, REPO, issue, "<!-- ghapp:task 8 x -->", created) is None


async def test_secrets_never_reach_github(fake: FakeGitHub, session: aiohttp.ClientSession) -> None:
    secret = "whsec-0123456789"
    forge = make_forge(fake, session, secrets=(secret,))
    issue = fake.add_issue(REPO, "Bug")
    leak = f"the agent printed {secret}, sk-ant-api03-abcdefghijkl, ghs_abcdefghijklmnop"
    cid = await forge.comment(IID, REPO, issue, leak)
    await forge.edit_comment(IID, REPO, cid, f"again {leak}")
    assert fake.comments[cid].body == "again the agent printed " + ", ".join(["[redacted]"] * 3)
    pr = await forge.open_pr(IID, REPO, head="mc/1-x", base="main", title=secret, body=leak)
    opened = fake.pulls[(REPO, pr.number)]
    assert opened.title == "[redacted]" and secret not in opened.body
    await forge.update_pr(IID, REPO, pr.number, body=f"later {leak}")
    published = [opened.title, opened.body, *(c.body for c in fake.comments.values())]
    assert not [text for text in published if secret in text or re.search("sk-ant-|ghs_", text)]


async def test_long_comment_is_trimmed_not_refused(forge: GitHubForge, fake: FakeGitHub) -> None:
    issue = fake.add_issue(REPO)
    exact = "x" * MAX_COMMENT_CHARS
    cid = await forge.comment(IID, REPO, issue, exact)
    assert fake.comments[cid].body == exact
    await forge.edit_comment(IID, REPO, cid, "y" * 200_000)
    body = fake.comments[cid].body
    assert len(body) <= MAX_COMMENT_CHARS
    assert body.startswith("yyyy") and "trimmed" in body[-80:]


async def test_fake_refuses_overlong_bodies_like_github(fake: FakeGitHub) -> None:
    issue = fake.add_issue(REPO)
    async with aiohttp.ClientSession() as s:
        auth = AppAuth(s, fake.app_id, fake.private_key_pem, fake.base_url)
        with pytest.raises(BadRequest) as err:
            await auth.gh.post(
                f"/repos/{REPO}/issues/{issue}/comments",
                data={"body": "z" * (MAX_COMMENT_CHARS + 1)},
                oauth_token=await auth.installation_token(IID),
            )
    assert err.value.status_code == 422
    assert "Body is too long" in str(err.value)


async def test_reactions_hit_the_right_subjects(forge: GitHubForge, fake: FakeGitHub) -> None:
    issue = fake.add_issue(REPO)
    cid = fake.add_comment(REPO, issue, "/mc do it")
    rid = fake.add_review_comment(REPO, issue, "fix this line")
    await forge.react(IID, REPO, "eyes", issue_number=issue)
    await forge.react(IID, REPO, "+1", comment_id=cid)
    await forge.react(IID, REPO, "rocket", comment_id=rid, review_comment=True)
    assert fake.reactions == [
        (f"issue:{REPO}#{issue}", "eyes"),
        (f"comment:{cid}", "+1"),
        (f"review_comment:{rid}", "rocket"),
    ]
    with pytest.raises(ValueError):
        await forge.react(IID, REPO, "eyes")


async def test_pull_request_open_find_update(forge: GitHubForge, fake: FakeGitHub) -> None:
    assert await forge.find_pr(IID, REPO, "mc/issue-1") is None
    pr = await forge.open_pr(
        IID, REPO, head="mc/issue-1", base="trunk", title="Fix", body="Closes #1"
    )
    assert pr == PullRequest(pr.number, f"https://github.com/{REPO}/pull/{pr.number}", "mc/issue-1")
    assert await forge.find_pr(IID, REPO, "mc/issue-1") == pr
    assert await forge.find_pr(IID, REPO, "mc/issue") is None
    await forge.update_pr(IID, REPO, pr.number, body="Closes #1\n\nmore")
    assert fake.pulls[(REPO, pr.number)].body == "Closes #1\n\nmore"


async def test_open_pr_when_one_already_exists_returns_it(
    forge: GitHubForge, fake: FakeGitHub
) -> None:
    first = await forge.open_pr(IID, REPO, head="b", base="trunk", title="t", body="b")
    again = await forge.open_pr(IID, REPO, head="b", base="trunk", title="t2", body="b2")
    assert again == first
    assert len(fake.pulls) == 1
    assert any(r.path == f"/repos/{REPO}/pulls" and r.method == "POST" for r in fake.log[-3:])


async def test_closed_pr_is_not_found(forge: GitHubForge, fake: FakeGitHub) -> None:
    pr = await forge.open_pr(IID, REPO, head="b", base="trunk", title="t", body="b")
    fake.pulls[(REPO, pr.number)].state = "closed"
    assert await forge.find_pr(IID, REPO, "b") is None


async def test_revoked_token_is_reminted_transparently(
    forge: GitHubForge, fake: FakeGitHub
) -> None:
    issue = fake.add_issue(REPO)
    await forge.comment(IID, REPO, issue, "one")
    fake.revoke_all_tokens()
    await forge.comment(IID, REPO, issue, "two")
    fake.revoke_all_tokens()
    assert (await forge.repository(IID, REPO)).full_name == REPO
    assert [c.body for c in fake.comments_on(REPO, issue)] == ["one", "two"]
    assert fake.token_mints == 3


async def test_expired_token_is_reminted_transparently(
    forge: GitHubForge, fake: FakeGitHub
) -> None:
    token = await forge.token(IID)
    fake.expire_token(token)
    await forge.repository(IID, REPO)
    assert fake.token_mints == 2
    assert await forge.token(IID) != token


@pytest.mark.parametrize(
    "kw", [{"status": 429}, {"status": 403, "retry_after": None, "reset_in": 1}]
)
async def test_rate_limit_is_waited_out_and_retried(
    forge: GitHubForge, fake: FakeGitHub, kw: dict[str, object]
) -> None:
    issue = fake.add_issue(REPO)
    path = f"/repos/{REPO}/issues/{issue}/comments"
    fake.fail_next(path, **kw)  # type: ignore[arg-type]
    started = time.monotonic()
    await forge.comment(IID, REPO, issue, "hello")
    assert time.monotonic() - started >= 0.9
    assert len(fake.requests_to(path, "POST")) == 2
    assert len(fake.comments_on(REPO, issue)) == 1


async def test_rate_limit_retries_are_bounded(forge: GitHubForge, fake: FakeGitHub) -> None:
    issue = fake.add_issue(REPO)
    path = f"/repos/{REPO}/issues/{issue}/comments"
    fake.fail_next(path, times=10, retry_after=0)
    with pytest.raises(BadRequest) as err:
        await forge.comment(IID, REPO, issue, "hello")
    assert err.value.status_code == 429
    assert len(fake.requests_to(path)) == 4  # first try + max_retries


async def test_a_secondary_limit_without_retry_after_escapes_as_an_outage(
    fake: FakeGitHub, session: aiohttp.ClientSession
) -> None:
    """GitHub's advice is a minute, then longer: beyond max_wait_s the caller retries later."""
    client = GitHubClient(session, base_url=fake.base_url, max_retries=3, max_wait_s=30)
    auth = AppAuth(session, fake.app_id, fake.private_key_pem, fake.base_url, client=client)
    forge = GitHubForge(auth, write_interval_s=0)
    issue = fake.add_issue(REPO)
    path = f"/repos/{REPO}/issues/{issue}/comments"
    fake.fail_next(path, status=403, retry_after=None)  # "You have exceeded a secondary rate…"
    with pytest.raises(BadRequest) as err:
        await forge.comment(IID, REPO, issue, "hello")
    assert err.value.status_code == 403 and len(fake.requests_to(path)) == 1
    assert github_unavailable(err.value)  # the inbox keeps the delivery and tries again
    fake.fail_next(path, status=502)
    with pytest.raises(GitHubBroken) as broken:
        await forge.comment(IID, REPO, issue, "hello")
    assert github_unavailable(broken.value)
    await forge.comment(IID, REPO, issue, "hello")  # and then it works
    assert len(fake.comments_on(REPO, issue)) == 1


async def test_plain_403_is_not_retried(forge: GitHubForge, fake: FakeGitHub) -> None:
    issue = fake.add_issue(REPO)
    path = f"/repos/{REPO}/issues/{issue}/comments"
    fake.fail_next(path, status=403, retry_after=None, message="Resource not accessible")
    with pytest.raises(BadRequest) as err:
        await forge.comment(IID, REPO, issue, "hello")
    assert err.value.status_code == 403
    assert len(fake.requests_to(path)) == 1
    assert not github_unavailable(err.value)  # a real refusal is not waited out


async def test_writes_are_spaced(fake: FakeGitHub, session: aiohttp.ClientSession) -> None:
    forge = make_forge(fake, session, write_interval_s=0.3)
    issue = fake.add_issue(REPO)
    started = time.monotonic()
    await asyncio.gather(*(forge.comment(IID, REPO, issue, f"c{i}") for i in range(3)))
    assert time.monotonic() - started >= 0.6
    assert len(fake.comments_on(REPO, issue)) == 3


async def test_two_processes_share_the_spacing_through_the_store(
    fake: FakeGitHub, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Two ghapp processes of one cluster: their writes for one installation are spaced."""
    forges, stores = [], []
    for _ in range(2):
        store = SqliteTaskStore(tmp_path / "shared.sqlite3")
        await store.migrate()
        stores.append(store)
        client = GitHubClient(session, base_url=fake.base_url)
        auth = AppAuth(session, fake.app_id, fake.private_key_pem, fake.base_url, client=client)
        pacer = store_pacer(store, SystemClock(), 0.3)
        forges.append(GitHubForge(auth, write_interval_s=0.3, pacer=pacer))
    issue = fake.add_issue(REPO)
    try:
        await asyncio.gather(*(forges[i % 2].comment(IID, REPO, issue, f"c{i}") for i in range(6)))
    finally:
        for store in stores:
            await store.close()
    posts = [r.at for r in fake.log if r.method == "POST" and r.path.endswith("/comments")]
    gaps = [b - a for a, b in itertools.pairwise(posts)]
    assert len(posts) == 6 and min(gaps) >= 0.28, gaps


async def test_base_url_with_path_prefix(session: aiohttp.ClientSession) -> None:
    fake = FakeGitHub(prefix="/api/v3")
    fake.add_repo(REPO, installation_id=IID)
    await fake.start()
    try:
        forge = make_forge(fake, session)
        issue = fake.add_issue(REPO)
        await forge.comment(IID, REPO, issue, "via GHE")
        assert await forge.permission(IID, REPO, "alice") == "read"
        assert [c.body for c in fake.comments_on(REPO, issue)] == ["via GHE"]
    finally:
        await fake.close()


async def _git(cwd: Path, *args: str, token: str = "") -> int:
    """Run git against the fake's smart-HTTP endpoint, the token only in the environment."""
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(cwd),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    proc = await asyncio.create_subprocess_exec(
        "git", *args, cwd=cwd, env=env, stdout=DEVNULL, stderr=DEVNULL
    )
    return await proc.wait()


async def test_git_backend_is_wired_and_pr_heads_are_checked(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    make_bare_repo(tmp_path / "remote", REPO, {"README.md": "hi\n"})
    fake = FakeGitHub(git_root=tmp_path / "remote")
    fake.add_repo(REPO, installation_id=IID)
    await fake.start()
    try:
        forge = make_forge(fake, session)
        repo, token = await forge.repository(IID, REPO), await forge.token(IID)
        work = tmp_path / "work"
        assert await _git(tmp_path, "clone", "-q", repo.clone_url, str(work), token="nope") != 0
        assert await _git(tmp_path, "clone", "-q", repo.clone_url, str(work), token=token) == 0
        kw: dict[str, Any] = {"base": "main", "title": "t", "body": "b"}
        with pytest.raises(BadRequest, match="head"):
            await forge.open_pr(IID, REPO, head="feature", **kw)
        assert await _git(work, "push", "-q", "origin", "HEAD:refs/heads/feature", token=token) == 0
        with pytest.raises(BadRequest, match="No commits between main and feature"):
            await forge.open_pr(IID, REPO, head="feature", **kw)
        (work / "new.txt").write_text("new\n")
        assert await _git(work, "add", "-A") == 0
        assert await _git(work, "commit", "-qm", "add new") == 0
        assert await _git(work, "push", "-q", "origin", "HEAD:refs/heads/feature", token=token) == 0
        pr = await forge.open_pr(IID, REPO, head="feature", **kw)
        assert await forge.find_pr(IID, REPO, "feature") == pr
    finally:
        await fake.close()
