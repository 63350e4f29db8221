"""Configuration fails fast with one line naming the variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ghapp.config import ConfigError, environment, load_settings

PEM = (
    rsa.generate_private_key(public_exponent=65537, key_size=2048)
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    .decode()
)


def base(**extra: str) -> dict[str, str]:
    return {"WEBHOOK_SECRET": "s3cret", **extra}


def test_defaults_match_the_design() -> None:
    s = load_settings(base())
    assert (s.webhook_path, s.port, s.trigger_label, s.command) == (
        "/api/github/webhooks",
        3000,
        "mc-auto",
        "/mc",
    )
    assert (s.daily_budget_usd, s.task_budget_usd, s.task_budget_max_usd) == (50, 5, 10)
    assert (s.soft_timeout_s, s.kill_after_s, s.grace_s, s.concurrency) == (1800, 60, 300, 1)
    assert s.github_api_url == "https://api.github.com"
    assert s.sqlite_path == Path("data/ghapp.sqlite3")
    assert s.retention_days == 30 and s.telegram_user_ids == ()
    assert (s.write_interval_s, s.inbox_retry_s) == (1.0, 6 * 3600)
    assert load_settings(base(MC_INBOX_RETRY_S="600")).inbox_retry_s == 600
    with pytest.raises(ConfigError, match=r"^MC_INBOX_RETRY_S"):
        load_settings(base(MC_INBOX_RETRY_S="5"))


def test_webhook_secret_is_mandatory() -> None:
    with pytest.raises(ConfigError, match=r"^WEBHOOK_SECRET: required"):
        load_settings({})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "eighty"}, "^PORT: must be a whole number"),
        ({"MC_DAILY_BUDGET_USD": "-1"}, "^MC_DAILY_BUDGET_USD: must be a finite number"),
        ({"MC_DAILY_BUDGET_USD": "inf"}, "^MC_DAILY_BUDGET_USD"),
        ({"MC_TASK_BUDGET_USD": "20"}, "^MC_TASK_BUDGET_USD: must not exceed"),
        ({"MC_DAILY_BUDGET_USD": "8"}, "^MC_TASK_BUDGET_MAX_USD: must not exceed"),
        ({"MC_CONCURRENCY": "0"}, "^MC_CONCURRENCY: must be >= 1"),
        ({"MC_MAX_ATTEMPTS": "0"}, "^MC_MAX_ATTEMPTS: must be >= 1"),
        ({"APP_ID": "abc"}, "^APP_ID: must be the numeric"),
        ({"APP_ID": "12"}, "^PRIVATE_KEY: required with APP_ID"),
        ({"APP_ID": "12", "PRIVATE_KEY": "nope"}, "^PRIVATE_KEY: must be a PEM"),
        ({"PRIVATE_KEY_PATH": "/nonexistent/key.pem"}, "^PRIVATE_KEY_PATH: cannot read"),
        ({"WEBHOOK_PATH": "hooks"}, "^WEBHOOK_PATH: must start with '/'"),
        ({"GITHUB_API_URL": "ftp://x"}, "^GITHUB_API_URL"),
        ({"TELEGRAM_CHAT_IDS": "1,abc"}, "^TELEGRAM_CHAT_IDS"),
        ({"MC_RETENTION_DAYS": "0"}, "^MC_RETENTION_DAYS: must be a finite number >= 1"),
        ({"TELEGRAM_USER_IDS": "7,@me"}, "^TELEGRAM_USER_IDS: must be comma-separated user"),
        ({"LOG_LEVEL": "loud"}, "^LOG_LEVEL"),
        ({"DATABASE_URL": "mysql://x"}, "^DATABASE_URL"),
        ({"SLACK_BOT_TOKEN": "xoxp-user"}, "^SLACK_BOT_TOKEN: must be a bot token"),
        ({"SLACK_BOT_TOKEN": "xoxb-1"}, "^SLACK_SIGNING_SECRET: required with SLACK_BOT_TOKEN"),
        ({"SLACK_APP_TOKEN": "xoxb-1"}, "^SLACK_APP_TOKEN: must be an app-level token"),
        ({"SLACK_CHANNEL_IDS": "C01,#general"}, "^SLACK_CHANNEL_IDS: '#general' is not"),
        ({"SLACK_USER_IDS": "U01,alice"}, "^SLACK_USER_IDS: 'alice' is not"),
        ({"SLACK_API_URL": "slack.com/api"}, "^SLACK_API_URL"),
        (
            {
                "SLACK_BOT_TOKEN": "xoxb-1",
                "SLACK_SIGNING_SECRET": "s",
                "SLACK_CLIENT_ID": "1.2",
                "SLACK_CLIENT_SECRET": "x",
            },
            "^SLACK_CLIENT_ID: unset it",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(base(**env))
    assert "\n" not in str(info.value)


def test_private_key_with_literal_newlines_and_ghe_host(tmp_path: Path) -> None:
    s = load_settings(
        base(APP_ID="12", PRIVATE_KEY=PEM.replace("\n", "\\n"), GHE_HOST="ghe.example")
    )
    assert s.private_key == PEM
    assert s.github_api_url == "https://ghe.example/api/v3"
    key = tmp_path / "key.pem"
    key.write_text(PEM)
    assert load_settings(base(APP_ID="12", PRIVATE_KEY_PATH=str(key))).private_key == PEM


def test_a_key_that_does_not_parse_is_refused_with_the_fix() -> None:
    broken = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n"
    with pytest.raises(ConfigError, match=r"^PRIVATE_KEY: the private key does not parse .*"):
        load_settings(base(APP_ID="12", PRIVATE_KEY=broken))


def test_slack_settings() -> None:
    s = load_settings(
        base(
            SLACK_BOT_TOKEN="xoxb-1-2",
            SLACK_SIGNING_SECRET="sig",
            SLACK_CHANNEL_IDS=" C0AAA , G0BBB ",
            SLACK_USER_IDS="U0A,W0B",
            SLACK_API_URL="http://127.0.0.1:9/api",
        )
    )
    assert (s.slack_channel_ids, s.slack_user_ids) == (("C0AAA", "G0BBB"), ("U0A", "W0B"))
    assert s.slack_api_url == "http://127.0.0.1:9/api/" and s.slack_app_token is None
    socket = load_settings(base(SLACK_BOT_TOKEN="xoxb-1", SLACK_APP_TOKEN="xapp-1"))
    assert socket.slack_app_token == "xapp-1" and socket.slack_signing_secret is None
    assert load_settings(base()).slack_api_url == "https://slack.com/api/"
    assert {"xoxb-1-2", "sig"} <= set(s.secrets) and "xoxb-1-2" not in repr(s)


def test_secrets_do_not_show_in_repr() -> None:
    s = load_settings(
        base(
            APP_ID="12",
            PRIVATE_KEY=PEM,
            TELEGRAM_BOT_TOKEN="123:abc",
            ANTHROPIC_API_KEY="sk-ant-xyz",
        )
    )
    text = repr(s)
    for secret in ("MIIB", "123:abc", "sk-ant-xyz"):
        assert secret not in text
    assert set(s.secrets) >= {"s3cret", PEM.strip(), "123:abc", "sk-ant-xyz"}


def test_dotenv_is_read_and_real_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "# comment\nWEBHOOK_SECRET='from-file'\nPORT=4000\nexport MC_MODEL=opus\n"
    )
    monkeypatch.setenv("PORT", "5000")
    env = environment(tmp_path)
    assert (
        env["WEBHOOK_SECRET"] == "from-file" and env["PORT"] == "5000" and env["MC_MODEL"] == "opus"
    )


def test_sandbox_settings_and_their_defaults() -> None:
    s = load_settings(base())
    assert (s.sandbox, s.agent_allow_hosts, s.repo_agent_settings) == ("bwrap", None, False)
    limits = (s.agent_max_procs, s.agent_max_files, s.agent_memory_mb, s.agent_disk_mb)
    assert limits == (512, 4096, 4096, 10240) and s.log_max_mb == 50
    s = load_settings(base(MC_SANDBOX="NONE", MC_AGENT_ALLOW_HOSTS="", MC_REPO_AGENT_SETTINGS="1"))
    assert (s.sandbox, s.agent_allow_hosts, s.repo_agent_settings) == ("none", "", True)
    for env, message in (
        ({"MC_SANDBOX": "docker"}, "^MC_SANDBOX: must be bwrap or none"),
        ({"MC_AGENT_MAX_PROCS": "3"}, "^MC_AGENT_MAX_PROCS: must be >= 16"),
        ({"MC_REPO_AGENT_SETTINGS": "maybe"}, "^MC_REPO_AGENT_SETTINGS: must be 1 or 0"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_settings(base(**env))


def test_the_operators_model_credentials_are_secrets() -> None:
    s = load_settings(base(ANTHROPIC_API_KEY="sk-ant-k", ANTHROPIC_AUTH_TOKEN="oauth-t"))
    assert {"sk-ant-k", "oauth-t"} <= set(s.secrets)


def test_without_a_working_bwrap_ghapp_refuses_to_run_agents(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ghapp.agent.factory import sandboxing

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError, match=r"^MC_SANDBOX: cannot start a sandbox: bwrap is not"):
        sandboxing(load_settings(base()), None, None)
    assert sandboxing(load_settings(base(MC_SANDBOX="none")), None, None).bwrap is None


def test_telegram_chat_and_user_ids() -> None:
    settings = load_settings(base(TELEGRAM_CHAT_IDS="-1001, 5", TELEGRAM_USER_IDS=" 7,8 "))
    assert settings.telegram_chat_ids == (-1001, 5) and settings.telegram_user_ids == (7, 8)
    assert load_settings(base()).telegram_user_ids == ()


def test_readme_table_states_the_defaults_the_code_uses() -> None:
    """Setting a variable to the default the README documents must change nothing."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    baseline = load_settings(base())
    checked = []
    for line in readme.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
        values = re.findall(r"`([^`]*)`", cells[1])
        literal = re.fullmatch(r"`[^`$]*`(, `[^`$]*`)*", cells[1])
        if literal is None or len(names) != len(values):
            continue  # no literal default (such as "—", "required" or one built from another)
        for name, value in zip(names, values, strict=True):
            assert load_settings(base(**{name: value})) == baseline, f"README: {name} {value}"
            checked.append(name)
    assert {"MC_DAILY_BUDGET_USD", "MC_LEASE_S", "HOST", "PORT", "LOG_FORMAT"} <= set(checked)
