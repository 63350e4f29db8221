"""The Vcs port on git: mirrors, private task checkouts, salvage, rescue and push."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import stat
import unicodedata
from pathlib import Path

from ghapp.core.model import Repository, Task
from ghapp.core.ports import Workspace
from ghapp.workspace.checkout import Checkouts
from ghapp.workspace.gitcmd import Git, GitError, auth_config, scrub
from ghapp.workspace.mirror import Mirrors
from ghapp.workspace.salvage import salvage

__all__ = ["GitError", "GitWorkspace", "branch_name", "scrub", "slugify"]

log = logging.getLogger(__name__)

_OUTBOX = "refs/mc/out/"


def slugify(title: str, max_len: int = 40) -> str:
    """Untrusted title -> [a-z0-9-]{1,max_len}, so it is safe in a ref and a shell."""
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len].strip("-")
    return slug or "task"


def branch_name(issue_number: int, title: str) -> str:
    """The task branch: mc/<issue>-<slug>."""
    return f"mc/{issue_number}-{slugify(title)}"


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
        self._author = (author_name, author_email)
        self.git = Git(
            worker_user,
            git_bin=git_bin,
            network_timeout_s=network_timeout_s,
            local_timeout_s=local_timeout_s,
        )
        self._mirror_repos = Mirrors(self.git, self.mirrors)
        self._checkouts = Checkouts(self.git, self.work, self._author)

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
        mirror = await self._mirror_repos.sync(repo, token, fetch=fetch)
        branch = task.branch or branch_name(task.issue_number, task.title)
        await self._checkouts.check_branch(branch)
        found = await salvage(self._checkouts, self._mirror_repos, task, repo, mirror, branch)
        try:
            try:
                ws = await self._checkouts.create(task, mirror, repo, branch, found.start)
            except GitError:
                if found.start is None:
                    raise
                log.exception(
                    "task %s: could not start from salvaged work; starting without it, keeping %s",
                    task.id,
                    ", ".join(map(str, found.done)),
                )
                found.done.clear()
                ws = await self._checkouts.create(task, mirror, repo, branch, None)
        finally:
            if found.refs:
                async with self._mirror_repos.lock(mirror):
                    for ref in found.refs:
                        await self.git.run(["update-ref", "-d", ref], cwd=mirror, check=False)
        for old in found.done:
            await asyncio.to_thread(shutil.rmtree, old, True)
            log.info("task %s: removed %s, its work is saved", task.id, old)
        log.info("workspace ready for %s on %s at %s", repo.full_name, branch, ws.start_sha[:12])
        return ws

    async def rescue(self, ws: Workspace) -> bool:
        """Commit what the agent left uncommitted, so no work is lost on the way to a PR."""
        return await self._checkouts.rescue(ws)

    async def commits_since(self, ws: Workspace, base: str) -> list[str]:
        """One line per commit in base..HEAD, newest first: git alone decides if work exists."""
        out = await self._checkouts.git_in(
            ws, "log", "--no-show-signature", "--format=%h %s", "--end-of-options", f"{base}..HEAD"
        )
        return [line for line in out.splitlines() if line.strip()]

    async def push(self, ws: Workspace, token: str) -> None:
        """Push the checkout's HEAD to the task branch; plain push, a moved branch fails."""
        info = self._checkouts.info(ws)
        outbox = _OUTBOX + info.task_dir.name
        async with self._mirror_repos.lock(info.mirror):
            try:
                await self._checkouts.fetch_head(ws, info.mirror, outbox)
                await self.git.run(
                    [
                        "push",
                        "--quiet",
                        "--no-verify",
                        "--end-of-options",
                        info.clone_url,
                        f"{outbox}:refs/heads/{ws.branch}",
                    ],
                    cwd=info.mirror,
                    config=auth_config(info.clone_url, token),
                    hidden=(token,),
                    network=True,
                )
            finally:
                await self.git.run(["update-ref", "-d", outbox], cwd=info.mirror, check=False)
        log.info("pushed %s", ws.branch)

    async def head(self, ws: Workspace) -> str:
        """The checkout's HEAD commit."""
        return (await self._checkouts.git_in(ws, "rev-parse", "--verify", "HEAD")).strip()

    async def reset(self, ws: Workspace, sha: str) -> None:
        """Back to exactly `sha`: what checks wrote or committed is gone (ignored files stay)."""
        await self._checkouts.git_in(ws, "reset", "--quiet", "--hard", sha)
        await self._checkouts.git_in(ws, "clean", "--quiet", "-fd")

    async def changed_files(self, ws: Workspace, base: str) -> list[str]:
        """Paths that base..HEAD adds, changes, deletes or renames (both names of a rename)."""
        out = await self._checkouts.git_in(
            ws, "diff", "--name-only", "--no-renames", "-z", "--end-of-options", base, "HEAD"
        )
        return [p for p in out.split("\0") if p]

    async def cleanup(self, ws: Workspace) -> None:
        """Remove the attempt's directory: checkout, agent home and all."""
        task_dir = ws.path.parent
        if task_dir.parent != self.work:
            raise GitError(f"refusing to remove {task_dir}: not a task directory")
        self._checkouts.open.pop(ws.path, None)
        await asyncio.to_thread(shutil.rmtree, task_dir, True)

    async def collect_garbage(self, older_than_days: int) -> list[Path]:
        """git gc every mirror: objects of deleted task refs go once unreachable that long."""
        return await self._mirror_repos.collect_garbage(older_than_days)

    # -- the base branch, read from the mirror (never from a checkout) ---------------------
    async def sync(self, repo: Repository, token: str) -> Path:
        """Fetch the repository's mirror; returns its path."""
        self._ensure_layout()
        return await self._mirror_repos.sync(repo, token)

    async def branch_head(self, mirror: Path, branch: str) -> str | None:
        """The commit a branch of the mirror points at, if the branch exists."""
        return await self._mirror_repos.branch_head(mirror, branch)

    async def read_blob(self, mirror: Path, sha: str, path: str, limit: int) -> bytes | None:
        """A file of commit `sha` in the mirror; None if absent, ValueError over `limit` bytes."""
        return await self._mirror_repos.read_blob(mirror, sha, path, limit)

    def _ensure_layout(self) -> None:
        """mirrors/ is ghapp's alone; work/ lets the worker traverse but never list."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for path, mode in ((self.mirrors, 0o700), (self.work, 0o711)):
            path.mkdir(exist_ok=True)
            os.chmod(path, mode)
        if self.git.worker_ids is None:
            return
        mode = self.data_dir.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(self.data_dir, stat.S_IMODE(mode) | stat.S_IXOTH)
        for parent in self.data_dir.parents:
            if not parent.stat().st_mode & stat.S_IXOTH:
                raise GitError(f"the worker cannot reach {self.work}: {parent} lacks o+x")
