"""Runs inside the sandbox as the agent's parent: limits, loopback bridges to ghapp, then the CLI.

Standalone (standard library only): ghapp copies it into the attempt's run directory and the
sandbox runs it with the system Python. The sandbox has no network, so the model API and the
egress proxy are unix sockets that ghapp serves; this bridges each to a loopback port, because
the CLI and package tools speak TCP. When the CLI exits, so does this, and with it the
sandbox's PID namespace: nothing the agent started outlives the attempt.

It also holds a connection to the first bridge's socket as a lifeline: if ghapp dies, even in
the instant before bwrap's --die-with-parent is armed, the connection ends and the socket then
refuses, so this ends the CLI and the sandbox with it (and never starts a CLI without ghapp).

usage: relay.py [--limit NAME=N]... [--bridge PORT=SOCKET]... -- COMMAND...
"""

from __future__ import annotations

import asyncio
import resource
import signal
import sys

GHAPP_GONE = 125  # exit status when ghapp died (or was gone before the CLI could start)
LIMITS = {
    "nproc": resource.RLIMIT_NPROC,
    "nofile": resource.RLIMIT_NOFILE,
    "fsize": resource.RLIMIT_FSIZE,
    "core": resource.RLIMIT_CORE,
}


async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy one direction until EOF, then half-close (egress.py uses it too)."""
    try:
        while chunk := await src.read(1 << 16):
            dst.write(chunk)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except OSError:
        dst.close()


def _bridge(path: str):  # type: ignore[no-untyped-def]
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_unix_connection(path)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer), return_exceptions=True)
        up_w.close()
        writer.close()

    return serve


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _reach(path: str) -> Conn | None:
    """A connection to ghapp's socket; None once nobody listens there (ghapp died)."""
    while True:
        try:
            return await asyncio.open_unix_connection(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        except OSError:  # a full backlog: ghapp is there, busy
            await asyncio.sleep(0.1)


async def lifeline(path: str, conn: Conn | None) -> None:
    """Return once ghapp is gone: a connection ended and a new one refused (an idle connection
    ghapp closed while alive is opened again)."""
    while conn is not None:
        reader, writer = conn
        try:
            while await reader.read(1 << 12):
                pass
        except OSError:
            pass
        writer.close()
        await asyncio.sleep(0.1)  # closed while ghapp lives: open again, without spinning
        conn = await _reach(path)


async def main(argv: list[str]) -> int:
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1 :]
    bridges: list[tuple[int, str]] = []
    for flag, value in zip(options[::2], options[1::2], strict=True):
        name, _, number = value.partition("=")
        if flag == "--limit":
            resource.setrlimit(LIMITS[name], (int(number), int(number)))
        elif flag == "--bridge":
            bridges.append((int(name), number))
    servers = [
        await asyncio.start_server(_bridge(path), "127.0.0.1", port, backlog=4096)
        for port, path in bridges
    ]
    watched = []
    if bridges:  # ghapp is there before the CLI starts, or no CLI starts
        first = await _reach(bridges[0][1])
        if first is None:
            return GHAPP_GONE
        watched.append(asyncio.ensure_future(lifeline(bridges[0][1], first)))
    proc = await asyncio.create_subprocess_exec(*command)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, proc.send_signal, sig)
    ended = asyncio.ensure_future(proc.wait())
    await asyncio.wait([ended, *watched], return_when=asyncio.FIRST_COMPLETED)
    for server in servers:
        server.close()
    if not ended.done():  # ghapp is gone: this exits, and the namespace's processes with it
        proc.kill()
        return GHAPP_GONE
    code = ended.result()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
