"""`python -m ghapp check`: a pass/fail list of everything ghapp needs before it starts."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ghapp.agent.claude import agent_identity
from ghapp.agent.probe import memory_limit, prove
from ghapp.agent.sandbox import find_bwrap, probe
from ghapp.bootstrap import prepare_data_dir
from ghapp.check_db import database
from ghapp.check_remote import remote_checks
from ghapp.config import ConfigError, Settings, load_settings
from ghapp.core.model import GhappError
from ghapp.retention import disk_usage, megabytes

Check = tuple[str, bool, str]
TESTED_CLAUDE_VERSION = "2.1.197"  # tests/run.sh installs this one (CLAUDE_VERSION)


def _key(settings: Settings) -> Check:
    if settings.private_key is None:
        return ("private key", False, "PRIVATE_KEY or PRIVATE_KEY_PATH is not set")
    try:
        load_pem_private_key(settings.private_key.encode(), password=None)
    except (ValueError, TypeError) as exc:
        return ("private key", False, f"does not parse: {exc}")
    return ("private key", True, "parses")


def _data_dir(settings: Settings) -> Check:
    path = settings.data_dir
    try:
        prepare_data_dir(path)  # as serve does: 0711, so the isolation check judges that
        probe = path / ".ghapp-write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        return ("data dir", False, f"{path} is not writable: {exc.strerror}")
    return ("data dir", True, f"{path.resolve()} is writable")


def _claude(settings: Settings) -> Check:
    found = shutil.which(settings.claude_bin)
    if found is None:
        return ("claude CLI", False, f"{settings.claude_bin!r} not found (set CLAUDE_BIN)")
    try:
        out = subprocess.run(
            [found, "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return ("claude CLI", False, f"{found} does not run: {exc}")
    if out.returncode != 0:
        return ("claude CLI", False, f"{found} --version exited {out.returncode}")
    version = (out.stdout.split() or ["?"])[0]
    if version != TESTED_CLAUDE_VERSION:
        return (
            "claude CLI",
            False,
            f"{found} is {version}, ghapp is tested with {TESTED_CLAUDE_VERSION}: "
            f"npm install -g @anthropic-ai/claude-code@{TESTED_CLAUDE_VERSION}",
        )
    return ("claude CLI", True, f"{found} {out.stdout.strip()} (the tested version)")


def _sandbox(settings: Settings) -> Check:
    user = settings.worker_user
    if user is None:
        return ("sandbox user", False, "MC_WORKER_USER is not set (agent would run as ghapp)")
    try:
        pwd.getpwnam(user)
    except KeyError:
        return ("sandbox user", False, f"user {user!r} does not exist (see README)")
    if os.geteuid() != 0:
        return ("sandbox user", True, f"{user} exists (run check as root to test isolation)")
    target = settings.sqlite_path if settings.sqlite_path.exists() else settings.data_dir
    probe = subprocess.run(
        ["ls", str(settings.data_dir)], user=user, capture_output=True, stdin=subprocess.DEVNULL
    )
    read = subprocess.run(
        ["head", "-c1", str(target)], user=user, capture_output=True, stdin=subprocess.DEVNULL
    )
    if probe.returncode == 0 or (target.is_file() and read.returncode == 0):
        return ("sandbox user", False, f"{user} can read {settings.data_dir}; chmod 711 it")
    return ("sandbox user", True, f"{user} exists and cannot read {settings.data_dir}")


def _isolation(settings: Settings) -> list[Check]:
    """Start a real sandbox as the agent's would be, and prove what it cannot reach."""
    if settings.sandbox == "none":
        return [("sandbox", False, "MC_SANDBOX=none: the agent is not confined (development)")]
    bwrap = find_bwrap()
    if bwrap is None:
        return [("sandbox", False, "bwrap not found: apt-get install bubblewrap")]
    try:
        identity = agent_identity(settings.worker_user)
    except GhappError as exc:
        return [("sandbox", False, str(exc))]
    why = probe(bwrap, identity.uid, identity.gid)
    if why is not None:
        return [("sandbox", False, why)]
    return [*prove(bwrap, identity, settings.data_dir), memory_limit()]


def _disk(settings: Settings) -> Check:
    if not settings.data_dir.is_dir():
        return ("disk", True, f"{settings.data_dir} does not exist yet")
    usage = disk_usage(settings.data_dir)
    detail = (
        f"{megabytes(usage['data_bytes'])} used by {usage['path']}, "
        f"{megabytes(usage['free_bytes'])} free of {megabytes(usage['total_bytes'])}"
    )
    low = " (under 1 GB free: run python -m ghapp prune, or free space)" if usage["low"] else ""
    return ("disk", not usage["low"], detail + low)


def _git(_: Settings) -> Check:
    found = shutil.which("git")
    return ("git", found is not None, found or "git not found on PATH")


CHECKS: tuple[Callable[[Settings], Check], ...] = (
    _key,
    _data_dir,
    _disk,
    database,
    _claude,
    _sandbox,
    _git,
)


HOST_CHECKS: tuple[Callable[[Settings], Check], ...] = (_claude, _sandbox, _git)


def _fallback(env: Mapping[str, str]) -> Settings:
    """What the host checks need, read plainly when the configuration as a whole is invalid."""
    return Settings(
        webhook_secret="",
        data_dir=Path(env.get("MC_DATA_DIR") or "data"),
        worker_user=env.get("MC_WORKER_USER") or None,
        claude_bin=env.get("CLAUDE_BIN") or "claude",
        sandbox=(env.get("MC_SANDBOX") or "bwrap").lower(),
    )


def run_checks(env: Mapping[str, str] | None = None) -> list[Check]:
    """Every check, all at once: a bad setting does not hide the host's other problems."""
    try:
        settings = load_settings(env)
    except ConfigError as exc:
        fallback = _fallback(os.environ if env is None else env)
        results = [("configuration", False, str(exc))]
        results += [check(fallback) for check in HOST_CHECKS]
        return results + _isolation(fallback)
    results = [("configuration", True, "all variables valid")]
    results += [check(settings) for check in CHECKS]
    results += _isolation(settings)
    return results + asyncio.run(remote_checks(settings))


def main(env: Mapping[str, str] | None = None) -> int:
    """Print the list; exit status 0 only if everything passed."""
    results = run_checks(env)
    for name, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    failed = sum(1 for _, ok, _ in results if not ok)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0
