"""Salvage: the work of earlier, killed attempts of a task becomes the new checkout's start."""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ghapp.core.model import Repository, Task
from ghapp.core.ports import Workspace
from ghapp.workspace.checkout import CheckoutInfo, Checkouts
from ghapp.workspace.gitcmd import GitError
from ghapp.workspace.leftovers import Leftover, scan
from ghapp.workspace.mirror import Mirrors

log = logging.getLogger(__name__)

SALVAGE_REFS = "refs/mc/salvage/"


@dataclass
class Salvage:
    """What the leftovers of earlier attempts gave a new checkout."""

    start: str | None = None  # mirror ref of the salvaged tip to build on
    refs: list[str] = field(default_factory=list)  # salvage refs to drop from the mirror
    done: list[Path] = field(default_factory=list)  # leftovers whose work is all saved


async def salvage(
    checkouts: Checkouts, mirrors: Mirrors, task: Task, repo: Repository, mirror: Path, branch: str
) -> Salvage:
    """Bring the work of earlier, killed attempts of the task into the mirror.

    Each leftover (oldest first) is rescued as the worker and its HEAD fetched like a
    push does. A tip with commits beyond the starting point becomes the new start if
    it extends it (or, with no task branch yet, whatever it grew from); a tip that
    diverged from the remote task branch is left in place. Errors never fail the task.
    """
    result = Salvage()
    try:
        live = {info.task_dir for info in checkouts.open.values()}
        found = await asyncio.to_thread(scan, checkouts.work, task.id, live)
        for path in found.never_handed_over:
            log.info("task %s: removing %s, never handed to the agent", task.id, path)
            await asyncio.to_thread(shutil.rmtree, path, True)
        if not found.leftovers:
            return result
        tip, pinned = await mirrors.starting_point(mirror, repo, branch)
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
        ref = SALVAGE_REFS + old.task_dir.name
        result.refs.append(ref)
        try:
            sha, complete = await _salvage_one(checkouts, mirrors, old, mirror, repo, ref)
            if await mirrors.is_ancestor(mirror, sha, tip):
                log.info("task %s: %s holds nothing new", task.id, old.task_dir)
            elif not pinned or await mirrors.is_ancestor(mirror, tip, sha):
                tip, pinned, result.start = sha, True, ref
                log.info("task %s: salvaged attempt %s up to %s", task.id, old.attempt, sha[:12])
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
    checkouts: Checkouts, mirrors: Mirrors, old: Leftover, mirror: Path, repo: Repository, ref: str
) -> tuple[str, bool]:
    """Rescue a leftover as the worker, then fetch its HEAD into ``ref`` of the mirror.

    Returns the tip and whether nothing was left uncommitted behind it.
    """
    view = Workspace(old.path, old.home, old.branch, "", "")
    if view.path in checkouts.open:
        raise GitError(f"{old.task_dir} is in use")
    checkouts.open[view.path] = CheckoutInfo(old.task_dir, mirror, repo.clone_url)
    try:
        complete = True
        try:
            await checkouts.rescue(view)
        except GitError:
            complete = False
            log.exception("could not commit what was left in %s; taking its commits", old.path)
        async with mirrors.lock(mirror):
            await checkouts.fetch_head(view, mirror, ref)
    finally:
        checkouts.open.pop(view.path, None)
    sha = (await mirrors.git.run(["rev-parse", "--verify", f"{ref}^{{commit}}"], mirror)).out
    return sha.strip(), complete
