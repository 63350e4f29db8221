"""Git smart HTTP on loopback: `git http-backend` behind aiohttp, with GitHub-style auth."""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from aiohttp import web

TOKEN_USER = "x-access-token"
_CHUNK = 64 * 1024
_PAD_FILE_MB = 1


@dataclass
class RepoStats:
    """What one repository served; lets a test prove a warm fetch downloads nothing."""

    upload_pack_requests: int = 0
    upload_pack_bytes: int = 0
    packs_sent: int = 0
    receive_pack_requests: int = 0


@dataclass
class GitStats:
    """Per-repository counters, keyed by "owner/repo"."""

    repos: dict[str, RepoStats] = field(default_factory=dict)

    def repo(self, full_name: str) -> RepoStats:
        """Counters of one repository, created on first use."""
        return self.repos.setdefault(full_name, RepoStats())


_STATS: dict[Path, GitStats] = {}


def git_stats(repos_root: Path) -> GitStats:
    """The counters shared by every route set serving this repos_root."""
    return _STATS.setdefault(repos_root.resolve(), GitStats())


def _basic_password(header: str | None) -> str | None:
    """The password of a Basic header for the x-access-token user, else None."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return password if sep and user == TOKEN_USER and password else None


def _unauthorized() -> web.Response:
    """GitHub's answer to a missing or bad credential."""
    return web.Response(
        status=401,
        text="Invalid username or token.\n",
        headers={"WWW-Authenticate": 'Basic realm="GitHub"'},
    )


@dataclass
class PushRules:
    """What real GitHub refuses in a push; the pre-receive hook enforces it, all or nothing."""

    workflows: bool = False  # the app's `workflows` permission
    protected: set[str] = field(default_factory=set)  # branch name patterns (shell globs)
    max_file_bytes: int = 100 * 1024 * 1024

    def env(self) -> dict[str, str]:
        return {
            "FAKE_GH_WORKFLOWS": "1" if self.workflows else "0",
            "FAKE_GH_PROTECTED": "\n".join(sorted(self.protected)),
            "FAKE_GH_MAX_FILE": str(self.max_file_bytes),
        }


# GitHub's own wording for each refusal (pre-receive output goes back as "remote: ...").
PRE_RECEIVE = r"""#!/bin/sh
zero=0000000000000000000000000000000000000000
status=0
while read -r old new ref; do
    branch=${ref#refs/heads/}
    protected=0
    for pattern in $FAKE_GH_PROTECTED; do
        case "$branch" in $pattern) protected=1 ;; esac
    done
    if [ $protected = 1 ]; then
        echo "error: GH006: Protected branch update failed for $ref."
        status=1
        continue
    fi
    [ "$new" = "$zero" ] && continue
    if [ "$old" = "$zero" ]; then range="$new --not --all"; else range="$old..$new"; fi
    if [ "$FAKE_GH_WORKFLOWS" != 1 ]; then
        for commit in $(git rev-list $range); do
            git diff-tree --no-commit-id --name-only -r --root "$commit"
        done | grep '^\.github/workflows/' | sort -u | while read -r path; do
            echo "refusing to allow a GitHub App to create or update workflow \`$path\`"\
                " without \`workflows\` permission"
            exit 1
        done || status=1
    fi
    big=$(git rev-list --objects $range \
        | git cat-file --batch-check='%(objecttype) %(objectsize) %(rest)' \
        | awk -v max="$FAKE_GH_MAX_FILE" \
            '$1 == "blob" && $2 > max { print $3 " is " $2 " bytes" }')
    if [ -n "$big" ]; then
        echo "$big" | sed "s/^/error: File /; s/\$/; this exceeds GitHub's file size limit/"
        echo "error: GH001: Large files detected. You may want to try Git Large File Storage."
        status=1
    fi
done
exit $status
"""


def _hooks(repos_root: Path) -> Path:
    """The hooks directory every served repository uses (written once per root)."""
    hooks = repos_root / ".fake-hooks"
    script = hooks / "pre-receive"
    if not script.exists():
        hooks.mkdir(exist_ok=True)
        script.write_text(PRE_RECEIVE)
        script.chmod(0o755)
    return hooks


def _cgi_env(
    request: web.Request, repos_root: Path, path_info: str, rules: PushRules
) -> dict[str, str]:
    """The CGI environment for git http-backend; the request body arrives decoded."""
    env = {
        **rules.env(),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_PROJECT_ROOT": str(repos_root),
        "GIT_HTTP_EXPORT_ALL": "1",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": "http.receivepack",
        "GIT_CONFIG_VALUE_0": "true",
        "GIT_CONFIG_KEY_1": "core.hooksPath",
        "GIT_CONFIG_VALUE_1": str(_hooks(repos_root)),
        "PATH_INFO": path_info,
        "QUERY_STRING": request.query_string,
        "REQUEST_METHOD": request.method,
        "CONTENT_TYPE": request.headers.get("Content-Type", ""),
        "REMOTE_USER": TOKEN_USER,
        "REMOTE_ADDR": request.remote or "127.0.0.1",
    }
    if proto := request.headers.get("Git-Protocol"):
        env["HTTP_GIT_PROTOCOL"] = proto
    return env


async def _feed(proc: asyncio.subprocess.Process, request: web.Request) -> None:
    """Stream the (already de-chunked, decompressed) body into the CGI, then close it."""
    assert proc.stdin is not None
    try:
        async for chunk in request.content.iter_chunked(_CHUNK):
            proc.stdin.write(chunk)
            await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        proc.stdin.close()


async def _read_cgi_headers(stdout: asyncio.StreamReader) -> tuple[int, list[tuple[str, str]]]:
    """Status and headers of a CGI response, up to the blank line."""
    status = 200
    headers: list[tuple[str, str]] = []
    while True:
        line = (await stdout.readline()).decode("latin-1").rstrip("\r\n")
        if not line:
            return status, headers
        name, _, value = line.partition(":")
        if name.strip().lower() == "status":
            status = int(value.strip().split()[0])
        else:
            headers.append((name.strip(), value.strip()))


def git_routes(
    repos_root: Path,
    check_token: Callable[[str, str], bool],
    rules: PushRules | None = None,
) -> list[web.RouteDef]:
    """Routes serving /{owner}/{repo}.git/...; every request needs a token for that repo."""
    root = repos_root.resolve()
    rules = rules or PushRules()
    stats = git_stats(root)

    async def handle(request: web.Request) -> web.StreamResponse:
        owner, name = request.match_info["owner"], request.match_info["repo"]
        full_name = f"{owner}/{name}"
        password = _basic_password(request.headers.get("Authorization"))
        if password is None or not check_token(password, full_name):
            return _unauthorized()
        if not (root / owner / f"{name}.git").is_dir():
            return web.Response(status=404, text="Repository not found.\n")
        tail = request.match_info["tail"]
        counters = stats.repo(full_name)
        upload = tail == "git-upload-pack"
        if upload:
            counters.upload_pack_requests += 1
        elif tail == "git-receive-pack":
            counters.receive_pack_requests += 1
        proc = await asyncio.create_subprocess_exec(
            "git",
            "http-backend",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=_cgi_env(request, root, f"/{owner}/{name}.git/{tail}", rules),
        )
        feeder = asyncio.create_task(_feed(proc, request))
        assert proc.stdout is not None
        try:
            status, headers = await _read_cgi_headers(proc.stdout)
            response = web.StreamResponse(status=status)
            for key, value in headers:
                response.headers.add(key, value)
            await response.prepare(request)
            tail_bytes = b""
            while chunk := await proc.stdout.read(_CHUNK):
                if upload:
                    counters.upload_pack_bytes += len(chunk)
                    window = tail_bytes + chunk
                    if b"PACK" in window and b"PACK" not in tail_bytes:
                        counters.packs_sent += 1
                    tail_bytes = window[-3:]
                await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            await feeder
            await proc.wait()

    return [web.route("*", "/{owner}/{repo}.git/{tail:.*}", handle)]


def _git(*args: str, cwd: Path) -> None:
    """Run git for fixture building with a fixed identity; raise on failure."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Fixture",
        "GIT_AUTHOR_EMAIL": "fixture@example.invalid",
        "GIT_COMMITTER_NAME": "Fixture",
        "GIT_COMMITTER_EMAIL": "fixture@example.invalid",
    }
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def make_bare_repo(
    repos_root: Path,
    full_name: str,
    files: dict[str, str],
    default_branch: str = "main",
    size_mb: float = 0,
) -> Path:
    """A bare repo with one commit of `files`, padded with random data up to size_mb."""
    bare = repos_root / f"{full_name}.git"
    bare.parent.mkdir(parents=True, exist_ok=True)
    _git("init", "--bare", "-q", "-b", default_branch, str(bare), cwd=repos_root)
    scratch = Path(tempfile.mkdtemp(prefix="mkrepo-"))
    try:
        _git("init", "-q", "-b", default_branch, ".", cwd=scratch)
        for rel, text in files.items():
            target = scratch / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        remaining = int(size_mb * 1024 * 1024)
        index = 0
        while remaining > 0:
            size = min(remaining, _PAD_FILE_MB * 1024 * 1024)
            pad = scratch / "padding" / f"blob-{index:04d}.bin"
            pad.parent.mkdir(exist_ok=True)
            pad.write_bytes(os.urandom(size))
            remaining -= size
            index += 1
        _git("add", "-A", cwd=scratch)
        _git("commit", "-q", "-m", "Initial commit", cwd=scratch)
        _git("push", "-q", str(bare), f"HEAD:refs/heads/{default_branch}", cwd=scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return bare


def push_files(
    repos_root: Path, full_name: str, files: dict[str, str], branch: str = "main"
) -> str:
    """A maintainer's commit of `files` on top of `branch` (created from HEAD if new); its sha."""
    bare = repos_root / f"{full_name}.git"
    scratch = Path(tempfile.mkdtemp(prefix="push-"))
    try:
        _git("clone", "-q", str(bare), ".", cwd=scratch)
        _git(
            "checkout",
            "-q",
            "-B",
            branch,
            *([f"origin/{branch}"] if _has(scratch, branch) else []),
            cwd=scratch,
        )
        for rel, text in files.items():
            target = scratch / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        _git("add", "-A", cwd=scratch)
        _git("commit", "-q", "-m", f"Change {', '.join(files)}", cwd=scratch)
        _git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=scratch)
        sha = subprocess.run(
            ["git", "-C", str(scratch), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        return sha.stdout.strip()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _has(clone: Path, branch: str) -> bool:
    ref = f"refs/remotes/origin/{branch}"
    done = subprocess.run(
        ["git", "-C", str(clone), "rev-parse", "-q", "--verify", ref], capture_output=True
    )
    return done.returncode == 0


class GitHttpServer:
    """A standalone loopback git server accepting any token from a fixed set."""

    def __init__(self, repos_root: Path, tokens: set[str]) -> None:
        self.repos_root = repos_root
        self.tokens = tokens
        self.stats = git_stats(repos_root)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> str:
        """Listen on an ephemeral loopback port; returns the base URL."""
        app = web.Application()
        app.add_routes(git_routes(self.repos_root, lambda token, _repo: token in self.tokens))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    def clone_url(self, full_name: str) -> str:
        """The https-style clone URL of a repository, without credentials."""
        return f"{self.base_url}/{full_name}.git"

    async def close(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> GitHttpServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
