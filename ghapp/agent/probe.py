"""`check` starts one real sandbox and proves what the agent cannot reach from inside it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from ghapp.agent import cgroup, sandbox
from ghapp.agent.jail import Identity, Jail

Check = tuple[str, bool, str]
INSIDE = """
import json, os, socket, sys
host_port, ghapp_pid, data_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
try:
    socket.create_connection(("127.0.0.1", host_port), timeout=2).close()
    net = "reached ghapp's loopback"
except OSError:
    net = ""
pids = [p for p in os.listdir("/proc") if p.isdigit()]
print(json.dumps({"net": net, "pids": len(pids), "ghapp": ghapp_pid in pids,
                  "data": os.path.exists(data_dir)}))
"""


def _unix_listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.listen()
    os.chmod(path, 0o666)
    return sock


def prove(bwrap: str, identity: Identity, data_dir: Path) -> list[Check]:
    """Run INSIDE in a sandbox like an attempt's; one line per property."""
    base = Path(tempfile.mkdtemp(prefix="ghapp-check-"))
    listener = socket.socket()
    serving: list[socket.socket] = []
    try:
        os.chmod(base, 0o711)
        checkout, home = base / "repo", base / "home"
        for path in (checkout, home):
            path.mkdir(mode=0o700)
            if identity.switch == "setpriv":
                os.chown(path, identity.uid, identity.gid)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        jail = Jail.open(identity, checkout, home, bwrap, sandbox.AgentLimits(), (), None, "")
        for name in jail.bridges:  # ghapp's ends, as in an attempt: the relay needs them alive
            serving.append(_unix_listener(jail.socket(name)))
        port = str(listener.getsockname()[1])
        command = [sandbox.SYSTEM_PYTHON, "-I", "-S", "-c", INSIDE, port, str(os.getpid())]
        env = {"PATH": "/usr/bin:/bin", "HOME": sandbox.INSIDE_HOME, "LANG": "C.UTF-8"}
        done = subprocess.run(
            jail.argv([*command, str(data_dir.resolve())], env),
            env=env,
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        shutil.rmtree(jail.dirs.run, ignore_errors=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [("sandbox", False, f"could not start one: {exc}")]
    finally:
        for sock in (listener, *serving):
            sock.close()
        shutil.rmtree(base, ignore_errors=True)
    try:
        seen = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        err = done.stderr.decode(errors="replace").strip()[-300:]
        return [("sandbox", False, f"exited {done.returncode}: {err or 'no output'}")]
    return [
        ("sandbox network", not seen["net"], seen["net"] or "none: only ghapp's proxies"),
        (
            "sandbox /proc",
            not seen["ghapp"] and seen["pids"] < 10,
            f"its own: {seen['pids']} processes, ghapp's not among them",
        ),
        (
            "sandbox files",
            not seen["data"],
            f"{data_dir} is {'VISIBLE' if seen['data'] else 'not visible'} inside",
        ),
    ]


def memory_limit() -> Check:
    """Whether MC_AGENT_MEMORY_MB can be enforced here; a warning, not a failure."""
    why = cgroup.unavailable()
    if why is None:
        return ("agent memory limit", True, "enforced with a cgroup v2 per attempt")
    return ("agent memory limit", True, f"NOT enforced: {why}; processes, files, disk are")
