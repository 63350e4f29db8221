"""How one attempt is confined and ended: bubblewrap, or a bare process for development."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ghapp.agent import sandbox
from ghapp.agent.cgroup import AttemptCgroup
from ghapp.agent.procs import descendants_signal, kill_marked, signal_group


@dataclass(frozen=True)
class Identity:
    """Who the agent runs as: uid/gid, and how ghapp switches to it."""

    name: str
    uid: int
    gid: int
    switch: str  # "setpriv" (ghapp is root), "sudo" (ghapp is another user) or "" (same user)


@dataclass
class Jail:
    """One attempt's confinement: the command around the CLI, its stop and its end."""

    identity: Identity
    dirs: sandbox.Dirs
    bwrap: str | None  # None: no sandbox (MC_SANDBOX=none, development only)
    limits: sandbox.AgentLimits = field(default_factory=sandbox.AgentLimits)
    cli_dirs: Sequence[Path] = ()
    cgroup: AttemptCgroup | None = None
    marker: str = ""
    bridges: tuple[str, ...] = (sandbox.MODEL_SOCKET, sandbox.EGRESS_SOCKET)

    @classmethod
    def open(
        cls,
        identity: Identity,
        checkout: Path,
        home: Path,
        bwrap: str | None,
        limits: sandbox.AgentLimits,
        cli_dirs: Sequence[Path],
        cgroup: AttemptCgroup | None,
        marker: str,
        bridges: tuple[str, ...] = (sandbox.MODEL_SOCKET, sandbox.EGRESS_SOCKET),
    ) -> Jail:
        """Make the attempt's private /tmp and ghapp's run directory (sockets, relay)."""
        tmp = home.parent / "tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700)
        if identity.switch == "setpriv":
            os.chown(tmp, identity.uid, identity.gid)
        run = Path(tempfile.mkdtemp(prefix="ghapp-run-"))
        os.chmod(run, 0o711)  # the agent may reach the sockets in it, not list or change it
        relay = resources.files("ghapp.agent").joinpath("relay.py").read_bytes()
        (run / sandbox.RELAY).write_bytes(relay)
        os.chmod(run / sandbox.RELAY, 0o644)
        jail = cls(identity, sandbox.Dirs(checkout, home, tmp, run), bwrap, limits, cli_dirs)
        jail.marker, jail.bridges = marker, bridges
        if cgroup is not None and bwrap is not None:
            cgroup.create()
            jail.cgroup = cgroup
        return jail

    @property
    def sandboxed(self) -> bool:
        return self.bwrap is not None

    def socket(self, name: str) -> Path:
        return self.dirs.run / name

    def argv(self, cli: Sequence[str], env: Mapping[str, str]) -> list[str]:
        """The whole command: switch user, enter the cgroup, bwrap, relay, then the CLI."""
        argv = list(cli)
        if self.bwrap is not None:
            argv = sandbox.bwrap_argv(
                self.bwrap, self.dirs, self.cli_dirs, self.limits, argv, bridges=self.bridges
            )
        if self.identity.switch == "setpriv":
            ids = [f"--reuid={self.identity.uid}", f"--regid={self.identity.gid}"]
            argv = ["setpriv", *ids, "--clear-groups", "--inh-caps=-all", "--", *argv]
        elif self.identity.switch == "sudo":
            keep = ",".join(sorted(env))
            argv = ["sudo", "-n", "-u", self.identity.name, f"--preserve-env={keep}", "--", *argv]
        if self.cgroup is not None:  # the first process joins the cgroup, then execs the rest
            enter = 'echo $$ > "$0" && exec "$@"'
            argv = ["/bin/sh", "-c", enter, str(self.cgroup.procs_file), *argv]
        return argv

    def interrupt(self, pid: int, sig: signal.Signals) -> None:
        """Ask the CLI to stop: through the relay inside a sandbox, to the group outside."""
        if self.bwrap is None:
            signal_group(pid, sig)
        else:
            descendants_signal(pid, sig, skip="bwrap")

    def kill(self, pid: int) -> int:
        """End every process of the attempt; returns how many stragglers needed the marker."""
        signal_group(pid, signal.SIGKILL)  # in a sandbox: its PID namespace dies with bwrap
        if self.bwrap is not None:
            return 0
        return kill_marked(self.marker, self.identity.uid)

    def usage_bytes(self) -> int:
        """Disk the agent has written: checkout, home and tmp."""
        return sandbox.tree_bytes([self.dirs.checkout, self.dirs.home, self.dirs.tmp])

    async def close(self) -> None:
        """Remove ghapp's run directory, the attempt's /tmp and its cgroup."""
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.destroy)
        await asyncio.to_thread(shutil.rmtree, self.dirs.run, True)
        await asyncio.to_thread(shutil.rmtree, self.dirs.tmp, True)
