"""Mirrors, private task checkouts, rescue and push; the installation token lives only in env."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import stat
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ghapp.core.model import GhappError, Repository, Task
from ghapp.core.ports import Workspace
from ghapp.workspace.salvage import Leftover, mark_handed_over, scan, task_dir_name

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_BRANCH_RE = re.compile(r"[A-Za-z0-9_./-]+")
_URL_CREDENTIALS_RE = re.compile(r"(://)[^/@\s]+@")
_OUTBOX = "refs/mc/out/"
_SALVAGE = "refs/mc/salvage/"
_SALVAGED = "refs/mc/salvaged"
_RESCUE_MESSAGE = "WIP: auto-rescue"
_STDERR_TAIL = 2000


class GitError(GhappError):
    """A git step failed; the message is scrubbed of credentials and safe to show."""


def slugify(title: str, max_len: int = 40) -> str:
    """Untrusted title -> [a-z0-9-]{1,max_len}, so it is safe in a ref and a shell."""
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len].strip("-")
    return slug or "task"


def branch_name(issue_number: int, title: str) -> str:
    """The task branch: mc/<issue>-<slug>."""
    return f"mc/{issue_number}-{slugify(title)}"


def _basic_credentials(token: str) -> str:
    """base64("x-access-token:TOKEN"): GitHub takes the token as a Basic password."""
    return base64.b64encode(f"x-access-token:{token}".encode()).decode()


def scrub(text: str, secret_values: Sequence[str]) -> str:
    """Remove every secret, its Basic encoding, and URL credentials from a message."""
    for value in secret_values:
        if value:
            text = text.replace(_basic_credentials(value), "***")
            text = text.replace(value, "***")
    return _URL_CREDENTIALS_RE.sub(r"\1***@", text)


@dataclass(frozen=True)
class _Checkout:
    """What ghapp, not the worker-writable checkout, knows about a workspace."""

    task_dir: Path
    mirror: Path
    clone_url: str


@dataclass
class _Salvage:
    """What the leftovers of earlier attempts gave a new checkout."""

    start: str | None = None  # mirror ref of the salvaged tip to build on
    refs: list[str] = field(default_factory=list)  # salvage refs to drop from the mirror
    done: list[Path] = field(default_factory=list)  # leftovers whose work is all saved


class GitWorkspace:
    """The Vcs port on local git: one mirror per repository, one checkout per attempt.

    Git runs as ghapp only in ghapp's own repositories (mirrors, fresh clones before
    hand-over). Inside a worker-owned checkout git runs as the worker, so hooks or
    config the agent planted never execute with ghapp's privileges; pushing goes
    checkout -> mirror (upload-pack as the worker) -> forge (as ghapp, token in env).

    A task directory is ``work/t<task id>-<random>``, so when a killed ghapp leaves one
    behind, the next attempt of the task salvages its commits and uncommitted work.
    """

    def __init__(
        self,
        data_dir: Path,
        worker_user: str | None,
        *,
        git_bin: str = "git",
        author_name: str = "MissionControl",
        author_email: str = "mc@users.noreply.github.com",
        network_timeout_s: float = 900.0,
        local_timeout_s: float = 120.0,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.mirrors = self.data_dir / "mirrors"
        self.work = self.data_dir / "work"
        self.worker_user = worker_user
        self._git = shutil.which(git_bin) or git_bin
        self._author = (author_name, author_email)
        self._net_timeout = network_timeout_s
        self._local_timeout = local_timeout_s
        self._ids: tuple[int, int] | None = None
        self._setpriv = ""
        if worker_user is not None:
            entry = pwd.getpwnam(worker_user)
            self._ids = (entry.pw_uid, entry.pw_gid)
            self._setpriv = shutil.which("setpriv") or ""
            if not self._setpriv:
                raise GitError("setpriv (util-linux) is needed to read checkouts as the worker")
        self._locks: dict[Path, asyncio.Lock] = {}
        self._open: dict[Path, _Checkout] = {}

    @property
    def author_email(self) -> str:
        """The email of ghapp's commits: how a head ghapp pushed is told from a person's."""
        return self._author[1]

    # -- the Vcs port -------------------------------------------------------------------
    async def prepare(
        self, task: Task, repo: Repository, token: str, *, fetch: bool = True
    ) -> Workspace:
        """Fetch the mirror (unless just fetched), then clone a private checkout on the branch.

        Work an earlier attempt of the task left in its checkout (ghapp was killed) is
        salvaged first and the new checkout starts from it.
        """
        self._ensure_layout()
        mirror = await self._sync_mirror(repo, token, fetch=fetch)
        branch = task.branch or branch_name(task.issue_number, task.title)
        await self._check_branch(branch)
        salvage = await self._salvage(task, repo, mirror, branch)
        try:
            try:
                ws, task_dir = await self._new_checkout(task, mirror, repo, branch, salvage.start)
            except GitError:
                if salvage.start is None:
                    raise
                log.exception(
                    "task %s: could not start from salvaged work; starting without it, keeping %s",
                    task.id,
                    ", ".join(map(str, salvage.done)),
                )
                salvage.done.clear()
                ws, task_dir = await self._new_checkout(task, mirror, repo, branch, None)
        finally:
            if salvage.refs:
                async with self._lock(mirror):
                    for ref in salvage.refs:
                        await self._run(["update-ref", "-d", ref], cwd=mirror, check=False)
        self._open[ws.path] = _Checkout(task_dir, mirror, repo.clone_url)
        for old in salvage.done:
            await asyncio.to_thread(shutil.rmtree, old, True)
            log.info("task %s: removed %s, its work is saved", task.id, old)
        log.info("workspace ready for %s on %s at %s", repo.full_name, branch, ws.start_sha[:12])
        return ws

    async def rescue(self, ws: Workspace) -> bool:
        """Commit what the agent left uncommitted, so no work is lost on the way to a PR."""
        status = await self._in_checkout(ws, "status", "--porcelain", "--untracked-files=all")
        if not status.strip():
            return False
        await self._in_checkout(ws, "add", "-A")
        await self._in_checkout(ws, "commit", "--quiet", "--no-verify", "-m", _RESCUE_MESSAGE)
        log.info("rescued uncommitted work in %s", ws.branch)
        return True

    async def commits_since(self, ws: Workspace, base: str) -> list[str]:
        """One line per commit in base..HEAD, newest first: git alone decides if work exists."""
        out = await self._in_checkout(
            ws, "log", "--no-show-signature", "--format=%h %s", "--end-of-options", f"{base}..HEAD"
        )
        return [line for line in out.splitlines() if line.strip()]

    async def push(self, ws: Workspace, token: str) -> None:
        """Push the checkout's HEAD to the task branch; plain push, a moved branch fails."""
        info = self._checkout(ws)
        outbox = _OUTBOX + info.task_dir.name
        async with self._lock(info.mirror):
            try:
                await self._fetch_checkout(ws, info.mirror, outbox)
                await self._run(
                    [
                        "push",
                        "--quiet",
                        "--no-verify",
                        "--end-of-options",
                        info.clone_url,
                        f"{outbox}:refs/heads/{ws.branch}",
                    ],
                    cwd=info.mirror,
                    config=self._auth(info.clone_url, token),
                    hidden=(token,),
                    network=True,
                )
            finally:
                await self._run(["update-ref", "-d", outbox], cwd=info.mirror, check=False)
        log.info("pushed %s", ws.branch)

    async def head(self, ws: Workspace) -> str:
        """The checkout's HEAD commit."""
        return (await self._in_checkout(ws, "rev-parse", "--verify", "HEAD")).strip()

    async def reset(self, ws: Workspace, sha: str) -> None:
        """Back to exactly `sha`: what checks wrote or committed is gone (ignored files stay)."""
        await self._in_checkout(ws, "reset", "--quiet", "--hard", sha)
        await self._in_checkout(ws, "clean", "--quiet", "-fd")

    async def changed_files(self, ws: Workspace, base: str) -> list[str]:
        """Paths that base..HEAD adds, changes, deletes or renames (both names of a rename)."""
        out = await self._in_checkout(
            ws, "diff", "--name-only", "--no-renames", "-z", "--end-of-options", base, "HEAD"
        )
        return [p for p in out.split("\0") if p]

    async def cleanup(self, ws: Workspace) -> None:
        """Remove the attempt's directory: checkout, agent home and all."""
        task_dir = ws.path.parent
        if task_dir.parent != self.work:
            raise GitError(f"refusing to remove {task_dir}: not a task directory")
        self._open.pop(ws.path, None)
        await asyncio.to_thread(shutil.rmtree, task_dir, True)

    async def collect_garbage(self, older_than_days: int) -> list[Path]:
        """git gc every mirror: objects of deleted task refs go once unreachable that long."""
        done = []
        for head in sorted(self.mirrors.glob("*/*.git/HEAD")):
            mirror = head.parent
            async with self._lock(mirror):
                args = ["gc", "--quiet", f"--prune={older_than_days}.days.ago"]
                rc, _ = await self._run(args, cwd=mirror, check=False, network=True)
            if rc:
                log.warning("git gc failed in %s (exit %s)", mirror, rc)
            else:
                done.append(mirror)
        return done

    # -- salvage ----------------------------------------------------------------------------
    async def _salvage(self, task: Task, repo: Repository, mirror: Path, branch: str) -> _Salvage:
        """Bring the work of earlier, killed attempts of the task into the mirror.

        Each leftover (oldest first) is rescued as the worker and its HEAD fetched like a
        push does. A tip with commits beyond the starting point becomes the new start if
        it extends it (or, with no task branch yet, whatever it grew from); a tip that
        diverged from the remote task branch is left in place. Errors never fail the task.
        """
        result = _Salvage()
        try:
            live = {info.task_dir for info in self._open.values()}
            found = await asyncio.to_thread(scan, self.work, task.id, live)
            for path in found.never_handed_over:
                log.info("task %s: removing %s, never handed to the agent", task.id, path)
                await asyncio.to_thread(shutil.rmtree, path, True)
            if not found.leftovers:
                return result
            tip, pinned = await self._starting_point(mirror, repo, branch)
        except Exception:
            log.exception("task %s: could not look for leftovers of earlier attempts", task.id)
            return result
        for old in found.leftovers:
            if (old.repo, old.branch) != (repo.full_name, branch):
                log.warning(
                    "task %s: leaving %s alone: it was for %s on %s",
                    task.id,
                    old.task_dir,
                    old.repo,
                    old.branch,
                )
                continue
            ref = _SALVAGE + old.task_dir.name
            result.refs.append(ref)
            try:
                sha, complete = await self._salvage_one(old, mirror, repo.clone_url, ref)
                if await self._is_ancestor(mirror, sha, tip):
                    log.info("task %s: %s holds nothing new", task.id, old.task_dir)
                elif not pinned or await self._is_ancestor(mirror, tip, sha):
                    tip, pinned, result.start = sha, True, ref
                    log.info(
                        "task %s: salvaged attempt %s up to %s", task.id, old.attempt, sha[:12]
                    )
                else:
                    log.warning(
                        "task %s: %s diverged from %s; leaving it at %s",
                        task.id,
                        sha[:12],
                        branch,
                        old.task_dir,
                    )
                    continue
            except Exception:
                log.exception("task %s: could not salvage %s; leaving it", task.id, old.task_dir)
                continue
            if complete:
                result.done.append(old.task_dir)
            else:
                log.warning(
                    "task %s: leaving %s: its uncommitted work could not be rescued",
                    task.id,
                    old.task_dir,
                )
        return result

    async def _salvage_one(
        self, old: Leftover, mirror: Path, clone_url: str, ref: str
    ) -> tuple[str, bool]:
        """Rescue a leftover as the worker, then fetch its HEAD into ``ref`` of the mirror.

        Returns the tip and whether nothing was left uncommitted behind it.
        """
        view = Workspace(old.path, old.home, old.branch, "", "")
        if view.path in self._open:
            raise GitError(f"{old.task_dir} is in use")
        self._open[view.path] = _Checkout(old.task_dir, mirror, clone_url)
        try:
            complete = True
            try:
                await self.rescue(view)
            except GitError:
                complete = False
                log.exception("could not commit what was left in %s; taking its commits", old.path)
            async with self._lock(mirror):
                await self._fetch_checkout(view, mirror, ref)
        finally:
            self._open.pop(view.path, None)
        sha = (await self._run(["rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=mirror))[1]
        return sha.strip(), complete

    async def _starting_point(
        self, mirror: Path, repo: Repository, branch: str
    ) -> tuple[str, bool]:
        """The commit a new checkout starts from, and whether it is the remote task branch."""
        for ref, pinned in ((branch, True), (repo.default_branch, False)):
            verify = ["rev-parse", "-q", "--verify", f"refs/heads/{ref}^{{commit}}"]
            rc, sha = await self._run(verify, cwd=mirror, check=False)
            if rc == 0:
                return sha.strip(), pinned
        raise GitError(f"{repo.full_name} has no branch {repo.default_branch!r}")

    async def _is_ancestor(self, mirror: Path, ancestor: str, descendant: str) -> bool:
        """True when every commit of ``ancestor`` is in ``descendant``."""
        args = ["merge-base", "--is-ancestor", ancestor, descendant]
        rc, _ = await self._run(args, cwd=mirror, check=False)
        if rc not in (0, 1):
            raise GitError(f"git merge-base failed (exit {rc})")
        return rc == 0

    # -- steps ----------------------------------------------------------------------------
    def _ensure_layout(self) -> None:
        """mirrors/ is ghapp's alone; work/ lets the worker traverse but never list."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for path, mode in ((self.mirrors, 0o700), (self.work, 0o711)):
            path.mkdir(exist_ok=True)
            os.chmod(path, mode)
        if self._ids is None:
            return
        mode = self.data_dir.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(self.data_dir, stat.S_IMODE(mode) | stat.S_IXOTH)
        for parent in self.data_dir.parents:
            if not parent.stat().st_mode & stat.S_IXOTH:
                raise GitError(f"the worker cannot reach {self.work}: {parent} lacks o+x")

    # -- the base branch, read from the mirror (never from a checkout) ---------------------
    async def sync(self, repo: Repository, token: str) -> Path:
        """Fetch the repository's mirror; returns its path."""
        self._ensure_layout()
        return await self._sync_mirror(repo, token)

    async def branch_head(self, mirror: Path, branch: str) -> str | None:
        """The commit a branch of the mirror points at, if the branch exists."""
        ref = f"refs/heads/{branch}^{{commit}}"
        rc, out = await self._run(
            ["rev-parse", "-q", "--verify", "--end-of-options", ref], mirror, False
        )
        return out.strip() if rc == 0 else None

    async def read_blob(self, mirror: Path, sha: str, path: str, limit: int) -> bytes | None:
        """A file of commit `sha` in the mirror; None if absent, ValueError over `limit` bytes."""
        spec = f"{sha}:{path}"
        rc, kind = await self._run(["cat-file", "-t", spec], mirror, False)
        if rc != 0 or kind.strip() != "blob":
            return None
        size = int((await self._run(["cat-file", "-s", spec], mirror))[1].strip())
        if size > limit:
            raise ValueError(f"{path} is {size} bytes, more than {limit}")
        return (await self._exec(["cat-file", "blob", spec], mirror, True))[1]

    async def _sync_mirror(self, repo: Repository, token: str, *, fetch: bool = True) -> Path:
        """Clone the mirror once, then fetch only what changed (heads and tags, no PR refs)."""
        owner, _, name = repo.full_name.partition("/")
        valid = _NAME_RE.fullmatch(owner) and _NAME_RE.fullmatch(name)
        if not valid or {owner, name} & {".", ".."}:
            raise GitError(f"bad repository name {repo.full_name!r}")
        mirror = self.mirrors / owner / f"{name}.git"
        auth = self._auth(repo.clone_url, token)
        async with self._lock(mirror):
            if not (mirror / "HEAD").is_file():
                mirror.parent.mkdir(mode=0o700, exist_ok=True)
                fresh = mirror.with_name(f".{name}.{secrets.token_hex(4)}.tmp")
                try:
                    await self._run(["init", "--quiet", "--bare", str(fresh)], cwd=mirror.parent)
                    for key, value in (
                        ("remote.origin.url", repo.clone_url),
                        ("remote.origin.fetch", "+refs/heads/*:refs/heads/*"),
                    ):
                        await self._run(["config", key, value], cwd=fresh)
                    await self._run(
                        ["config", "--add", "remote.origin.fetch", "+refs/tags/*:refs/tags/*"],
                        cwd=fresh,
                    )
                    await self._fetch(fresh, auth, token)
                    await asyncio.to_thread(shutil.rmtree, mirror, True)
                    fresh.rename(mirror)
                finally:
                    await asyncio.to_thread(shutil.rmtree, fresh, True)
            elif fetch:
                await self._run(["config", "remote.origin.url", repo.clone_url], cwd=mirror)
                await self._fetch(mirror, auth, token)
            ref = f"refs/heads/{repo.default_branch}"
            await self._run(["symbolic-ref", "HEAD", ref], cwd=mirror)
        return mirror

    async def _fetch(self, mirror: Path, auth: list[tuple[str, str]], token: str) -> None:
        """One network fetch into a mirror, the token in env only."""
        await self._run(
            ["fetch", "--quiet", "--prune", "--no-write-fetch-head", "origin"],
            cwd=mirror,
            config=auth,
            hidden=(token,),
            network=True,
        )

    async def _check_branch(self, branch: str) -> None:
        """A branch name from the store or a PR is untrusted until git accepts it."""
        ok = _BRANCH_RE.fullmatch(branch) and not branch.startswith(("-", "/"))
        if (
            not ok
            or (await self._run(["check-ref-format", f"refs/heads/{branch}"], check=False))[0]
        ):
            raise GitError(f"invalid branch name {branch!r}")

    async def _new_checkout(
        self, task: Task, mirror: Path, repo: Repository, branch: str, salvaged: str | None
    ) -> tuple[Workspace, Path]:
        """A new task directory with its checkout, marked as handed over; gone on failure."""
        task_dir = self.work / task_dir_name(task.id)
        task_dir.mkdir(mode=0o711)
        try:
            os.chmod(task_dir, 0o711)  # the worker traverses it, whatever ghapp's umask
            ws = await self._make_checkout(task_dir, mirror, repo, branch, salvaged)
            await asyncio.to_thread(
                mark_handed_over, task_dir, task.id, task.attempt, repo.full_name, branch
            )
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, task_dir, True)
            raise
        return ws, task_dir

    async def _make_checkout(
        self,
        task_dir: Path,
        mirror: Path,
        repo: Repository,
        branch: str,
        salvaged: str | None = None,
    ) -> Workspace:
        """Clone (copying objects, never hard links), branch, set identity, hand over.

        ``salvaged`` is a mirror ref with an earlier attempt's work to start from.
        """
        path, home = task_dir / "repo", task_dir / "home"
        home.mkdir(mode=0o700)
        await self._run(
            ["clone", "--quiet", "--no-hardlinks", "--no-checkout", str(mirror), str(path)],
            cwd=task_dir,
            network=True,
        )
        for key, value in (
            ("remote.origin.url", repo.clone_url),
            ("user.name", self._author[0]),
            ("user.email", self._author[1]),
        ):
            await self._run(["config", key, value], cwd=path)
        default = f"refs/remotes/origin/{repo.default_branch}"
        rc, default_sha = await self._run(["rev-parse", "-q", "--verify", default], path, False)
        if rc:
            raise GitError(f"{repo.full_name} has no branch {repo.default_branch!r}")
        remote_ref = f"refs/remotes/origin/{branch}"
        exists = (await self._run(["rev-parse", "-q", "--verify", remote_ref], path, False))[0] == 0
        start_point = remote_ref if exists else default
        if salvaged is not None:
            await self._run(
                [
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--no-write-fetch-head",
                    "--end-of-options",
                    str(mirror),
                    f"+{salvaged}:{_SALVAGED}",
                ],
                cwd=path,
                config=[("protocol.file.allow", "always")],
                network=True,
            )
            start_point = _SALVAGED
        await self._run(
            ["checkout", "--quiet", "--force", "--no-track", "-B", branch, start_point], cwd=path
        )
        if salvaged is not None:
            await self._run(["update-ref", "-d", _SALVAGED], cwd=path)
        rc, base = await self._run(["merge-base", "HEAD", default_sha.strip()], path, False)
        base_sha = base.strip() if rc == 0 else default_sha.strip()
        start_sha = (await self._run(["rev-parse", "HEAD"], cwd=path))[1].strip()
        prior: tuple[str, ...] = ()
        if exists or salvaged is not None:
            out = (await self._run(["log", "--format=%h %s", f"{base_sha}..HEAD"], cwd=path))[1]
            prior = tuple(line for line in out.splitlines() if line)
        if self._ids is not None:
            await asyncio.to_thread(_chown_tree, path, *self._ids)
            await asyncio.to_thread(_chown_tree, home, *self._ids)
        os.chmod(path, 0o700)
        return Workspace(path, home, branch, base_sha, start_sha, prior)

    # -- running git ----------------------------------------------------------------------
    def _checkout(self, ws: Workspace) -> _Checkout:
        """ghapp's record of a workspace; the checkout's own config is not trusted."""
        info = self._open.get(ws.path)
        if info is None:
            raise GitError(f"unknown workspace {ws.path}")
        return info

    async def _fetch_checkout(self, ws: Workspace, mirror: Path, ref: str) -> None:
        """Copy a checkout's HEAD into a mirror ref, reading the checkout only as the worker.

        The caller holds the mirror's lock.
        """
        fetch = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head"]
        if self._ids is not None:
            fetch.append(f"--upload-pack={self._upload_pack_as_worker(ws)}")
        await self._run(
            [*fetch, "--end-of-options", str(ws.path), f"+HEAD:{ref}"],
            cwd=mirror,
            config=[("protocol.file.allow", "always")],
        )

    def _lock(self, mirror: Path) -> asyncio.Lock:
        """One git writer per mirror at a time."""
        return self._locks.setdefault(mirror, asyncio.Lock())

    def _auth(self, clone_url: str, token: str) -> list[tuple[str, str]]:
        """The token as an extra header scoped to this repository's URL, via env config."""
        header = f"Authorization: Basic {_basic_credentials(token)}"
        return [(f"http.{clone_url}.extraHeader", header)]

    def _upload_pack_as_worker(self, ws: Workspace) -> str:
        """A shell command that serves the checkout with the worker's privileges only."""
        assert self._ids is not None
        uid, gid = self._ids
        return shlex.join(
            [
                "env",
                f"HOME={ws.home}",
                self._setpriv,
                f"--reuid={uid}",
                f"--regid={gid}",
                "--clear-groups",
                "--no-new-privs",
                self._git,
                "upload-pack",
            ]
        )

    async def _in_checkout(self, ws: Workspace, *args: str) -> str:
        """git inside the worker-owned checkout, run as the worker with hooks switched off."""
        self._checkout(ws)
        config = [
            ("core.hooksPath", "/dev/null"),
            ("core.fsmonitor", "false"),
            ("commit.gpgSign", "false"),
            ("user.name", self._author[0]),
            ("user.email", self._author[1]),
        ]
        return (await self._run(list(args), cwd=ws.path, config=config, worker_home=ws.home))[1]

    def _env(self, config: Sequence[tuple[str, str]], home: Path | None) -> dict[str, str]:
        """A minimal env: no inherited secrets, no prompts, config passed as GIT_CONFIG_*."""
        pairs = [("credential.helper", ""), *config]
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(home) if home else os.environ.get("HOME", "/"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "LC_ALL": "C",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": shutil.which("true") or "/bin/true",
            "SSH_ASKPASS": shutil.which("true") or "/bin/true",
            "GIT_PAGER": "cat",
            "GIT_EDITOR": "true",
            "GIT_CONFIG_COUNT": str(len(pairs)),
        }
        for i, (key, value) in enumerate(pairs):
            env[f"GIT_CONFIG_KEY_{i}"] = key
            env[f"GIT_CONFIG_VALUE_{i}"] = value
        return env

    async def _run(
        self,
        args: list[str],
        cwd: Path | None = None,
        check: bool = True,
        *,
        config: Sequence[tuple[str, str]] = (),
        hidden: Sequence[str] = (),
        worker_home: Path | None = None,
        network: bool = False,
    ) -> tuple[int, str]:
        """Run git without blocking the loop; (returncode, stdout), or GitError when check."""
        rc, out = await self._exec(
            args,
            cwd,
            check,
            config=config,
            hidden=hidden,
            worker_home=worker_home,
            network=network,
        )
        return rc, out.decode(errors="replace")

    async def _exec(
        self,
        args: list[str],
        cwd: Path | None = None,
        check: bool = True,
        *,
        config: Sequence[tuple[str, str]] = (),
        hidden: Sequence[str] = (),
        worker_home: Path | None = None,
        network: bool = False,
    ) -> tuple[int, bytes]:
        """Run git; (returncode, raw stdout), or GitError when check."""
        as_worker = worker_home is not None and self._ids is not None
        ids = self._ids if as_worker else None
        log.debug("git %s (cwd=%s, as_worker=%s)", scrub(" ".join(args), hidden), cwd, as_worker)
        proc = await asyncio.create_subprocess_exec(
            self._git,
            *args,
            cwd=cwd,
            env=self._env(config, worker_home),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            user=ids[0] if ids else None,
            group=ids[1] if ids else None,
            extra_groups=[] if ids else None,
        )
        limit = self._net_timeout if network else self._local_timeout
        try:
            out, err = await asyncio.wait_for(proc.communicate(), limit)
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            raise GitError(f"git {args[0]} timed out after {limit:.0f}s") from None
        except asyncio.CancelledError:
            _kill_group(proc.pid)
            raise
        rc = proc.returncode or 0
        if rc and check:
            detail = err.decode(errors="replace").strip()[-_STDERR_TAIL:]
            raise GitError(scrub(f"git {args[0]} failed (exit {rc}): {detail}", hidden))
        return rc, out


def _kill_group(pid: int) -> None:
    """SIGKILL git and its helpers (remote-https, pack-objects) together."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    """chown -R without following symlinks (a repository may contain them)."""
    os.chown(top, uid, gid, follow_symlinks=False)
    for root, dirs, files in os.walk(top, followlinks=False):
        for entry in (*dirs, *files):
            os.chown(os.path.join(root, entry), uid, gid, follow_symlinks=False)
