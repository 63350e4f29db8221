"""app.yml as YAML, the manifest merge, and the private .env writer."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ghapp.config import read_dotenv
from ghapp.github.envfile import save_private_key, update_dotenv
from ghapp.github.manifest import (
    DEFAULTS,
    ManifestError,
    build_manifest,
    load_app_yml,
    parse_app_yml,
    registration_url,
)

ROOT = Path(__file__).resolve().parents[2]


def test_repository_app_yml_matches_the_built_in_defaults() -> None:
    assert load_app_yml(ROOT / "app.yml") == DEFAULTS
    assert load_app_yml(ROOT / "missing.yml") == {}


def test_app_yml_is_real_yaml_1_2() -> None:
    text = """---
name: 'It''s mine'   # a comment
description: |
  has # inside
public: yes
count: 3
empty:
events:
- issues
- "push"
flow: [a, 'b c']
hook_attributes: {url: "https://example.com/hook#frag", active: false}
base: &perm {issues: write}
copy: *perm
"""
    assert parse_app_yml(text) == {
        "name": "It's mine",
        "description": "has # inside\n",
        "public": "yes",  # YAML 1.2: only true/false are booleans
        "count": 3,
        "empty": None,
        "events": ["issues", "push"],
        "flow": ["a", "b c"],
        "hook_attributes": {"url": "https://example.com/hook#frag", "active": False},
        "base": {"issues": "write"},
        "copy": {"issues": "write"},
    }


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a:\n\tb: 1\n", 2),
        ("a: 1\n  b: 2\n", 2),
        ("a: [1, 2\n", 2),
        ("a: 1\na: 2\n", 2),
        ("!!python/object:os.system x\n", 1),
    ],
)
def test_bad_yaml_is_refused_with_the_line(text: str, line: int) -> None:
    with pytest.raises(ManifestError, match=rf"app\.yml line {line}"):
        parse_app_yml(text)
    with pytest.raises(ManifestError, match="mapping"):
        parse_app_yml("- a\n")


def test_app_yml_overrides_defaults_but_not_the_redirect() -> None:
    manifest = build_manifest(
        {"name": "Mine", "redirect_url": "https://elsewhere", "default_events": ["push"]},
        "https://mc.example/hooks",
        "https://mc.example/setup/done",
    )
    assert manifest["name"] == "Mine" and manifest["default_events"] == ["push"]
    assert manifest["redirect_url"] == "https://mc.example/setup/done"
    assert manifest["hook_attributes"] == {"url": "https://mc.example/hooks", "active": True}
    assert manifest["default_permissions"] == DEFAULTS["default_permissions"]


def test_registration_urls() -> None:
    assert registration_url("https://github.com/", None, "s") == (
        "https://github.com/settings/apps/new?state=s"
    )
    assert registration_url("https://ghe.example", "acme", "a/b") == (
        "https://ghe.example/organizations/acme/settings/apps/new?state=a%2Fb"
    )


def test_update_dotenv_keeps_lines_and_round_trips(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# keep me\nA=1\nexport B='two'\nB=dup\nPRIVATE_KEY=x\n\nC=3")
    env.chmod(0o644)
    update_dotenv(env, {"B": "new value", "D": "/p/k.pem", "A": "1"}, drop=["PRIVATE_KEY"])
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    lines = env.read_text().splitlines()
    assert lines[:4] == [
        "# keep me",
        "A=1",
        'B="new value"',
        "# PRIVATE_KEY=x  # replaced by ghapp setup",
    ]
    assert read_dotenv(env) == {"A": "1", "B": "new value", "C": "3", "D": "/p/k.pem"}
    with pytest.raises(ValueError):
        update_dotenv(env, {"E": 'a"b'})
    assert read_dotenv(env)["B"] == "new value"  # nothing half-written


def test_private_key_never_overwrites_another_key(tmp_path: Path) -> None:
    first = save_private_key(tmp_path, 1, "-----BEGIN RSA PRIVATE KEY-----\nA\n")
    assert first.name == "private-key.pem"
    assert save_private_key(tmp_path, 1, "-----BEGIN RSA PRIVATE KEY-----\nA\n") == first
    second = save_private_key(tmp_path, 2, "-----BEGIN RSA PRIVATE KEY-----\nB")
    assert second.name == "private-key-2.pem" and second.read_text().endswith("B\n")
    assert stat.S_IMODE(second.stat().st_mode) == 0o600
    assert "A" in first.read_text()
