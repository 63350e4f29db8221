"""The agent's only way to the network: an HTTP(S) proxy that lets through the allowed hosts.

The sandbox has no network of its own; this proxy, reached over a unix socket, decides per
connection. Names are checked before anything is resolved; resolved addresses are checked
again, so a name that points at loopback, the LAN or cloud metadata is refused unless the
operator named it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ghapp.agent.relay import pipe

log = logging.getLogger(__name__)

# Public package registries of the major ecosystems (sandbox.md §8); nothing that takes uploads.
DEFAULT_ALLOW_HOSTS = (
    "registry.npmjs.org registry.npmjs.com npmjs.org www.npmjs.com registry.yarnpkg.com "
    "repo.yarnpkg.com yarnpkg.com nodejs.org get.pnpm.io bun.sh jsr.io deno.land "
    "pypi.org pypi.python.org files.pythonhosted.org *.pythonhosted.org pip.pypa.io "
    "bootstrap.pypa.io conda.anaconda.org repo.anaconda.com anaconda.org "
    "crates.io index.crates.io static.crates.io static.rust-lang.org sh.rustup.rs "
    "proxy.golang.org sum.golang.org go.dev golang.org pkg.go.dev "
    "repo.maven.apache.org repo1.maven.org central.sonatype.com maven.google.com "
    "dl.google.com services.gradle.org plugins.gradle.org plugins-artifacts.gradle.org "
    "downloads.gradle-dn.com rubygems.org api.rubygems.org index.rubygems.org "
    "cache.ruby-lang.org api.nuget.org nuget.org repo.packagist.org packagist.org pub.dev"
).split()
WEB_PORTS = (80, 443)
MAX_HEAD = 16 << 10
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


@dataclass(frozen=True)
class AllowList:
    """MC_AGENT_ALLOW_HOSTS: names, `*.suffix`, IP literals, optional `:port`; `*` is all."""

    entries: tuple[str, ...] = ()
    operator: bool = True  # the operator's own list: a name in it may point anywhere

    @classmethod
    def parse(cls, raw: str | None) -> AllowList:
        """Comma- or space-separated entries; None means the default registries."""
        if raw is None:
            return cls(tuple(DEFAULT_ALLOW_HOSTS), operator=False)
        return cls(tuple(e.strip().lower() for e in raw.replace(",", " ").split() if e.strip()))

    @property
    def everything(self) -> bool:
        return "*" in self.entries

    def _pairs(self) -> Iterable[tuple[str, int | None]]:
        for entry in self.entries:
            host, port = _split_entry(entry)
            yield host, port

    def names(self, host: str, port: int) -> bool:
        """Whether host:port is named itself (no wildcard): that lifts the private-address rule."""
        return any(
            h == host and (p == port or (p is None and port in WEB_PORTS)) for h, p in self._pairs()
        )

    def matches(self, host: str, port: int) -> bool:
        """Whether host:port is allowed by name, wildcard or `*` (web ports only for those)."""
        if self.names(host, port):
            return True
        if port not in WEB_PORTS:
            return False
        if self.everything:
            return True
        return any(
            h.startswith("*.") and host.endswith(h[1:]) and p is None for h, p in self._pairs()
        )


def _split_entry(entry: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]:port` or a bare IPv6 literal."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest.removeprefix(":")
        return host, int(port) if port.isdigit() else None
    if entry.count(":") == 1:
        host, port = entry.split(":")
        return host, int(port) if port.isdigit() else None
    return entry, None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def decide_name(host: str, port: int, allow: AllowList) -> str | None:
    """Why a requested host:port is refused before any lookup, or None to go on."""
    host = host.lower().rstrip(".")
    if not host or not 0 < port < 65536:
        return "bad target"
    if allow.names(host, port):
        return None
    if _ip(host) is not None and not allow.everything:
        return "IP literal not in MC_AGENT_ALLOW_HOSTS"
    if not allow.matches(host, port):
        return "not in MC_AGENT_ALLOW_HOSTS"
    return None


def decide_addresses(
    host: str, port: int, addresses: Sequence[str], allow: AllowList
) -> str | None:
    """Why the resolved addresses are refused: loopback, private, link-local and every other
    non-global address need the host named explicitly (DNS rebinding, cloud metadata)."""
    if not addresses:
        return "does not resolve"
    if allow.operator and allow.names(host.lower().rstrip("."), port):
        return None
    for text in addresses:
        addr = _ip(text)
        if addr is None or not addr.is_global or addr.is_multicast:
            return f"resolves to a non-public address ({text})"
    return None


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """Addresses of a name, looked up by ghapp (the sandbox has no DNS)."""
    if _ip(host) is not None:
        return [host.strip("[]")]
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass
class EgressProxy:
    """One attempt's proxy; counts what it refused so the maintainer can allow it."""

    allow: AllowList
    label: str = ""
    resolver: Resolver = system_resolver
    blocked: Counter[str] = field(default_factory=Counter)
    _server: asyncio.AbstractServer | None = None
    _conns: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, unix_path: Path | None = None) -> str:
        """Listen on a unix socket (sandbox) or a loopback port; returns where."""
        if unix_path is not None:
            self._server = await asyncio.start_unix_server(self._serve, str(unix_path))
            return str(unix_path)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)

    def summary(self) -> str:
        """`blocked: host ×n, …` for the tracking comment and PR body; empty if none."""
        if not self.blocked:
            return ""
        shown = ", ".join(f"{h} ×{n}" for h, n in self.blocked.most_common(20))
        return f"blocked: {shown}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._proxy(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """CONNECT host:port, or an absolute-form plain HTTP request."""
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD:
            return await _refuse(writer, 431, "request head too large")
        line, _, rest = head.decode("latin-1").partition("\r\n")
        parts = line.split(" ")
        if len(parts) != 3:
            return await _refuse(writer, 400, "bad request line")
        method, target, version = parts
        if method == "CONNECT":
            host, port = _host_port(target, 443)
            forward = b""
        else:
            url = urlsplit(target)
            if url.scheme != "http" or not url.hostname:
                return await _refuse(writer, 400, "only CONNECT or absolute http:// URLs")
            host, port = url.hostname, url.port or 80
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            kept = [h for h in rest.split("\r\n") if h and not h.lower().startswith("proxy-")]
            forward = f"{method} {path} {version}\r\n".encode("latin-1")
            forward += "".join(f"{h}\r\n" for h in kept).encode("latin-1") + b"\r\n"
        why = decide_name(host, port, self.allow)
        addresses: Sequence[str] = ()
        if why is None:
            try:
                addresses = await self.resolver(host, port)
            except OSError:
                addresses = ()
            why = decide_addresses(host, port, addresses, self.allow)
        if why is not None:
            self.blocked[host.lower()] += 1
            log.info("%s: egress to %s:%s refused: %s", self.label, host, port, why)
            return await _refuse(writer, 403, f"ghapp egress: {host}:{port} {why}")
        try:  # pinned to the address just checked: no second lookup to rebind
            up_r, up_w = await asyncio.open_connection(addresses[0], port)
        except OSError as exc:
            return await _refuse(writer, 502, f"ghapp egress: {host}:{port}: {exc.strerror}")
        log.info("%s: egress to %s:%s allowed", self.label, host, port)
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            up_w.write(forward)
        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))


def _host_port(target: str, default: int) -> tuple[str, int]:
    """`host:port` of a CONNECT target (IPv6 in brackets)."""
    host, port = _split_entry(target)
    return host, port if port is not None else default


async def _refuse(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    body = (text + "\n").encode()
    writer.write(
        f"HTTP/1.1 {status} Refused\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()
