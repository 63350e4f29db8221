"""Runs git safely: a minimal env, the token only in it, hooks off, the worker's privileges.

Everything security-sensitive about calling git lives here: the environment built from
nothing, credentials scrubbed from every message, the privilege drop for worker-owned
checkouts, and killing the whole process group on a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import pwd
import re
import shlex
import shutil
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from ghapp.core.model import GhappError

log = logging.getLogger(__name__)

_URL_CREDENTIALS_RE = re.compile(r"(://)[^/@\s]+@")
_STDERR_TAIL = 2000


class GitError(GhappError):
    """A git step failed; the message is scrubbed of credentials and safe to show."""


class GitResult(NamedTuple):
    """A git call's exit status and its standard output."""

    rc: int
    out: str


def _basic_credentials(token: str) -> str:
    """base64("x-access-token:TOKEN"): GitHub takes the token as a Basic password."""
    return base64.b64encode(f"x-access-token:{token}".encode()).decode()


def scrub(text: str, secret_values: Sequence[str]) -> str:
    """Remove every secret, its Basic encoding, and URL credentials from a message."""
    for value in secret_values:
        if value:
            text = text.replace(_basic_credentials(value), "***")
            text = text.replace(value, "***")
    return _URL_CREDENTIALS_RE.sub(r"\1***@", text)


def auth_config(clone_url: str, token: str) -> list[tuple[str, str]]:
    """The token as an extra header scoped to this repository's URL, via env config."""
    header = f"Authorization: Basic {_basic_credentials(token)}"
    return [(f"http.{clone_url}.extraHeader", header)]


class Git:
    """The git binary, run without blocking the loop, as ghapp or as the worker."""

    def __init__(
        self,
        worker_user: str | None,
        *,
        git_bin: str = "git",
        network_timeout_s: float = 900.0,
        local_timeout_s: float = 120.0,
    ) -> None:
        self.binary = shutil.which(git_bin) or git_bin
        self._net_timeout = network_timeout_s
        self._local_timeout = local_timeout_s
        self.worker_ids: tuple[int, int] | None = None
        self._setpriv = ""
        if worker_user is not None:
            try:
                entry = pwd.getpwnam(worker_user)
            except KeyError:
                raise GitError(
                    f"MC_WORKER_USER: there is no OS user {worker_user!r}; create it (README, "
                    '"The sandbox user") or unset MC_WORKER_USER for development'
                ) from None
            self.worker_ids = (entry.pw_uid, entry.pw_gid)
            self._setpriv = shutil.which("setpriv") or ""
            if not self._setpriv:
                raise GitError(
                    "MC_WORKER_USER is set but setpriv is missing: apt-get install util-linux"
                )

    def upload_pack_as_worker(self, home: Path) -> str:
        """A shell command that serves a checkout with the worker's privileges only."""
        assert self.worker_ids is not None
        uid, gid = self.worker_ids
        return shlex.join(
            [
                "env",
                f"HOME={home}",
                self._setpriv,
                f"--reuid={uid}",
                f"--regid={gid}",
                "--clear-groups",
                "--no-new-privs",
                self.binary,
                "upload-pack",
            ]
        )

    async def give_to_worker(self, *paths: Path) -> None:
        """Hand directories ghapp made over to the worker (no-op without a worker user)."""
        if self.worker_ids is not None:
            for path in paths:
                await asyncio.to_thread(_chown_tree, path, *self.worker_ids)

    async def run(
        self,
        args: list[str],
        cwd: Path | None = None,
        *,
        check: bool = True,
        config: Sequence[tuple[str, str]] = (),
        hidden: Sequence[str] = (),
        worker_home: Path | None = None,
        network: bool = False,
    ) -> GitResult:
        """Run git; its status and output as text, or GitError when `check` and it failed."""
        rc, out = await self.run_bytes(
            args,
            cwd,
            check=check,
            config=config,
            hidden=hidden,
            worker_home=worker_home,
            network=network,
        )
        return GitResult(rc, out.decode(errors="replace"))

    async def run_bytes(
        self,
        args: list[str],
        cwd: Path | None = None,
        *,
        check: bool = True,
        config: Sequence[tuple[str, str]] = (),
        hidden: Sequence[str] = (),
        worker_home: Path | None = None,
        network: bool = False,
    ) -> tuple[int, bytes]:
        """Run git; (returncode, raw stdout), or GitError when `check` and it failed.

        `worker_home` runs it as the worker; `hidden` values never reach a log or an error.
        """
        as_worker = worker_home is not None and self.worker_ids is not None
        ids = self.worker_ids if as_worker else None
        log.debug("git %s (cwd=%s, as_worker=%s)", scrub(" ".join(args), hidden), cwd, as_worker)
        proc = await asyncio.create_subprocess_exec(
            self.binary,
            *args,
            cwd=cwd,
            env=_env(config, worker_home),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            user=ids[0] if ids else None,
            group=ids[1] if ids else None,
            extra_groups=[] if ids else None,
        )
        limit = self._net_timeout if network else self._local_timeout
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for returns a result that lands with
            # a cancel and swallows the cancel; a stopping runner then waited on its job for ever.
            async with asyncio.timeout(limit):
                out, err = await proc.communicate()
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            raise GitError(f"git {args[0]} timed out after {limit:.0f}s") from None
        except asyncio.CancelledError:
            _kill_group(proc.pid)
            raise
        rc = proc.returncode or 0
        if rc and check:
            detail = err.decode(errors="replace").strip()[-_STDERR_TAIL:]
            raise GitError(scrub(f"git {args[0]} failed (exit {rc}): {detail}", hidden))
        return rc, out


def _env(config: Sequence[tuple[str, str]], home: Path | None) -> dict[str, str]:
    """A minimal env: no inherited secrets, no prompts, config passed as GIT_CONFIG_*."""
    pairs = [("credential.helper", ""), *config]
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home) if home else os.environ.get("HOME", "/"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": shutil.which("true") or "/bin/true",
        "SSH_ASKPASS": shutil.which("true") or "/bin/true",
        "GIT_PAGER": "cat",
        "GIT_EDITOR": "true",
        "GIT_CONFIG_COUNT": str(len(pairs)),
    }
    for i, (key, value) in enumerate(pairs):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


def _kill_group(pid: int) -> None:
    """SIGKILL git and its helpers (remote-https, pack-objects) together."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    """chown -R without following symlinks (a repository may contain them)."""
    os.chown(top, uid, gid, follow_symlinks=False)
    for root, dirs, files in os.walk(top, followlinks=False):
        for entry in (*dirs, *files):
            os.chown(os.path.join(root, entry), uid, gid, follow_symlinks=False)
