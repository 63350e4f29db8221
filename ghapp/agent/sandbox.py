"""One bubblewrap sandbox per attempt: what the agent sees, what it may use, and how it ends.

Inside: the task's checkout (rw) at /workspace, a private home and /tmp (rw), system and CLI
directories read-only, its own /proc, and /run/ghapp with the two sockets ghapp serves (the
model API and the egress proxy). No network namespace but its own loopback; new PID, IPC and
UTS namespaces; killing the outer bwrap ends every process of the attempt.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

INSIDE_WORKSPACE = "/workspace"
INSIDE_HOME = "/home/agent"
INSIDE_RUN = "/run/ghapp"
MODEL_PORT = 8089
EGRESS_PORT = 3128
MODEL_SOCKET = "model.sock"
EGRESS_SOCKET = "egress.sock"
RELAY = "relay.py"
BRIDGES = {MODEL_SOCKET: MODEL_PORT, EGRESS_SOCKET: EGRESS_PORT}
SYSTEM_PYTHON = "/usr/bin/python3"
# Only the parts of /etc that programs need: users, name lookup, TLS roots, linker, zones.
ETC_ENTRIES = (
    "passwd group hosts nsswitch.conf host.conf gai.conf ld.so.cache ld.so.conf "
    "ld.so.conf.d ssl ca-certificates ca-certificates.conf alternatives localtime "
    "mime.types os-release gitconfig"
).split()
USR_MERGED = ("bin", "lib", "lib64", "sbin")


@dataclass(frozen=True)
class AgentLimits:
    """Per-attempt limits; each is a setting (MC_AGENT_*)."""

    max_procs: int = 512
    max_files: int = 4096
    max_file_mb: int = 10240
    memory_mb: int = 4096
    disk_mb: int = 10240


@dataclass(frozen=True)
class Dirs:
    """Host paths of one attempt: checkout, home and tmp (the agent's), run (ghapp's)."""

    checkout: Path
    home: Path
    tmp: Path
    run: Path


def cli_root(binary: str) -> Path:
    """The CLI's real install directory: its npm package root if it has one, else its folder."""
    real = Path(os.path.realpath(binary))
    for parent in list(real.parents)[:4]:
        if (parent / "package.json").is_file():
            return parent
    return real.parent


def _system_binds(root: Path) -> list[str]:
    """Read-only /usr (with the usr-merged links) and the chosen parts of /etc."""
    args = ["--ro-bind", str(root / "usr"), "/usr"]
    for name in USR_MERGED:
        host = root / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            args += ["--ro-bind", str(host), f"/{name}"]
    for name in ETC_ENTRIES:
        if os.path.lexists(root / "etc" / name):
            args += ["--ro-bind-try", str(root / "etc" / name), f"/etc/{name}"]
    return args


def bwrap_argv(
    bwrap: str,
    dirs: Dirs,
    cli_dirs: Sequence[Path],
    limits: AgentLimits,
    command: Sequence[str],
    root: Path = Path("/"),
    bridges: Sequence[str] = (MODEL_SOCKET, EGRESS_SOCKET),
) -> list[str]:
    """The bwrap command line for one attempt; the environment is passed as bwrap's own.

    `bridges` are the sockets of ghapp's that inside gets as loopback ports: none at all
    means no network whatsoever (the sandbox has only its own loopback).
    """
    argv = [
        bwrap,
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "sandbox",
        *_system_binds(root),
    ]
    argv += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--bind",
        str(dirs.checkout),
        INSIDE_WORKSPACE,
        "--bind",
        str(dirs.home),
        INSIDE_HOME,
        "--bind",
        str(dirs.tmp),
        "/tmp",
        "--ro-bind",
        str(dirs.run),
        INSIDE_RUN,
    ]
    for path in dict.fromkeys(cli_dirs):  # last: the CLI may live under /tmp or a home
        argv += ["--ro-bind", str(path), str(path)]
    argv += [
        "--chdir",
        INSIDE_WORKSPACE,
        "--",
        SYSTEM_PYTHON,
        "-I",
        "-S",
        f"{INSIDE_RUN}/{RELAY}",
    ]
    for name, value in (
        ("nproc", limits.max_procs),
        ("nofile", limits.max_files),
        ("fsize", limits.max_file_mb << 20),
        ("core", 0),
    ):
        argv += ["--limit", f"{name}={value}"]
    for name in bridges:
        argv += ["--bridge", f"{BRIDGES[name]}={INSIDE_RUN}/{name}"]
    return [*argv, "--", *command]


def inside_env(token: str) -> dict[str, str]:
    """What the agent needs to reach ghapp's proxies from inside: addresses and its token."""
    proxy = f"http://127.0.0.1:{EGRESS_PORT}"
    return {
        "HOME": INSIDE_HOME,
        "TMPDIR": "/tmp",
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{MODEL_PORT}",
        "ANTHROPIC_API_KEY": token,
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        "http_proxy": proxy,
        "https_proxy": proxy,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


def find_bwrap() -> str | None:
    """The bwrap executable on PATH, if any."""
    return shutil.which("bwrap")


def probe(bwrap: str, uid: int | None = None, gid: int | None = None) -> str | None:
    """Why a minimal sandbox cannot start here (None when it can): userns off, no bwrap..."""
    argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent"]
    argv += [*_system_binds(Path("/")), "--proc", "/proc"]
    argv += ["--dev", "/dev", "--", "/usr/bin/true"]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            timeout=20,
            check=False,
            user=uid,
            group=gid,
            extra_groups=[] if uid is not None else None,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {bwrap}: {exc}"
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return f"bwrap exited {done.returncode}: {detail[-1] if detail else 'no output'}"
    return None


def tree_bytes(paths: Sequence[Path]) -> int:
    """Disk used under these trees (allocated blocks), symlinks not followed."""
    total = 0
    stack = [str(p) for p in paths]
    while stack:
        top = stack.pop()
        try:
            with os.scandir(top) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total
