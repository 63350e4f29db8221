"""`python -m ghapp check` starts a real sandbox and reports what the agent cannot reach."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ghapp.check import TESTED_CLAUDE_VERSION, run_checks
from tests.fakes.anthropic import ScriptedAnthropic
from tests.fakes.github import FakeGitHub
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


async def test_check_asks_github_and_the_model_at_no_cost(tmp_path: Path) -> None:
    github = FakeGitHub()
    await github.start()
    github.add_repo("octo/app", installation_id=7)
    api = ScriptedAnthropic(api_key="sk-ant-good")
    base = await api.start()
    app = {
        "APP_ID": str(github.app_id),
        "PRIVATE_KEY": github.private_key_pem,
        "GITHUB_API_URL": github.base_url,
        "ANTHROPIC_BASE_URL": base,
    }
    try:
        good = await asyncio.to_thread(run_checks, env(**app, ANTHROPIC_API_KEY="sk-ant-good"))
        results = {name: (ok, detail) for name, ok, detail in good}
        assert results["GitHub App"] == (True, f"{github.app_slug} authenticates")
        assert results["installations"][0] and "1:" in results["installations"][1]
        assert results["model credential"][0], results["model credential"]
        assert ("GET", "/v1/models") in api.calls and api.requests == []  # nothing billed
        bad = await asyncio.to_thread(
            run_checks, env(**{**app, "APP_ID": "999"}, ANTHROPIC_API_KEY="sk-ant-wrong")
        )
        results = {name: (ok, detail) for name, ok, detail in bad}
        assert results["GitHub App"][0] is False
        assert results["model credential"][0] is False
        assert "ANTHROPIC_API_KEY is refused" in results["model credential"][1]
    finally:
        await api.close()
        await github.close()


def test_check_reports_every_problem_at_once(tmp_path: Path) -> None:
    broken = {**env(CLAUDE_BIN=str(tmp_path / "no-claude")), "WEBHOOK_SECRET": ""}
    results = {name: (ok, detail) for name, ok, detail in run_checks(broken)}
    assert results["configuration"][0] is False and "WEBHOOK_SECRET" in results["configuration"][1]
    assert results["claude CLI"][0] is False  # still checked despite the bad configuration
    assert results["sandbox user"][0], results["sandbox user"]


def test_check_judges_the_data_dir_it_created_as_serve_would() -> None:
    settings = env()
    results = {name: (ok, detail) for name, ok, detail in run_checks(settings)}
    assert results["data dir"][0] and results["sandbox user"][0], results["sandbox user"]
    assert Path(settings["MC_DATA_DIR"]).stat().st_mode & 0o777 == 0o711


def test_check_compares_the_cli_with_the_tested_version(tmp_path: Path) -> None:
    fake_cli = tmp_path / "claude"
    fake_cli.write_text("#!/bin/sh\necho '9.9.9 (Claude Code)'\n")
    fake_cli.chmod(0o755)
    results = {name: (ok, d) for name, ok, d in run_checks(env(CLAUDE_BIN=str(fake_cli)))}
    ok, detail = results["claude CLI"]
    assert not ok and "9.9.9" in detail and TESTED_CLAUDE_VERSION in detail
    run_sh = (Path(__file__).resolve().parents[1] / "run.sh").read_text()
    assert f"CLAUDE_VERSION={TESTED_CLAUDE_VERSION}\n" in run_sh  # one tested version
