"""Private task checkouts: cloned from the mirror by ghapp, then used only as the worker."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ghapp.core.model import Repository, Task
from ghapp.core.ports import Workspace
from ghapp.workspace.gitcmd import Git, GitError
from ghapp.workspace.leftovers import mark_handed_over, task_dir_name

log = logging.getLogger(__name__)

_BRANCH_RE = re.compile(r"[A-Za-z0-9_./-]+")
_SALVAGED = "refs/mc/salvaged"
_RESCUE_MESSAGE = "WIP: auto-rescue"


@dataclass(frozen=True)
class CheckoutInfo:
    """What ghapp, not the worker-writable checkout, knows about a workspace."""

    task_dir: Path
    mirror: Path
    clone_url: str


class Checkouts:
    """The checkouts ghapp handed out, and git inside them with the worker's privileges."""

    def __init__(self, git: Git, work: Path, author: tuple[str, str]) -> None:
        self.git, self.work, self.author = git, work, author
        self.open: dict[Path, CheckoutInfo] = {}

    def info(self, ws: Workspace) -> CheckoutInfo:
        """ghapp's record of a workspace; the checkout's own config is not trusted."""
        info = self.open.get(ws.path)
        if info is None:
            raise GitError(f"unknown workspace {ws.path}")
        return info

    async def check_branch(self, branch: str) -> None:
        """A branch name from the store or a PR is untrusted until git accepts it."""
        ok = _BRANCH_RE.fullmatch(branch) and not branch.startswith(("-", "/"))
        args = ["check-ref-format", f"refs/heads/{branch}"]
        if not ok or (await self.git.run(args, check=False)).rc:
            raise GitError(f"invalid branch name {branch!r}")

    async def git_in(self, ws: Workspace, *args: str) -> str:
        """git inside the worker-owned checkout, run as the worker with hooks switched off."""
        self.info(ws)
        config = [
            ("core.hooksPath", "/dev/null"),
            ("core.fsmonitor", "false"),
            ("commit.gpgSign", "false"),
            ("user.name", self.author[0]),
            ("user.email", self.author[1]),
        ]
        return (await self.git.run(list(args), ws.path, config=config, worker_home=ws.home)).out

    async def rescue(self, ws: Workspace) -> bool:
        """Commit what the agent left uncommitted, so no work is lost on the way to a PR."""
        status = await self.git_in(ws, "status", "--porcelain", "--untracked-files=all")
        if not status.strip():
            return False
        await self.git_in(ws, "add", "-A")
        await self.git_in(ws, "commit", "--quiet", "--no-verify", "-m", _RESCUE_MESSAGE)
        log.info("rescued uncommitted work in %s", ws.branch)
        return True

    async def fetch_head(self, ws: Workspace, mirror: Path, ref: str) -> None:
        """Copy a checkout's HEAD into a mirror ref, reading the checkout only as the worker.

        The caller holds the mirror's lock.
        """
        fetch = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head"]
        if self.git.worker_ids is not None:
            fetch.append(f"--upload-pack={self.git.upload_pack_as_worker(ws.home)}")
        await self.git.run(
            [*fetch, "--end-of-options", str(ws.path), f"+HEAD:{ref}"],
            cwd=mirror,
            config=[("protocol.file.allow", "always")],
        )

    async def create(
        self, task: Task, mirror: Path, repo: Repository, branch: str, salvaged: str | None
    ) -> Workspace:
        """A new task directory with its checkout, marked as handed over; gone on failure."""
        task_dir = self.work / task_dir_name(task.id)
        task_dir.mkdir(mode=0o711)
        try:
            os.chmod(task_dir, 0o711)  # the worker traverses it, whatever ghapp's umask
            ws = await self._clone(task_dir, mirror, repo, branch, salvaged)
            await asyncio.to_thread(
                mark_handed_over, task_dir, task.id, task.attempt, repo.full_name, branch
            )
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, task_dir, True)
            raise
        self.open[ws.path] = CheckoutInfo(task_dir, mirror, repo.clone_url)
        return ws

    async def _clone(
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
        run = self.git.run
        path, home = task_dir / "repo", task_dir / "home"
        home.mkdir(mode=0o700)
        await run(
            ["clone", "--quiet", "--no-hardlinks", "--no-checkout", str(mirror), str(path)],
            cwd=task_dir,
            network=True,
        )
        for key, value in (
            ("remote.origin.url", repo.clone_url),
            ("user.name", self.author[0]),
            ("user.email", self.author[1]),
        ):
            await run(["config", key, value], cwd=path)
        default = f"refs/remotes/origin/{repo.default_branch}"
        rc, default_sha = await run(["rev-parse", "-q", "--verify", default], path, check=False)
        if rc:
            raise GitError(f"{repo.full_name} has no branch {repo.default_branch!r}")
        remote_ref = f"refs/remotes/origin/{branch}"
        found = await run(["rev-parse", "-q", "--verify", remote_ref], path, check=False)
        exists = found.rc == 0
        start_point = remote_ref if exists else default
        if salvaged is not None:
            await run(
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
        await run(["checkout", "--quiet", "--force", "--no-track", "-B", branch, start_point], path)
        if salvaged is not None:
            await run(["update-ref", "-d", _SALVAGED], cwd=path)
        rc, base = await run(["merge-base", "HEAD", default_sha.strip()], path, check=False)
        base_sha = base.strip() if rc == 0 else default_sha.strip()
        start_sha = (await run(["rev-parse", "HEAD"], cwd=path)).out.strip()
        prior: tuple[str, ...] = ()
        if exists or salvaged is not None:
            out = (await run(["log", "--format=%h %s", f"{base_sha}..HEAD"], cwd=path)).out
            prior = tuple(line for line in out.splitlines() if line)
        await self.git.give_to_worker(path, home)
        os.chmod(path, 0o700)
        return Workspace(path, home, branch, base_sha, start_sha, prior)
