"""Settings parsed once from the environment (and ./.env) so a bad value stops start-up early."""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ghapp.core.gate import DEFAULT_PROTECTED
from ghapp.core.model import GhappError
from ghapp.core.runner import DEFAULT_MAX_TURNS, RunnerConfig
from ghapp.endpoints import GITHUB_API_URL, SLACK_API_URL, TELEGRAM_API_URL

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class ConfigError(GhappError):
    """One line naming the variable and what it needs."""


_RUNNER = RunnerConfig(log_dir=Path("logs"))  # the runner's own defaults, written once there


@dataclass(frozen=True)
class Settings:
    """Everything ghapp reads from its environment, validated; its defaults are the only ones
    (load_settings and the README's configuration table follow them, a test checks both)."""

    webhook_secret: str
    app_id: str | None = None
    private_key: str | None = field(default=None, repr=False)
    webhook_path: str = "/api/github/webhooks"
    github_api_url: str = GITHUB_API_URL
    host: str = "0.0.0.0"
    port: int = 3000
    data_dir: Path = Path("data")
    database_url: str = ""
    trigger_label: str = "mc-auto"
    command: str = "/mc"
    worker_user: str | None = None
    claude_bin: str = "claude"
    model: str | None = None
    daily_budget_usd: float = _RUNNER.daily_budget_usd
    task_budget_usd: float = 5.0
    task_budget_max_usd: float = 10.0
    soft_timeout_s: float = _RUNNER.soft_timeout_s
    kill_after_s: float = _RUNNER.kill_after_s
    grace_s: float = _RUNNER.grace_s
    concurrency: int = _RUNNER.concurrency
    max_turns: int = DEFAULT_MAX_TURNS
    write_interval_s: float = 1.0
    inbox_retry_s: float = 6 * 3600.0
    anthropic_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    telegram_token: str | None = field(default=None, repr=False)
    telegram_chat_ids: tuple[int, ...] = ()
    telegram_user_ids: tuple[int, ...] = ()
    telegram_api_url: str = TELEGRAM_API_URL
    slack_bot_token: str | None = field(default=None, repr=False)
    slack_signing_secret: str | None = field(default=None, repr=False)
    slack_app_token: str | None = field(default=None, repr=False)
    slack_channel_ids: tuple[str, ...] = ()
    slack_user_ids: tuple[str, ...] = ()
    slack_api_url: str = SLACK_API_URL
    log_level: str = "info"
    log_format: str = "text"
    node_id: str = _RUNNER.node
    lease_s: float = _RUNNER.lease_s
    sandbox: str = "bwrap"  # or "none": development only
    agent_allow_hosts: str | None = None  # None: the default package registries
    agent_max_procs: int = 512
    agent_max_files: int = 4096
    agent_memory_mb: int = 4096
    agent_disk_mb: int = 10240
    prices_path: Path | None = None
    repo_agent_settings: bool = False
    log_max_mb: int = 50
    context_max_chars: int = _RUNNER.context_max_chars
    max_attempts: int = _RUNNER.max_attempts
    retention_days: float = 30.0
    models: tuple[str, ...] = ()  # MC_MODELS: what a repository's `model` may name
    protected_paths: tuple[str, ...] = DEFAULT_PROTECTED
    ci_fix_max: int = 2
    verify_timeout_max_s: float = 1800.0

    @property
    def is_postgres(self) -> bool:
        """Whether the task store is a PostgreSQL database (several processes may share it)."""
        return self.database_url.startswith(POSTGRES_SCHEMES)

    @property
    def database_label(self) -> str:
        """DATABASE_URL without its password, for logs."""
        parts = urlsplit(self.database_url)
        if parts.password is None:
            return self.database_url
        host = parts.netloc.rsplit("@", 1)[-1]
        return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()

    @property
    def sqlite_path(self) -> Path:
        """File of the embedded store."""
        url = self.database_url
        if url.startswith("sqlite:///"):
            return Path(url.removeprefix("sqlite:///"))
        return self.data_dir / "ghapp.sqlite3"

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never reach the agent or a log."""
        values = [self.webhook_secret, self.private_key or "", self.telegram_token or ""]
        values += [
            self.slack_bot_token or "",
            self.slack_signing_secret or "",
            self.slack_app_token or "",
        ]
        values.append(self.anthropic_env.get("ANTHROPIC_API_KEY", ""))
        values.append(self.anthropic_env.get("ANTHROPIC_AUTH_TOKEN", ""))
        values.append(urlsplit(self.database_url).password or "")
        return tuple(v for v in values if v)


DEFAULTS = Settings(webhook_secret="")


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file; quotes stripped, comments and blanks skipped."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def environment(cwd: Path | None = None) -> dict[str, str]:
    """The process environment over ./.env: a real variable wins over the file."""
    merged = read_dotenv((cwd or Path.cwd()) / ".env")
    merged.update(os.environ)
    return merged


class _Reader:
    """Typed access to the raw mapping that names the variable in every error."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.env.get(name, "").strip()
        return value or default

    def number(self, name: str, default: float, minimum: float = 0.0) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}: must be a number, got {raw!r}") from None
        if value != value or value < minimum or value == float("inf"):
            raise ConfigError(f"{name}: must be a finite number >= {minimum:g}, got {raw!r}")
        return value

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}: must be a whole number, got {raw!r}") from None
        if value < minimum:
            raise ConfigError(f"{name}: must be >= {minimum}, got {raw!r}")
        return value

    def flag(self, name: str) -> bool:
        raw = (self.text(name) or "0").lower()
        if raw not in {"0", "1", "true", "false", "yes", "no"}:
            raise ConfigError(f"{name}: must be 1 or 0, got {raw!r}")
        return raw in {"1", "true", "yes"}


def _private_key(r: _Reader) -> str | None:
    """PEM from PRIVATE_KEY (literal \\n allowed) or the file at PRIVATE_KEY_PATH."""
    inline = r.text("PRIVATE_KEY")
    if inline:
        pem = inline.replace("\\n", "\n")
    else:
        path = r.text("PRIVATE_KEY_PATH")
        if path is None:
            return None
        try:
            pem = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"PRIVATE_KEY_PATH: cannot read {path}: {exc.strerror}") from None
    name = "PRIVATE_KEY" if inline else "PRIVATE_KEY_PATH"
    fix = "download a new private key in the GitHub App's settings"
    if "-----BEGIN" not in pem or "PRIVATE KEY-----" not in pem:
        raise ConfigError(
            f"{name}: must be a PEM private key (-----BEGIN ... PRIVATE KEY-----); {fix}"
        )
    try:
        load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{name}: the private key does not parse ({exc}); {fix}") from None
    return pem


def _api_url(r: _Reader) -> str:
    """GITHUB_API_URL, or the GHE_HOST shortcut."""
    url = r.text("GITHUB_API_URL")
    host = r.text("GHE_HOST")
    if url is None and host is not None:
        url = f"https://{host}/api/v3"
    url = (url or GITHUB_API_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"GITHUB_API_URL: must start with http:// or https://, got {url!r}")
    return url


def _ids(r: _Reader, name: str, what: str) -> tuple[int, ...]:
    """A comma-separated list of Telegram ids (TELEGRAM_CHAT_IDS, TELEGRAM_USER_IDS)."""
    raw = r.text(name) or ""
    try:
        return tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{name}: must be comma-separated {what} ids, got {raw!r}") from None


def _slack_ids(r: _Reader, name: str, pattern: str) -> tuple[str, ...]:
    """Comma-separated Slack ids (C0123ABCD, U0123ABCD): upper-case letters and digits."""
    raw = r.text(name) or ""
    ids = tuple(part.strip() for part in raw.split(",") if part.strip())
    for value in ids:
        if not re.fullmatch(pattern, value):
            raise ConfigError(f"{name}: {value!r} is not a Slack id (such as {pattern[1]}0123ABCD)")
    return ids


def _slack(r: _Reader) -> dict[str, Any]:
    """The SLACK_* settings; a bot token needs a signing secret (HTTP) or an app token."""
    token = r.text("SLACK_BOT_TOKEN")
    secret = r.text("SLACK_SIGNING_SECRET")
    app_token = r.text("SLACK_APP_TOKEN")
    if token is not None and not token.startswith("xoxb-"):
        raise ConfigError("SLACK_BOT_TOKEN: must be a bot token starting with xoxb-")
    if app_token is not None and not app_token.startswith("xapp-"):
        raise ConfigError("SLACK_APP_TOKEN: must be an app-level token starting with xapp-")
    if token is not None and secret is None and app_token is None:
        raise ConfigError(
            "SLACK_SIGNING_SECRET: required with SLACK_BOT_TOKEN "
            "(or SLACK_APP_TOKEN for Socket Mode)"
        )
    if token is not None and r.text("SLACK_CLIENT_ID") and r.text("SLACK_CLIENT_SECRET"):
        raise ConfigError(
            "SLACK_CLIENT_ID: unset it and SLACK_CLIENT_SECRET; with both, Bolt switches to "
            "multi-workspace OAuth and ignores SLACK_BOT_TOKEN"
        )
    url = r.text("SLACK_API_URL") or SLACK_API_URL
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"SLACK_API_URL: must start with http:// or https://, got {url!r}")
    return {
        "slack_bot_token": token,
        "slack_signing_secret": secret,
        "slack_app_token": app_token,
        "slack_channel_ids": _slack_ids(r, "SLACK_CHANNEL_IDS", r"[CGD][A-Z0-9]+"),
        "slack_user_ids": _slack_ids(r, "SLACK_USER_IDS", r"[UW][A-Z0-9]+"),
        "slack_api_url": url if url.endswith("/") else url + "/",
    }


def _list(r: _Reader, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated values; unset gives the default, an empty value gives none."""
    if name not in r.env:
        return default
    return tuple(dict.fromkeys(p.strip() for p in r.env[name].split(",") if p.strip()))


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Parse and validate the whole configuration; ConfigError names the first bad variable."""
    r, d = _Reader(environment() if env is None else env), DEFAULTS
    secret = r.text("WEBHOOK_SECRET")
    if secret is None:
        raise ConfigError("WEBHOOK_SECRET: required; ghapp never accepts unsigned webhooks")
    app_id = r.text("APP_ID")
    if app_id is not None and not app_id.isdigit():
        raise ConfigError(f"APP_ID: must be the numeric GitHub App id, got {app_id!r}")
    key = _private_key(r)
    if app_id is not None and key is None:
        raise ConfigError("PRIVATE_KEY: required with APP_ID (PEM text or PRIVATE_KEY_PATH)")
    path = r.text("WEBHOOK_PATH", d.webhook_path) or ""
    if not path.startswith("/"):
        raise ConfigError(f"WEBHOOK_PATH: must start with '/', got {path!r}")
    data_dir = Path(r.text("MC_DATA_DIR") or d.data_dir)
    database_url = r.text("DATABASE_URL") or f"sqlite:///{data_dir / 'ghapp.sqlite3'}"
    if not database_url.startswith(("sqlite:///", *POSTGRES_SCHEMES)):
        shown = database_url.split("@", 1)[-1]  # never echo a password
        raise ConfigError(
            f"DATABASE_URL: must be sqlite:///PATH or postgresql://USER@HOST/DB, got {shown!r}"
        )
    daily = r.number("MC_DAILY_BUDGET_USD", d.daily_budget_usd)
    task = r.number("MC_TASK_BUDGET_USD", d.task_budget_usd)
    task_max = r.number("MC_TASK_BUDGET_MAX_USD", d.task_budget_max_usd)
    if task > task_max:
        raise ConfigError("MC_TASK_BUDGET_USD: must not exceed MC_TASK_BUDGET_MAX_USD")
    if task_max > daily:
        raise ConfigError("MC_TASK_BUDGET_MAX_USD: must not exceed MC_DAILY_BUDGET_USD")
    command = r.text("MC_COMMAND") or d.command
    if any(c.isspace() for c in command):
        raise ConfigError(f"MC_COMMAND: must be one word such as /mc, got {command!r}")
    level = (r.text("LOG_LEVEL") or d.log_level).lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise ConfigError(f"LOG_LEVEL: must be debug, info, warning or error, got {level!r}")
    fmt = (r.text("LOG_FORMAT") or d.log_format).lower()
    if fmt not in {"text", "json"}:
        raise ConfigError(f"LOG_FORMAT: must be text or json, got {fmt!r}")
    sandbox = (r.text("MC_SANDBOX") or d.sandbox).lower()
    if sandbox not in {"bwrap", "none"}:
        raise ConfigError(f"MC_SANDBOX: must be bwrap or none (development only), got {sandbox!r}")
    prices = r.text("MC_PRICES")
    anthropic = {
        name: value
        for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN")
        if (value := r.text(name)) is not None
    }
    return Settings(
        webhook_secret=secret,
        app_id=app_id,
        private_key=key,
        webhook_path=path,
        github_api_url=_api_url(r),
        host=r.text("HOST") or d.host,
        port=r.integer("PORT", d.port),
        data_dir=data_dir,
        database_url=database_url,
        trigger_label=r.text("MC_TRIGGER_LABEL") or d.trigger_label,
        command=command,
        worker_user=r.text("MC_WORKER_USER"),
        claude_bin=r.text("CLAUDE_BIN") or d.claude_bin,
        model=r.text("MC_MODEL"),
        daily_budget_usd=daily,
        task_budget_usd=task,
        task_budget_max_usd=task_max,
        soft_timeout_s=r.number("MC_SOFT_TIMEOUT_S", d.soft_timeout_s, minimum=1.0),
        kill_after_s=r.number("MC_KILL_AFTER_S", d.kill_after_s),
        grace_s=r.number("MC_GRACE_S", d.grace_s, minimum=1.0),
        concurrency=r.integer("MC_CONCURRENCY", d.concurrency, minimum=1),
        max_turns=r.integer("MC_MAX_TURNS", d.max_turns, minimum=1),
        write_interval_s=r.number("MC_WRITE_INTERVAL_S", d.write_interval_s),
        inbox_retry_s=r.number("MC_INBOX_RETRY_S", d.inbox_retry_s, minimum=10.0),
        anthropic_env=anthropic,
        telegram_token=r.text("TELEGRAM_BOT_TOKEN"),
        telegram_chat_ids=_ids(r, "TELEGRAM_CHAT_IDS", "chat"),
        telegram_user_ids=_ids(r, "TELEGRAM_USER_IDS", "user"),
        telegram_api_url=r.text("TELEGRAM_API_URL") or d.telegram_api_url,
        log_level=level,
        log_format=fmt,
        **_slack(r),
        node_id=r.text("MC_NODE_ID") or default_node_id(data_dir),
        lease_s=r.number("MC_LEASE_S", d.lease_s, minimum=1.0),
        sandbox=sandbox,
        agent_allow_hosts=r.env.get("MC_AGENT_ALLOW_HOSTS"),
        agent_max_procs=r.integer("MC_AGENT_MAX_PROCS", d.agent_max_procs, minimum=16),
        agent_max_files=r.integer("MC_AGENT_MAX_FILES", d.agent_max_files, minimum=64),
        agent_memory_mb=r.integer("MC_AGENT_MEMORY_MB", d.agent_memory_mb, minimum=256),
        agent_disk_mb=r.integer("MC_AGENT_DISK_MB", d.agent_disk_mb, minimum=1),
        prices_path=Path(prices) if prices else None,
        repo_agent_settings=r.flag("MC_REPO_AGENT_SETTINGS"),
        log_max_mb=r.integer("MC_LOG_MAX_MB", d.log_max_mb, minimum=1),
        context_max_chars=r.integer("MC_CONTEXT_MAX_CHARS", d.context_max_chars, minimum=1000),
        max_attempts=r.integer("MC_MAX_ATTEMPTS", d.max_attempts, minimum=1),
        retention_days=r.number("MC_RETENTION_DAYS", d.retention_days, minimum=1.0),
        models=_list(r, "MC_MODELS", d.models),
        protected_paths=_list(r, "MC_PROTECTED_PATHS", d.protected_paths),
        ci_fix_max=r.integer("MC_CI_FIX_MAX", d.ci_fix_max),
        verify_timeout_max_s=r.number(
            "MC_VERIFY_TIMEOUT_MAX_S", d.verify_timeout_max_s, minimum=1.0
        ),
    )


def default_node_id(data_dir: Path) -> str:
    """Host name plus a digest of the data dir: stable across restarts, unique per process."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]
    return f"{socket.gethostname()}-{digest}"
