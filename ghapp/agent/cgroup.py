"""A cgroup v2 per attempt, where the host has one: memory and process limits the kernel holds."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
PARENT = "ghapp"
NEEDED = {"memory", "pids"}


def unavailable(root: Path = ROOT) -> str | None:
    """Why per-attempt memory limits cannot be set here, or None when they can."""
    controllers = root / "cgroup.controllers"
    if not controllers.is_file():
        return "no cgroup v2 hierarchy at /sys/fs/cgroup (hybrid or v1 host)"
    have = set(controllers.read_text().split())
    if missing := NEEDED - have:
        return f"cgroup v2 lacks the {', '.join(sorted(missing))} controller"
    if os.geteuid() != 0:
        return "ghapp is not root, so it cannot create cgroups"
    return None


class AttemptCgroup:
    """`<root>/ghapp/<name>` with memory.max, no swap and pids.max; killed and removed at end."""

    def __init__(self, name: str, memory_mb: int, max_procs: int, root: Path = ROOT) -> None:
        self.path = root / PARENT / name
        self._root = root
        self._memory = memory_mb << 20
        self._procs = max_procs

    @property
    def procs_file(self) -> Path:
        """Where the attempt's first process writes its pid, before it execs bwrap."""
        return self.path / "cgroup.procs"

    def create(self) -> None:
        """Make the group with its limits; OSError if the kernel refuses."""
        parent = self.path.parent
        parent.mkdir(exist_ok=True)
        for holder in (self._root, parent):
            (holder / "cgroup.subtree_control").write_text("+memory +pids")
        self.path.mkdir(exist_ok=True)
        (self.path / "memory.max").write_text(str(self._memory))
        with contextlib.suppress(OSError):
            (self.path / "memory.swap.max").write_text("0")
        (self.path / "pids.max").write_text(str(self._procs))

    def destroy(self) -> None:
        """Kill whatever is left in the group, then remove it."""
        with contextlib.suppress(OSError):
            (self.path / "cgroup.kill").write_text("1")
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)  # the killed processes are still leaving
        log.warning("cgroup %s could not be removed", self.path)
