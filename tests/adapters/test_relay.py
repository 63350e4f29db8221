"""The sandbox's relay holds a lifeline to ghapp: the agent ends when ghapp dies, whenever.

bwrap's --die-with-parent is armed only once bwrap runs, after `setpriv` or `sudo` switched
user; a ghapp killed in that instant left a sandbox behind (the chaos test saw it once). The
relay runs the relay script as the sandbox would, without bwrap: the lifeline is its own.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from importlib import resources
from pathlib import Path

from ghapp.agent.relay import GHAPP_GONE
from tests.fakes.ghapp_process import alive, free_port
from tests.fakes.stack import eventually

RELAY = str(resources.files("ghapp.agent").joinpath("relay.py"))
# ghapp's end of a bridge socket: it accepts and holds every connection until it is killed,
# or (with "close") ends each one at once, as a server closing idle connections does.
GHAPP = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(16)
held = []
while True:
    conn, _ = s.accept()
    conn.close() if sys.argv[2] == "close" else held.append(conn)
"""


async def _ghapp(sock: Path, mode: str = "hold") -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", GHAPP, str(sock), mode)
    await eventually(sock.exists, within=5)
    return proc


async def _relay(sock: Path, port: int, *command: str) -> asyncio.subprocess.Process:
    bridge = f"{port}={sock}"
    argv = [sys.executable, "-I", "-S", RELAY, "--bridge", bridge, "--", *command]
    return await asyncio.create_subprocess_exec(*argv)


async def test_the_agent_ends_when_ghapp_is_killed(tmp_path: Path) -> None:
    sock, pidfile = tmp_path / "model.sock", tmp_path / "agent.pid"
    ghapp = await _ghapp(sock)
    relay = await _relay(sock, free_port(), "sh", "-c", f'echo $$ > "{pidfile}"; exec sleep 600')
    try:
        await eventually(lambda: pidfile.exists() and bool(pidfile.read_text().strip()), within=10)
        agent = int(pidfile.read_text())
        ghapp.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(relay.wait(), 5) == GHAPP_GONE
        await eventually(lambda: not alive(agent), within=5)
    finally:
        for proc in (relay, ghapp):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_no_agent_starts_once_ghapp_is_gone(tmp_path: Path) -> None:
    sock, ran = tmp_path / "model.sock", tmp_path / "ran"
    ghapp = await _ghapp(sock)
    ghapp.kill()
    await ghapp.wait()  # its socket file stays, refusing: ghapp died as the sandbox started
    relay = await _relay(sock, free_port(), "touch", str(ran))
    assert await asyncio.wait_for(relay.wait(), 10) == GHAPP_GONE
    assert not ran.exists()


async def test_connections_ghapp_closes_while_alive_do_not_end_the_agent(tmp_path: Path) -> None:
    sock = tmp_path / "model.sock"
    ghapp = await _ghapp(sock, "close")
    try:
        relay = await _relay(sock, free_port(), "sh", "-c", "sleep 1; exit 3")
        assert await asyncio.wait_for(relay.wait(), 10) == 3
    finally:
        ghapp.kill()
        await ghapp.wait()
