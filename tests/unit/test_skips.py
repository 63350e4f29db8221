"""A test whose prerequisite is missing fails the run unless the caller opted out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
from tests.fakes.sandbox import require_sandbox_user

def test_needs_the_sandbox_user():
    require_sandbox_user()
"""


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "MC_TEST_ALLOW_SKIPS")}
    clean.update(MC_TEST_WORKER_USER="no-such-user-here", PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(probe)],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("env", [{}, {"CI": "true"}, {"CI": "true", "MC_TEST_ALLOW_SKIPS": "1"}])
def test_a_missing_prerequisite_fails(tmp_path: Path, env: dict[str, str]) -> None:
    result = _run(tmp_path, **env)
    assert result.returncode == 1, result.stdout
    assert "1 failed" in result.stdout and "MC_TEST_ALLOW_SKIPS=1" in result.stdout


def test_a_developer_opts_out_explicitly(tmp_path: Path) -> None:
    result = _run(tmp_path, MC_TEST_ALLOW_SKIPS="1")
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout and "no-such-user-here" in result.stdout
