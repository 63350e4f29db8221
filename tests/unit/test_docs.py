"""The docs an operator reads stay true to the code: every setting documented, every
proof that docs/guarantees.md names exists, the shipped systemd unit runs ghapp."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETTING = re.compile(
    r"""r\.(?:text|number|integer|flag)\(\s*"([A-Z0-9_]+)"|env\.get\("([A-Z0-9_]+)"\)"""
)


REFUSED = {"SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET"}  # read only to refuse them (OAuth)


def settings_read() -> set[str]:
    source = (ROOT / "ghapp" / "config.py").read_text()
    return {a or b for a, b in SETTING.findall(source)} - REFUSED


def test_every_setting_is_in_the_readme_table_and_env_example() -> None:
    names = settings_read()
    assert {"WEBHOOK_SECRET", "MC_INBOX_RETRY_S", "MC_WRITE_INTERVAL_S"} <= names
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / ".env.example").read_text()
    assert not [n for n in sorted(names) if f"`{n}`" not in readme]
    assert not [n for n in sorted(names) if not re.search(rf"^#? ?{n}=", example, re.M)]


def test_every_proof_named_in_guarantees_exists() -> None:
    text = (ROOT / "docs" / "guarantees.md").read_text()
    named = set(re.findall(r"`((?:tests|bench)/[\w/.-]+\.py)((?:::\w+)?)", text))
    assert len(named) > 20
    missing = []
    for path, test in sorted(named):
        file = ROOT / path
        if not file.exists():
            missing.append(path)
        elif test and not re.search(rf"(def|class) {test[2:]}\(", file.read_text()):
            missing.append(path + test)  # a test, or a class of them
    assert not missing


def test_the_shipped_systemd_unit_runs_ghapp_as_the_docs_say() -> None:
    unit = (ROOT / "deploy" / "ghapp.service").read_text()
    lines = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and line[0] != "#")
    assert lines["User"] == "root" and lines["KillSignal"] == "SIGTERM"
    assert lines["ExecStart"].endswith(" -m ghapp") and lines["WorkingDirectory"]
    assert "deploy/ghapp.service" in (ROOT / "docs" / "operations.md").read_text()
