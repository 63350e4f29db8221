"""`python -m ghapp check` starts a real sandbox and reports what the agent cannot reach."""

from __future__ import annotations

from ghapp.check import run_checks
from tests.fakes.sandbox import require_claude, require_sandbox_user
from tests.fakes.stack import shared_tmp


def env(**extra: str) -> dict[str, str]:
    data = shared_tmp("ghapp-check-") / "data"
    return {
        "WEBHOOK_SECRET": "x",
        "MC_WORKER_USER": require_sandbox_user(),
        "CLAUDE_BIN": str(require_claude()),
        "MC_DATA_DIR": str(data),
        **extra,
    }


def test_check_proves_the_sandbox() -> None:
    results = {name: (ok, detail) for name, ok, detail in run_checks(env())}
    assert results["sandbox network"] == (True, "none: only ghapp's proxies")
    assert results["sandbox /proc"][0], results["sandbox /proc"]
    assert results["sandbox files"][0] and "not visible" in results["sandbox files"][1]
    assert "agent memory limit" in results  # enforced, or said why not
    assert results["claude CLI"][0] and "2.1.197" in results["claude CLI"][1]


def test_check_fails_without_a_sandbox() -> None:
    results = {name: (ok, detail) for name, ok, detail in run_checks(env(MC_SANDBOX="none"))}
    assert results["sandbox"] == (False, "MC_SANDBOX=none: the agent is not confined (development)")
