"""`.github/ghapp.yml`: what a maintainer may write, and the exact error for what they may not."""

from __future__ import annotations

from pathlib import Path

import pytest

from ghapp.__main__ import main
from ghapp.core.gate import (
    DEFAULT_PROTECTED,
    OnRed,
    SettingsInvalid,
    changed_tests,
    matches,
    touched,
)
from ghapp.repo_settings import Caps, parse

FULL = """\
version: 1
base_branch: develop
instructions: docs/AGENT.md
setup:
  - pip install -e .
verify:
  - ruff check .
  - pytest -q
verify_timeout_s: 300
verify_retries: 1
on_red: draft
model: claude-sonnet-4-5
max_budget_usd: 3
max_turns: 50
timeout_min: 20
protected_paths:
  - migrations/**
ci_fix: false
"""
CAPS = Caps(
    models=("claude-sonnet-4-5",),
    max_budget_usd=10,
    max_turns=200,
    timeout_s=1800,
    verify_timeout_max_s=1800,
)


def test_a_full_file_gives_every_setting_and_adds_to_the_operators_paths() -> None:
    s = parse(FULL, CAPS).settings
    assert s.present and s.base_branch == "develop" and s.instructions_path == "docs/AGENT.md"
    assert s.setup == ("pip install -e .",) and s.verify == ("ruff check .", "pytest -q")
    assert (s.verify_timeout_s, s.verify_retries, s.on_red) == (300, 1, OnRed.DRAFT)
    assert (s.model, s.max_budget_usd, s.max_turns, s.timeout_min) == (
        "claude-sonnet-4-5",
        3,
        50,
        20,
    )
    assert s.protected_paths == (*DEFAULT_PROTECTED, "migrations/**") and s.ci_fix is False
    assert "`pytest -q`" in s.describe() and "draft" in s.describe()


def test_defaults() -> None:
    s = parse("version: 1\n", CAPS).settings
    assert (s.setup, s.verify, s.on_red, s.verify_retries, s.ci_fix) == ((), (), "fix", 2, True)
    assert s.verify_timeout_s == 600 and s.model is None and s.max_budget_usd is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 1\nverfy: [make]\n", ".github/ghapp.yml:2: verfy: unknown key; the keys are"),
        ("verify: [make]\n", ".github/ghapp.yml:1: version: required; allowed: 1"),
        ("version: 2\n", ".github/ghapp.yml:1: version: must be 1, got 2"),
        ("version: true\n", ".github/ghapp.yml:1: version: must be 1, got True"),
        ("version: 1\nverify:\n  - ok\n  - 3\n", ".github/ghapp.yml:4: verify[1]: Input should"),
        ("version: 1\nverify: make\n", ".github/ghapp.yml:2: verify: Input should be a valid list"),
        ("version: 1\nci_fix: yes\n", ".github/ghapp.yml:2: ci_fix: Input should be a valid bool"),
        ("version: 1\non_red: maybe\n", ".github/ghapp.yml:2: on_red: Input should be 'fix'"),
        ("version: 1\nverify_retries: 9\n", ".github/ghapp.yml:2: verify_retries: Input should"),
        ("version: 1\nmax_turns: '5'\n", ".github/ghapp.yml:2: max_turns: Input should be a valid"),
        ("version: 1\nversion: 1\n", ".github/ghapp.yml:2: YAML error: found duplicate key"),
        ("version: 1\nverify: [a\n", ".github/ghapp.yml:3: YAML error"),
        ("- version\n", ".github/ghapp.yml:1: the file must be a mapping"),
        ("version: 1\nverify: ['  ']\n", ".github/ghapp.yml:2: verify[0]: an empty command"),
        ("version: 1\nbase_branch: -x\n", ".github/ghapp.yml:2: base_branch: '-x' is not a"),
        ("version: 1\ninstructions: ../x\n", ".github/ghapp.yml:2: instructions: must be a rel"),
    ],
)
def test_an_invalid_file_names_file_line_key_and_what_is_allowed(text: str, expected: str) -> None:
    with pytest.raises(SettingsInvalid) as caught:
        parse(text, CAPS)
    assert str(caught.value).startswith(expected), str(caught.value)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("max_budget_usd: 20", "max_budget_usd: 20 is over the operator's cap 10 (MC_TASK_BUD"),
        ("max_turns: 500", "max_turns: 500 is over the operator's cap 200 (MC_MAX_TURNS)"),
        ("timeout_min: 31", "timeout_min: 31 is over the operator's cap 30 (MC_SOFT_TIMEOUT_S"),
        ("verify_timeout_s: 4000", "verify_timeout_s: 4000 is over the operator's cap 1800"),
        ("model: claude-opus-4", "model: 'claude-opus-4' is not allowed; MC_MODELS allows claud"),
    ],
)
def test_a_value_over_a_cap_is_refused_never_clamped(line: str, expected: str) -> None:
    with pytest.raises(SettingsInvalid) as caught:
        parse(f"# settings\nversion: 1\n{line}\n", CAPS)
    assert str(caught.value) == f".github/ghapp.yml:3: {expected}" or str(caught.value).startswith(
        f".github/ghapp.yml:3: {expected}"
    )


def test_yaml_1_1_words_stay_strings_and_tags_are_not_objects() -> None:
    with pytest.raises(SettingsInvalid, match="on_red"):
        parse("version: 1\non_red: off\n", CAPS)  # YAML 1.1 would read `off` as false
    with pytest.raises(SettingsInvalid):
        parse("version: 1\nverify: !!python/object/apply:os.system [id]\n", CAPS)


def test_globs_for_protected_paths() -> None:
    assert matches(".github/workflows/ci.yml", ".github/**")
    assert matches("CLAUDE.md", "CLAUDE.md") and matches("pkg/CLAUDE.md", "CLAUDE.md")
    assert not matches("docs/CLAUDE.md.bak", "CLAUDE.md")
    assert matches("migrations/2024/01.sql", "migrations/**")
    assert not matches("src/migrations/x.sql", "migrations/**")
    assert matches("a/b/c.lock", "**/*.lock") and matches("c.lock", "**/*.lock")
    assert not matches("src/a/b.py", "src/*.py") and matches("src/b.py", "src/*.py")
    paths = ["src/app.py", ".github/workflows/x.yml", "AGENTS.md"]
    assert touched(paths, DEFAULT_PROTECTED) == [".github/workflows/x.yml", "AGENTS.md"]


def test_test_files_are_recognised() -> None:
    paths = [
        "tests/test_app.py",
        "src/app.py",
        "pkg/foo_test.go",
        "web/a.spec.ts",
        "conftest.py",
        "README.md",
        "src/AppTest.java",
    ]
    assert changed_tests(paths) == [
        "tests/test_app.py",
        "pkg/foo_test.go",
        "web/a.spec.ts",
        "conftest.py",
        "src/AppTest.java",
    ]


def test_check_config_validates_a_file_locally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "good.yml", tmp_path / "bad.yml"
    good.write_text("version: 1\nverify: [make test]\n")
    bad.write_text("version: 1\nverify: [make test]\nmax_budget_usd: 20\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MC_TASK_BUDGET_MAX_USD", "10")
    assert main(["check-config", str(good)]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        ".github/ghapp.yml:3: max_budget_usd: 20 is over the operator's cap 10 "
        "(MC_TASK_BUDGET_MAX_USD)"
    )
    monkeypatch.setenv("MC_TASK_BUDGET_MAX_USD", "25")
    monkeypatch.setenv("MC_DAILY_BUDGET_USD", "50")
    assert main(["check-config", str(bad)]) == 0  # this operator allows it
    assert main(["check-config", str(tmp_path / "missing.yml")]) == 2
