"""Finding the task checkouts a killed ghapp left behind, so the next attempt can resume them.

Task directories are named ``t<task id>-<128 random bits>``: ghapp (which can list work/)
finds every attempt of a task, the agent (which cannot) still cannot guess one. A marker
in ghapp's own, root-owned task directory records that the checkout was handed to the
agent, and for which repository and branch; without it no agent ever saw the checkout.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

MARKER = "handed-over.json"


def task_dir_name(task_id: int) -> str:
    """The directory name of one attempt of a task."""
    return f"t{task_id}-{secrets.token_hex(16)}"


@dataclass(frozen=True)
class Leftover:
    """A checkout of an earlier attempt that was handed to the agent and never cleaned up."""

    task_dir: Path
    attempt: int
    repo: str
    branch: str
    handed_over_ns: int

    @property
    def path(self) -> Path:
        return self.task_dir / "repo"

    @property
    def home(self) -> Path:
        return self.task_dir / "home"


@dataclass
class Scan:
    """What an earlier process left in work/ for one task."""

    leftovers: list[Leftover] = field(default_factory=list)
    never_handed_over: list[Path] = field(default_factory=list)


def mark_handed_over(task_dir: Path, task_id: int, attempt: int, repo: str, branch: str) -> None:
    """Record, atomically and before the agent hears of it, what this checkout is for."""
    data = json.dumps(
        {"task": task_id, "attempt": attempt, "repo": repo, "branch": branch}
    ).encode()
    tmp = task_dir / f".{MARKER}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, task_dir / MARKER)


def scan(work: Path, task_id: int, live: Collection[Path]) -> Scan:
    """Directories of earlier attempts of a task, oldest first; ``live`` ones are skipped."""
    pattern = re.compile(rf"t{task_id}-[0-9a-f]{{32}}")
    found = Scan()
    with os.scandir(work) as entries:
        for entry in entries:
            if not pattern.fullmatch(entry.name) or not entry.is_dir(follow_symlinks=False):
                continue
            task_dir = Path(entry.path)
            if task_dir in live:
                continue
            marker = task_dir / MARKER
            try:
                stamp = os.stat(marker, follow_symlinks=False).st_mtime_ns
                meta = json.loads(marker.read_bytes())
                leftover = Leftover(
                    task_dir,
                    int(meta["attempt"]),
                    str(meta["repo"]),
                    str(meta["branch"]),
                    stamp,
                )
            except FileNotFoundError:
                found.never_handed_over.append(task_dir)
                continue
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("task %s: leaving %s alone: unreadable marker", task_id, task_dir)
                continue
            found.leftovers.append(leftover)
    found.leftovers.sort(key=lambda old: (old.attempt, old.handed_over_ns, old.task_dir.name))
    return found
