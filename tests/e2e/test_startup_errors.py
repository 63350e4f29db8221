"""Every start-up error an operator can cause is one line naming the setting and the fix:
no traceback, no "Unclosed client session" (a real `python -m ghapp` process)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.sandbox import require_sandbox_user

ROOT = Path(__file__).resolve().parents[2]


def _key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _start(tmp_path: Path, **env: str) -> tuple[int, list[str]]:
    """Run ghapp to its first error; returns the exit status and stderr's lines."""
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "WEBHOOK_SECRET": "s3cret",
        "APP_ID": "1",
        "PRIVATE_KEY": _key(),
        "MC_DATA_DIR": str(tmp_path / "data"),
        "HOST": "127.0.0.1",
        "PORT": "0",
        "MC_SANDBOX": "none",
        "GITHUB_API_URL": "http://127.0.0.1:9",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "ghapp"],
        cwd=tmp_path,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, [line for line in proc.stderr.splitlines() if line.strip()]


def _newer_database(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "data").mkdir()
    with sqlite3.connect(tmp_path / "data" / "ghapp.sqlite3") as db:
        db.execute("PRAGMA user_version = 999")
    return {}


CASES: dict[str, tuple[Callable[[Path], dict[str, str]], tuple[str, ...]]] = {
    "missing sandbox user": (
        lambda _: {"MC_WORKER_USER": "no-such-user-here"},
        ("MC_WORKER_USER", "no-such-user-here", "create it"),
    ),
    "missing setpriv": (
        lambda _: {},
        ("setpriv", "apt-get install util-linux"),
    ),
    "newer database": (
        _newer_database,
        ("DATABASE_URL", "newer", "restore the backup"),
    ),
    "bad key": (
        lambda _: {"PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"},
        ("PRIVATE_KEY", "does not parse", "download a new private key"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_startup_error_is_one_line_naming_the_setting_and_the_fix(
    tmp_path: Path, case: str
) -> None:
    make_env, needles = CASES[case]
    env = make_env(tmp_path)
    if case == "missing setpriv":
        env["MC_WORKER_USER"] = require_sandbox_user()  # it exists: only setpriv is missing
        env["PATH"] = str(_python_only(tmp_path))
    status, lines = _start(tmp_path, **env)
    errors = [line for line in lines if line.startswith("ghapp:")]
    assert status == 2, lines
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    assert not [line for line in lines if "Traceback" in line or "Unclosed" in line], lines
    for needle in needles:
        assert needle in errors[0], errors[0]


def _python_only(tmp_path: Path) -> Path:
    """A PATH with git but without setpriv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git",):
        found = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        (bin_dir / tool).symlink_to(found)
    return bin_dir
