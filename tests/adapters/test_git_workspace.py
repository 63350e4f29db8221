"""GitWorkspace against a loopback git server that demands the installation token."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ghapp.core.model import Repository, Task, TaskSource, TaskState, utcnow
from ghapp.core.ports import Workspace
from ghapp.core.prompt import build_prompt
from ghapp.workspace.checkout import Checkouts
from ghapp.workspace.git import GitError, GitWorkspace, branch_name, slugify
from tests.fakes.git_http import GitHttpServer, make_bare_repo
from tests.fakes.sandbox import require_git_http_backend, require_sandbox_user

TOKEN = "ghs_" + "S3cr3tT0ken" * 3
WRONG = "ghs_" + "Wr0ngT0ken" * 3
REPO = "acme/widgets"
HOSTILE = 'zzz";echo${IFS}"hello";#'


def secret_forms(token: str) -> list[bytes]:
    """Every shape in which a token could leak: raw and Basic-encoded."""
    return [token.encode(), base64.b64encode(f"x-access-token:{token}".encode())]


@dataclass(frozen=True)
class Spawn:
    """One subprocess the test process started."""

    argv: tuple[str, ...]
    cwd: str | None
    user: int | str | None


def make_task(**fields: Any) -> Task:
    """A running task on acme/widgets issue 42."""
    base = Task(
        id=1,
        source=TaskSource.LABEL,
        repo=REPO,
        installation_id=7,
        issue_number=42,
        requester="alice",
        instructions="Fix it",
        budget_usd=5.0,
        state=TaskState.RUNNING,
        created_at=utcnow(),
        title="Fix the widget",
    )
    return replace(base, **fields)


def remote_git(bare: Path, *args: str) -> str:
    """git in the server's bare repository (as the test, not as ghapp)."""
    done = subprocess.run(
        ["git", "--git-dir", str(bare), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def as_worker(ws: Workspace, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A shell line run as the sandbox user in the checkout, like the agent would."""
    entry = pwd.getpwnam(require_sandbox_user())
    return subprocess.run(
        ["sh", "-c", script],
        cwd=ws.path,
        user=entry.pw_uid,
        group=entry.pw_gid,
        extra_groups=[],
        env={"PATH": os.environ["PATH"], "HOME": str(ws.home)},
        capture_output=True,
        text=True,
        check=check,
    )


async def worker_commit(ws: Workspace, name: str, message: str) -> None:
    """The agent's own commit, made as the sandbox user."""
    script = f"printf '%s\\n' {name} > {name} && git add -A && git commit -q -m '{message}'"
    await asyncio.to_thread(as_worker, ws, script)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Outside pytest's 0700 tmp tree, so the sandbox user can reach work/."""
    path = Path(tempfile.mkdtemp(prefix="ghapp-git-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[GitHttpServer]:
    """A loopback git server holding acme/widgets, accepting only TOKEN."""
    require_git_http_backend()
    root = tmp_path / "remote"
    make_bare_repo(root, REPO, {"README.md": "hello\n", "src/app.py": "print('hi')\n"})
    async with GitHttpServer(root, {TOKEN}) as srv:
        yield srv


@pytest.fixture
def bare(server: GitHttpServer) -> Path:
    return server.repos_root / f"{REPO}.git"


@pytest.fixture
def repo(server: GitHttpServer) -> Repository:
    return Repository(REPO, "main", server.clone_url(REPO))


@pytest.fixture
def worker() -> str:
    return require_sandbox_user()


@pytest.fixture
def vcs(data_dir: Path, worker: str) -> GitWorkspace:
    return GitWorkspace(data_dir, worker)


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[Spawn]:
    """Record the argv of every asyncio subprocess (ghapp's git and the fake's CGI)."""
    calls: list[Spawn] = []
    real = asyncio.create_subprocess_exec

    async def recording(program: Any, *args: Any, **kwargs: Any) -> Any:
        cwd = kwargs.get("cwd")
        calls.append(
            Spawn((str(program), *map(str, args)), str(cwd) if cwd else None, kwargs.get("user"))
        )
        return await real(program, *args, **kwargs)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording)
    return calls


@pytest.fixture
def ps() -> Iterator[list[bytes]]:
    """Sample every process's argv from /proc (what `ps` shows) while the test runs."""
    seen: list[bytes] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    seen.append(cmdline.read_bytes())
                except OSError:
                    pass
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    yield seen
    stop.set()
    thread.join()


# -- branch names ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("Fix the widget", "fix-the-widget"),
        (HOSTILE, "zzz-echo-ifs-hello"),
        ("Ünïcödé — café crème", "unicode-cafe-creme"),
        ("日本語のタイトル", "task"),
        ("", "task"),
        ("---", "task"),
        ("../../etc/passwd; rm -rf /", "etc-passwd-rm-rf"),
        ("a" * 39 + " b", "a" * 39),
    ],
)
def test_slug_rules(title: str, slug: str) -> None:
    assert slugify(title) == slug
    assert branch_name(7, title) == f"mc/7-{slug}"


@settings(max_examples=300)
@given(st.text())
def test_slug_is_always_a_safe_ref_component(title: str) -> None:
    slug = slugify(title)
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?", slug)


# -- prepare ----------------------------------------------------------------------------------
async def test_prepare_branches_from_main_owned_by_worker(
    vcs: GitWorkspace, repo: Repository, bare: Path, data_dir: Path, worker: str
) -> None:
    ws = await vcs.prepare(make_task(), repo, TOKEN)
    main_sha = remote_git(bare, "rev-parse", "refs/heads/main")
    assert ws.branch == "mc/42-fix-the-widget"
    assert ws.base_sha == ws.start_sha == main_sha
    assert ws.prior_commits == ()
    assert (ws.path / "README.md").read_text() == "hello\n"
    uid = pwd.getpwnam(worker).pw_uid
    for path in (ws.path, ws.home):
        st_ = path.stat()
        assert (st_.st_uid, st_.st_mode & 0o777) == (uid, 0o700)
    for root, dirs, files in os.walk(ws.path):
        for name in (*dirs, *files):
            assert os.lstat(os.path.join(root, name)).st_uid == uid
    assert re.fullmatch(r"t1-[0-9a-f]{32}", ws.path.parent.name)
    assert (data_dir / "work").stat().st_mode & 0o777 == 0o711
    assert (data_dir / "mirrors").stat().st_mode & 0o777 == 0o700
    config = as_worker(ws, "git config --list --local").stdout
    assert f"remote.origin.url={repo.clone_url}\n" in config
    assert "user.name=MissionControl\n" in config
    assert as_worker(ws, "git symbolic-ref --short HEAD").stdout.strip() == ws.branch


async def test_strict_umask_still_lets_the_worker_reach_its_checkout(
    vcs: GitWorkspace, repo: Repository
) -> None:
    old = os.umask(0o077)  # what `python -m ghapp` runs with
    try:
        ws = await vcs.prepare(make_task(), repo, TOKEN)
    finally:
        os.umask(old)
    assert ws.path.parent.stat().st_mode & 0o777 == 0o711
    await asyncio.to_thread(as_worker, ws, "echo x > x.txt")
    assert await vcs.rescue(ws) is True


@pytest.mark.parametrize(
    ("title", "branch"),
    [(HOSTILE, "mc/42-zzz-echo-ifs-hello"), ("Ünïcödé!", "mc/42-unicode"), ("", "mc/42-task")],
)
async def test_prepare_with_hostile_titles(
    vcs: GitWorkspace, repo: Repository, title: str, branch: str
) -> None:
    ws = await vcs.prepare(make_task(title=title), repo, TOKEN)
    assert ws.branch == branch
    assert as_worker(ws, "git branch --show-current").stdout.strip() == branch


@pytest.mark.parametrize("branch", ["--upload-pack=touch x", "../escape", "a..b", "x.lock"])
async def test_untrusted_stored_branch_is_refused(
    vcs: GitWorkspace, repo: Repository, branch: str
) -> None:
    with pytest.raises(GitError, match="invalid branch"):
        await vcs.prepare(make_task(branch=branch), repo, TOKEN)
    assert list((vcs.work).iterdir()) == []


async def test_missing_default_branch_is_a_git_error(vcs: GitWorkspace, repo: Repository) -> None:
    with pytest.raises(GitError, match="no branch 'trunk'"):
        await vcs.prepare(make_task(), replace(repo, default_branch="trunk"), TOKEN)
    assert list(vcs.work.iterdir()) == []


# -- the agent's work -------------------------------------------------------------------------
async def test_worker_commit_is_pushed(vcs: GitWorkspace, repo: Repository, bare: Path) -> None:
    ws = await vcs.prepare(make_task(), repo, TOKEN)
    await worker_commit(ws, "feature.txt", "Add feature")
    assert [line.split(" ", 1)[1] for line in await vcs.commits_since(ws, ws.base_sha)] == [
        "Add feature"
    ]
    await vcs.push(ws, TOKEN)
    head = as_worker(ws, "git rev-parse HEAD").stdout.strip()
    assert remote_git(bare, "rev-parse", f"refs/heads/{ws.branch}") == head
    assert remote_git(bare, "show", f"{head}:feature.txt") == "feature.txt"
    mirror = vcs.mirrors / f"{REPO}.git"
    assert remote_git(mirror, "for-each-ref", "refs/mc/") == ""


async def test_rescue_commits_a_dirty_tree(vcs: GitWorkspace, repo: Repository) -> None:
    ws = await vcs.prepare(make_task(), repo, TOKEN)
    assert await vcs.rescue(ws) is False
    await asyncio.to_thread(as_worker, ws, "echo half > half.txt && echo more >> README.md")
    assert await vcs.rescue(ws) is True
    assert as_worker(ws, "git status --porcelain").stdout == ""
    log = await vcs.commits_since(ws, ws.base_sha)
    assert len(log) == 1 and log[0].endswith(" WIP: auto-rescue")
    author = as_worker(ws, "git log -1 --format=%an").stdout.strip()
    assert author == "MissionControl"
    assert await vcs.rescue(ws) is False


async def test_commits_since_counts_newest_first(vcs: GitWorkspace, repo: Repository) -> None:
    ws = await vcs.prepare(make_task(), repo, TOKEN)
    assert await vcs.commits_since(ws, ws.base_sha) == []
    for n in range(3):
        await worker_commit(ws, f"f{n}.txt", f"Commit {n}")
    subjects = [line.split(" ", 1)[1] for line in await vcs.commits_since(ws, ws.base_sha)]
    assert subjects == ["Commit 2", "Commit 1", "Commit 0"]


async def test_warm_mirror_fetch_downloads_nothing_new(
    vcs: GitWorkspace, server: GitHttpServer, repo: Repository
) -> None:
    big = Repository("acme/big", "main", server.clone_url("acme/big"))
    make_bare_repo(server.repos_root, "acme/big", {"README.md": "big\n"}, size_mb=2)
    stats = server.stats.repo("acme/big")
    await vcs.prepare(make_task(repo="acme/big"), big, TOKEN)
    assert stats.packs_sent == 1 and stats.upload_pack_bytes > 2_000_000
    cold = stats.upload_pack_bytes
    await vcs.prepare(make_task(repo="acme/big", issue_number=43), big, TOKEN)
    assert stats.packs_sent == 1
    assert stats.upload_pack_bytes - cold < 10_000
    # A new upstream commit arrives as a small incremental pack, not the whole repository.
    scratch = server.repos_root / "scratch"
    await asyncio.to_thread(
        subprocess.run,
        f"git clone -q {server.repos_root / 'acme/big.git'} {scratch} && cd {scratch} && "
        "echo new > new.txt && git add new.txt && "
        "git -c user.name=t -c user.email=t@t commit -qm new && git push -q origin HEAD:main",
        shell=True,
        check=True,
    )
    warm = stats.upload_pack_bytes
    ws = await vcs.prepare(make_task(repo="acme/big", issue_number=44), big, TOKEN)
    assert stats.packs_sent == 2 and stats.upload_pack_bytes - warm < 50_000
    assert (ws.path / "new.txt").read_text() == "new\n"


async def test_retry_reuses_existing_remote_branch(
    vcs: GitWorkspace, repo: Repository, bare: Path
) -> None:
    first = await vcs.prepare(make_task(), repo, TOKEN)
    await worker_commit(first, "one.txt", "First attempt")
    await vcs.push(first, TOKEN)
    pushed = remote_git(bare, "rev-parse", f"refs/heads/{first.branch}")
    await vcs.cleanup(first)

    retry = await vcs.prepare(make_task(branch=first.branch, attempt=2, title="x"), repo, TOKEN)
    assert retry.branch == first.branch
    assert retry.start_sha == pushed
    assert retry.base_sha == remote_git(bare, "rev-parse", "refs/heads/main")
    assert [c.split(" ", 1)[1] for c in retry.prior_commits] == ["First attempt"]
    assert await vcs.commits_since(retry, retry.start_sha) == []
    await worker_commit(retry, "two.txt", "Second attempt")
    await vcs.push(retry, TOKEN)
    log = remote_git(bare, "log", "--format=%s", f"refs/heads/{first.branch}")
    assert log.splitlines()[:2] == ["Second attempt", "First attempt"]


async def test_cleanup_removes_the_task_dir(vcs: GitWorkspace, repo: Repository) -> None:
    ws = await vcs.prepare(make_task(), repo, TOKEN)
    assert ws.path.parent.is_dir()
    await vcs.cleanup(ws)
    assert not ws.path.parent.exists()
    assert list(vcs.work.iterdir()) == []
    with pytest.raises(GitError, match="unknown workspace"):
        await vcs.push(ws, TOKEN)


async def test_dev_mode_runs_as_the_service_user(
    data_dir: Path, repo: Repository, bare: Path
) -> None:
    vcs = GitWorkspace(data_dir, None, author_name="Dev", author_email="dev@example.invalid")
    ws = await vcs.prepare(make_task(), repo, TOKEN)
    assert ws.path.stat().st_uid == os.geteuid()
    (ws.path / "dev.txt").write_text("dev\n")
    assert await vcs.rescue(ws) is True
    await vcs.push(ws, TOKEN)
    assert remote_git(bare, "log", "-1", "--format=%an %s", ws.branch) == "Dev WIP: auto-rescue"


# -- security -----------------------------------------------------------------------------------
async def test_token_never_on_disk_in_argv_or_logs(
    vcs: GitWorkspace,
    repo: Repository,
    data_dir: Path,
    spawned: list[Spawn],
    ps: list[bytes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    ws = await vcs.prepare(make_task(), repo, TOKEN)
    handed_over = len(spawned)
    await worker_commit(ws, "a.txt", "Agent commit")
    await asyncio.to_thread(as_worker, ws, "echo left > left.txt")
    assert await vcs.rescue(ws)
    assert await vcs.commits_since(ws, ws.base_sha)
    await vcs.push(ws, TOKEN)
    after_push = len(spawned)
    await vcs.prepare(make_task(issue_number=43), repo, TOKEN)  # warm fetch too

    forms = secret_forms(TOKEN)
    files = [Path(r) / f for r, _, fs in os.walk(data_dir) for f in fs]
    assert any(p.name == "config" and "mirrors" in p.parts for p in files)
    assert any(p.name == "config" and "repo" in p.parts for p in files)
    for path in files:
        if not path.is_symlink():
            data = path.read_bytes()
            assert not any(form in data for form in forms), path
    git_calls = [s for s in spawned if s.argv[0].endswith("git")]
    assert len(git_calls) > 10
    for call in spawned:
        joined = "\0".join(call.argv).encode()
        assert not any(form in joined for form in forms), call.argv
    assert any(b"git" in line for line in ps)
    assert not any(form in line for line in ps for form in forms)
    assert TOKEN not in caplog.text and forms[1].decode() not in caplog.text
    # Once handed over, ghapp's git never runs as itself inside the worker's checkout.
    in_checkout = [s for s in spawned[handed_over:after_push] if s.cwd == str(ws.path)]
    assert len(in_checkout) == 4
    assert all(call.user == pwd.getpwnam(vcs.worker_user or "").pw_uid for call in in_checkout)


async def test_rejected_credentials_fail_fast_with_a_scrubbed_error(
    vcs: GitWorkspace, repo: Repository
) -> None:
    started = time.monotonic()
    with pytest.raises(GitError) as cold:
        await vcs.prepare(make_task(), repo, WRONG)
    ws = await vcs.prepare(make_task(), repo, TOKEN)
    await worker_commit(ws, "a.txt", "Agent commit")
    with pytest.raises(GitError) as rejected:
        await vcs.push(ws, WRONG)
    assert time.monotonic() - started < 30
    for err in (cold.value, rejected.value):
        text = f"{err}\n{err!r}\n{err.__cause__!r}"
        assert "Authentication failed" in text
        assert not any(form.decode() in text for form in secret_forms(WRONG))
        assert not any(form.decode() in text for form in secret_forms(TOKEN))


async def test_sandbox_user_cannot_list_work_nor_read_mirrors(
    vcs: GitWorkspace, repo: Repository
) -> None:
    ws = await vcs.prepare(make_task(), repo, TOKEN)
    mirror = vcs.mirrors / f"{REPO}.git"
    assert as_worker(ws, f"ls {vcs.work}", check=False).returncode != 0
    assert as_worker(ws, f"ls {ws.path.parent}", check=False).returncode != 0
    assert as_worker(ws, f"cat {mirror}/config", check=False).returncode != 0
    assert as_worker(ws, f"git ls-remote {mirror}", check=False).returncode != 0
    assert as_worker(ws, "ls . && touch ok.txt").returncode == 0


async def test_planted_hooks_and_config_never_run_as_ghapp(
    vcs: GitWorkspace, repo: Repository, bare: Path
) -> None:
    ws = await vcs.prepare(make_task(), repo, TOKEN)
    marker = ws.home / "ran-as"
    spy = ws.home / "spy.sh"
    script = (
        f"printf '#!/bin/sh\\nid -u >> {marker}\\n' > {spy} && chmod +x {spy} && "
        f"git config core.fsmonitor {spy} && git config core.hooksPath {ws.home} && "
        f"git config uploadpack.packObjectsHook {spy} && "
        "git config remote.origin.url http://127.0.0.1:9/evil.git && "
        f"for h in pre-commit post-commit pre-push reference-transaction; do "
        f"cp {spy} {ws.home}/$h; done && echo dirty > dirty.txt && "
        # A clean filter cannot be switched off by name: it runs on `git add`, as the worker.
        f"git config filter.spy.clean '{spy} && cat' && echo '* filter=spy' > .gitattributes"
    )
    await asyncio.to_thread(as_worker, ws, script)
    assert await vcs.rescue(ws)
    assert len(await vcs.commits_since(ws, ws.base_sha)) == 1
    await vcs.push(ws, TOKEN)
    head = as_worker(ws, "git rev-parse HEAD").stdout.strip()
    assert remote_git(bare, "rev-parse", f"refs/heads/{ws.branch}") == head
    worker_uid = str(pwd.getpwnam(vcs.worker_user or "").pw_uid)
    assert set(marker.read_text().split()) == {worker_uid}


async def test_push_cannot_exfiltrate_objects_the_worker_cannot_read(
    vcs: GitWorkspace, server: GitHttpServer, repo: Repository, bare: Path
) -> None:
    secret = Repository("acme/secret", "main", server.clone_url("acme/secret"))
    make_bare_repo(server.repos_root, "acme/secret", {"SECRET.md": "classified\n"})
    await vcs.prepare(make_task(repo="acme/secret"), secret, TOKEN)
    secret_sha = remote_git(server.repos_root / "acme/secret.git", "rev-parse", "main")
    ws = await vcs.prepare(make_task(), repo, TOKEN)
    objects = vcs.mirrors / "acme/secret.git/objects"
    await asyncio.to_thread(
        as_worker,
        ws,
        f"echo {objects} >> .git/objects/info/alternates && "
        f"echo {secret_sha} > .git/refs/heads/{ws.branch}",
    )
    with pytest.raises(GitError):
        await vcs.push(ws, TOKEN)
    branches = remote_git(bare, "for-each-ref", "--format=%(refname)", "refs/heads/")
    assert branches == "refs/heads/main"


# -- a killed ghapp loses no work: the next attempt resumes the leftover checkout -------
def subjects(lines: Sequence[str]) -> list[str]:
    """The subjects of `%h %s` log lines."""
    return [line.split(" ", 1)[1] for line in lines]


def head(ws: Workspace) -> str:
    """The checkout's HEAD, read as the worker."""
    return as_worker(ws, "git rev-parse HEAD").stdout.strip()


def push_upstream(remote: Path, branch: str, name: str) -> str:
    """Someone else pushes a commit to `branch` of the remote; returns its sha."""
    scratch = remote.parent / f"scratch-{secrets.token_hex(4)}"
    subprocess.run(
        f"git clone -q -b {branch} {remote} {scratch} && cd {scratch} && echo x > {name} && "
        f"git add {name} && git -c user.name=t -c user.email=t@t commit -qm {name} && "
        f"git push -q origin HEAD:{branch}",
        shell=True,
        check=True,
    )
    return remote_git(remote, "rev-parse", f"refs/heads/{branch}")


def mirror_refs(ws_vcs: GitWorkspace) -> str:
    return remote_git(ws_vcs.mirrors / f"{REPO}.git", "for-each-ref", "refs/mc/")


async def test_killed_attempt_is_resumed_and_pushed(
    vcs: GitWorkspace,
    data_dir: Path,
    repo: Repository,
    bare: Path,
    worker: str,
    spawned: list[Spawn],
) -> None:
    first = await vcs.prepare(make_task(), repo, TOKEN)
    await worker_commit(first, "one.txt", "First commit")
    await worker_commit(first, "two.txt", "Second commit")
    await asyncio.to_thread(as_worker, first, "echo wip > wip.txt && echo more >> README.md")
    other = await vcs.prepare(make_task(id=2, issue_number=43, title="Other"), repo, TOKEN)
    await worker_commit(other, "other.txt", "Other task")
    await asyncio.to_thread(as_worker, other, "echo dirty > dirty.txt")
    other_head = head(other)
    main = remote_git(bare, "rev-parse", "refs/heads/main")

    # kill -9: nothing pushed or cleaned up; a new process runs the task's next attempt.
    restarted = GitWorkspace(data_dir, worker)
    task = make_task(attempt=2, branch=first.branch)
    spawned.clear()
    ws = await restarted.prepare(task, repo, TOKEN)

    assert ws.branch == first.branch and ws.base_sha == main
    assert subjects(ws.prior_commits) == ["WIP: auto-rescue", "Second commit", "First commit"]
    assert ws.start_sha == head(ws) != main
    assert f"Continue from {ws.start_sha[:12]}" in build_prompt(task, ws)
    for name, text in (("one.txt", "one.txt\n"), ("two.txt", "two.txt\n"), ("wip.txt", "wip\n")):
        assert (ws.path / name).read_text() == text
    assert (ws.path / "README.md").read_text() == "hello\nmore\n"
    assert as_worker(ws, "git status --porcelain").stdout == ""
    assert as_worker(ws, "git log -1 --format=%an").stdout.strip() == "MissionControl"
    uid = pwd.getpwnam(worker).pw_uid
    assert ws.path.stat().st_uid == uid and ws.home.stat().st_uid == uid
    assert re.fullmatch(r"t1-[0-9a-f]{32}", ws.path.parent.name)
    assert not first.path.parent.exists()
    assert mirror_refs(restarted) == ""
    # git ran inside the leftover only as the worker.
    in_leftover = [s for s in spawned if s.cwd == str(first.path)]
    assert len(in_leftover) >= 3 and all(s.user == uid for s in in_leftover)
    # Another task's leftover is none of this attempt's business.
    assert other.path.parent.is_dir()
    assert head(other) == other_head
    assert as_worker(other, "git status --porcelain").stdout == "?? dirty.txt\n"

    assert len(await restarted.commits_since(ws, ws.base_sha)) == 3
    await restarted.push(ws, TOKEN)
    assert remote_git(bare, "rev-parse", f"refs/heads/{ws.branch}") == ws.start_sha
    log = remote_git(bare, "log", "--format=%s", f"refs/heads/{ws.branch}")
    assert log.splitlines() == [
        "WIP: auto-rescue",
        "Second commit",
        "First commit",
        "Initial commit",
    ]
    assert remote_git(bare, "show", f"{ws.branch}:wip.txt") == "wip"


async def test_commits_beyond_a_pushed_branch_are_resumed(
    vcs: GitWorkspace, data_dir: Path, repo: Repository, bare: Path, worker: str
) -> None:
    first = await vcs.prepare(make_task(), repo, TOKEN)
    await worker_commit(first, "one.txt", "Pushed")
    await vcs.push(first, TOKEN)
    await worker_commit(first, "two.txt", "Not pushed")
    local = head(first)

    restarted = GitWorkspace(data_dir, worker)
    ws = await restarted.prepare(make_task(attempt=2, branch=first.branch), repo, TOKEN)
    assert ws.start_sha == local
    assert subjects(ws.prior_commits) == ["Not pushed", "Pushed"]
    assert not first.path.parent.exists()
    await restarted.push(ws, TOKEN)
    assert remote_git(bare, "rev-parse", f"refs/heads/{ws.branch}") == ws.start_sha


async def test_leftover_is_resumed_after_upstream_moved_on(
    vcs: GitWorkspace, data_dir: Path, repo: Repository, bare: Path, worker: str
) -> None:
    old_main = remote_git(bare, "rev-parse", "refs/heads/main")
    first = await vcs.prepare(make_task(), repo, TOKEN)
    await worker_commit(first, "one.txt", "Local only")
    leftover_tip = head(first)
    push_upstream(bare, "main", "upstream.txt")

    restarted = GitWorkspace(data_dir, worker)
    ws = await restarted.prepare(make_task(attempt=2), repo, TOKEN)
    assert ws.start_sha == leftover_tip and ws.base_sha == old_main
    assert subjects(ws.prior_commits) == ["Local only"]
    await restarted.push(ws, TOKEN)
    assert remote_git(bare, "rev-parse", f"refs/heads/{ws.branch}") == leftover_tip


async def test_leftover_without_new_work_is_removed(
    vcs: GitWorkspace, data_dir: Path, repo: Repository, bare: Path, worker: str
) -> None:
    first = await vcs.prepare(make_task(), repo, TOKEN)
    never = vcs.work / f"t1-{secrets.token_hex(16)}"  # a prepare killed before hand-over
    (never / "home").mkdir(parents=True)

    restarted = GitWorkspace(data_dir, worker)
    ws = await restarted.prepare(make_task(attempt=2), repo, TOKEN)
    assert ws.start_sha == ws.base_sha == remote_git(bare, "rev-parse", "refs/heads/main")
    assert ws.prior_commits == ()
    assert not first.path.parent.exists() and not never.exists()
    assert sorted(restarted.work.iterdir()) == [ws.path.parent]


async def test_diverged_leftover_is_kept_and_logged(
    vcs: GitWorkspace,
    data_dir: Path,
    repo: Repository,
    bare: Path,
    worker: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = await vcs.prepare(make_task(), repo, TOKEN)
    await worker_commit(first, "one.txt", "Pushed")
    await vcs.push(first, TOKEN)
    await worker_commit(first, "two.txt", "Local only")
    local = head(first)
    upstream = push_upstream(bare, first.branch, "theirs.txt")

    caplog.set_level(logging.INFO)
    restarted = GitWorkspace(data_dir, worker)
    ws = await restarted.prepare(make_task(attempt=2, branch=first.branch), repo, TOKEN)
    assert ws.start_sha == upstream
    assert subjects(ws.prior_commits) == ["theirs.txt", "Pushed"]
    assert head(first) == local
    assert "diverged" in caplog.text and str(first.path.parent) in caplog.text
    assert mirror_refs(restarted) == ""


async def test_unsalvageable_leftover_does_not_fail_the_task(
    vcs: GitWorkspace,
    data_dir: Path,
    repo: Repository,
    bare: Path,
    worker: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = await vcs.prepare(make_task(), repo, TOKEN)
    await worker_commit(first, "one.txt", "Unreadable")
    await asyncio.to_thread(as_worker, first, "chmod 000 .git/objects")

    restarted = GitWorkspace(data_dir, worker)
    ws = await restarted.prepare(make_task(attempt=2), repo, TOKEN)
    assert ws.start_sha == remote_git(bare, "rev-parse", "refs/heads/main")
    assert ws.prior_commits == ()
    assert first.path.is_dir()
    assert f"could not salvage {first.path.parent}" in caplog.text
    assert mirror_refs(restarted) == ""


async def test_commits_are_salvaged_even_when_the_rescue_fails(
    vcs: GitWorkspace,
    data_dir: Path,
    repo: Repository,
    worker: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = await vcs.prepare(make_task(), repo, TOKEN)
    await worker_commit(first, "one.txt", "Committed")
    # The agent was killed inside `git commit`: a stale index.lock blocks the rescue.
    await asyncio.to_thread(as_worker, first, "echo wip > wip.txt && touch .git/index.lock")

    restarted = GitWorkspace(data_dir, worker)
    ws = await restarted.prepare(make_task(attempt=2), repo, TOKEN)
    assert subjects(ws.prior_commits) == ["Committed"]
    assert (ws.path / "one.txt").exists() and not (ws.path / "wip.txt").exists()
    assert (first.path / "wip.txt").read_text() == "wip\n"
    assert "uncommitted work could not be rescued" in caplog.text
    assert str(first.path.parent) in caplog.text


async def test_leftover_of_another_branch_with_the_same_id_is_left_alone(
    vcs: GitWorkspace,
    data_dir: Path,
    repo: Repository,
    worker: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = await vcs.prepare(make_task(), repo, TOKEN)
    await worker_commit(first, "one.txt", "Old database task 1")

    restarted = GitWorkspace(data_dir, worker)
    ws = await restarted.prepare(make_task(issue_number=99, title="New"), repo, TOKEN)
    assert ws.prior_commits == () and not (ws.path / "one.txt").exists()
    assert first.path.is_dir() and as_worker(first, "git status --porcelain").stdout == ""
    assert f"leaving {first.path.parent} alone" in caplog.text


async def test_failing_to_start_from_salvage_falls_back_and_keeps_the_leftover(
    vcs: GitWorkspace,
    data_dir: Path,
    repo: Repository,
    bare: Path,
    worker: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = await vcs.prepare(make_task(), repo, TOKEN)
    await worker_commit(first, "one.txt", "Committed")
    real = Checkouts._clone

    async def broken(self: Checkouts, *args: Any) -> Any:
        if args[-1] is not None:
            raise GitError("simulated")
        return await real(self, *args)

    monkeypatch.setattr(Checkouts, "_clone", broken)
    restarted = GitWorkspace(data_dir, worker)
    ws = await restarted.prepare(make_task(attempt=2), repo, TOKEN)
    assert ws.start_sha == remote_git(bare, "rev-parse", "refs/heads/main")
    assert first.path.is_dir() and head(first) != ws.start_sha
    assert sorted(restarted.work.iterdir()) == sorted([first.path.parent, ws.path.parent])
    assert "could not start from salvaged work" in caplog.text
    assert mirror_refs(restarted) == ""


async def test_dev_mode_salvages_as_the_service_user(
    data_dir: Path, repo: Repository, bare: Path
) -> None:
    dev = GitWorkspace(data_dir, None)
    first = await dev.prepare(make_task(), repo, TOKEN)
    (first.path / "dev.txt").write_text("dev\n")

    restarted = GitWorkspace(data_dir, None)
    ws = await restarted.prepare(make_task(attempt=2), repo, TOKEN)
    assert subjects(ws.prior_commits) == ["WIP: auto-rescue"]
    assert (ws.path / "dev.txt").read_text() == "dev\n"
    assert not first.path.parent.exists()
