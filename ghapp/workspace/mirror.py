"""One bare mirror per repository: fetched with the token in env, read only by ghapp."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import shutil
from pathlib import Path

from ghapp.core.model import Repository
from ghapp.workspace.gitcmd import Git, GitError, auth_config

log = logging.getLogger(__name__)
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


class Mirrors:
    """The mirrors under one folder; one git writer per mirror at a time."""

    def __init__(self, git: Git, root: Path) -> None:
        self.git, self.root = git, root
        self._locks: dict[Path, asyncio.Lock] = {}

    def lock(self, mirror: Path) -> asyncio.Lock:
        """One git writer per mirror at a time."""
        return self._locks.setdefault(mirror, asyncio.Lock())

    async def sync(self, repo: Repository, token: str, *, fetch: bool = True) -> Path:
        """Clone the mirror once, then fetch only what changed (heads and tags, no PR refs)."""
        owner, _, name = repo.full_name.partition("/")
        valid = _NAME_RE.fullmatch(owner) and _NAME_RE.fullmatch(name)
        if not valid or {owner, name} & {".", ".."}:
            raise GitError(f"bad repository name {repo.full_name!r}")
        mirror = self.root / owner / f"{name}.git"
        run = self.git.run
        async with self.lock(mirror):
            if not (mirror / "HEAD").is_file():
                mirror.parent.mkdir(mode=0o700, exist_ok=True)
                fresh = mirror.with_name(f".{name}.{secrets.token_hex(4)}.tmp")
                try:
                    await run(["init", "--quiet", "--bare", str(fresh)], cwd=mirror.parent)
                    for key, value in (
                        ("remote.origin.url", repo.clone_url),
                        ("remote.origin.fetch", "+refs/heads/*:refs/heads/*"),
                    ):
                        await run(["config", key, value], cwd=fresh)
                    await run(
                        ["config", "--add", "remote.origin.fetch", "+refs/tags/*:refs/tags/*"],
                        cwd=fresh,
                    )
                    await self._fetch(fresh, repo.clone_url, token)
                    await asyncio.to_thread(shutil.rmtree, mirror, True)
                    fresh.rename(mirror)
                finally:
                    await asyncio.to_thread(shutil.rmtree, fresh, True)
            elif fetch:
                await run(["config", "remote.origin.url", repo.clone_url], cwd=mirror)
                await self._fetch(mirror, repo.clone_url, token)
            await run(["symbolic-ref", "HEAD", f"refs/heads/{repo.default_branch}"], cwd=mirror)
        return mirror

    async def _fetch(self, mirror: Path, clone_url: str, token: str) -> None:
        """One network fetch into a mirror, the token in env only."""
        await self.git.run(
            ["fetch", "--quiet", "--prune", "--no-write-fetch-head", "origin"],
            cwd=mirror,
            config=auth_config(clone_url, token),
            hidden=(token,),
            network=True,
        )

    async def branch_head(self, mirror: Path, branch: str) -> str | None:
        """The commit a branch of the mirror points at, if the branch exists."""
        ref = f"refs/heads/{branch}^{{commit}}"
        args = ["rev-parse", "-q", "--verify", "--end-of-options", ref]
        rc, out = await self.git.run(args, mirror, check=False)
        return out.strip() if rc == 0 else None

    async def read_blob(self, mirror: Path, sha: str, path: str, limit: int) -> bytes | None:
        """A file of commit `sha` in the mirror; None if absent, ValueError over `limit` bytes."""
        spec = f"{sha}:{path}"
        rc, kind = await self.git.run(["cat-file", "-t", spec], mirror, check=False)
        if rc != 0 or kind.strip() != "blob":
            return None
        size = int((await self.git.run(["cat-file", "-s", spec], mirror)).out.strip())
        if size > limit:
            raise ValueError(f"{path} is {size} bytes, more than {limit}")
        return (await self.git.run_bytes(["cat-file", "blob", spec], mirror))[1]

    async def is_ancestor(self, mirror: Path, ancestor: str, descendant: str) -> bool:
        """True when every commit of ``ancestor`` is in ``descendant``."""
        args = ["merge-base", "--is-ancestor", ancestor, descendant]
        rc, _ = await self.git.run(args, cwd=mirror, check=False)
        if rc not in (0, 1):
            raise GitError(f"git merge-base failed (exit {rc})")
        return rc == 0

    async def starting_point(self, mirror: Path, repo: Repository, branch: str) -> tuple[str, bool]:
        """The commit a new checkout starts from, and whether it is the remote task branch."""
        for ref, pinned in ((branch, True), (repo.default_branch, False)):
            verify = ["rev-parse", "-q", "--verify", f"refs/heads/{ref}^{{commit}}"]
            rc, sha = await self.git.run(verify, cwd=mirror, check=False)
            if rc == 0:
                return sha.strip(), pinned
        raise GitError(f"{repo.full_name} has no branch {repo.default_branch!r}")

    async def collect_garbage(self, older_than_days: int) -> list[Path]:
        """git gc every mirror: objects of deleted task refs go once unreachable that long."""
        done = []
        for head in sorted(self.root.glob("*/*.git/HEAD")):
            mirror = head.parent
            async with self.lock(mirror):
                args = ["gc", "--quiet", f"--prune={older_than_days}.days.ago"]
                rc, _ = await self.git.run(args, cwd=mirror, check=False, network=True)
            if rc:
                log.warning("git gc failed in %s (exit %s)", mirror, rc)
            else:
                done.append(mirror)
        return done
