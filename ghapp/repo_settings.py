"""`.github/ghapp.yml`: YAML 1.2 loaded with ruamel, checked by a strict schema and the
operator's caps; every error names the file, the line, the key and what is allowed."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from ghapp.core.gate import (
    DEFAULT_PROTECTED,
    SETTINGS_PATH,
    OnRed,
    RepoSettings,
    SettingsInvalid,
)

DEFAULT_INSTRUCTIONS = ("AGENTS.md", "CLAUDE.md")
MAX_INSTRUCTIONS_BYTES = 64 << 10
MAX_FILE_BYTES = 64 << 10
_BRANCH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,200}")
_PATH = re.compile(r"[^\x00-\x1f]{1,400}")

ALLOWED = {
    "version": "1",
    "base_branch": "the name of an existing branch",
    "instructions": "a path to a file on the base branch (at most 64 KiB)",
    "setup": "a list of shell commands (strings)",
    "verify": "a list of shell commands (strings)",
    "verify_timeout_s": "a number of seconds above 0, at most the operator's cap",
    "verify_retries": "a whole number from 0 to 5",
    "on_red": "fix, draft or block",
    "model": "a model in the operator's allowlist (MC_MODELS)",
    "max_budget_usd": "a number of US dollars above 0, at most the operator's cap",
    "max_turns": "a whole number from 1, at most the operator's cap",
    "timeout_min": "a number of minutes above 0, at most the operator's cap",
    "protected_paths": "a list of path globs (strings)",
    "ci_fix": "true or false",
}


@dataclass(frozen=True)
class Caps:
    """The operator's limits over what a repository's file may ask for (from Settings)."""

    models: tuple[str, ...]
    max_budget_usd: float
    max_turns: int
    timeout_s: float
    verify_timeout_max_s: float
    protected_paths: tuple[str, ...] = DEFAULT_PROTECTED


class _File(BaseModel):
    """Version 1 of the file; anything unknown or of the wrong type is an error."""

    model_config = ConfigDict(extra="forbid", strict=True)

    version: int
    base_branch: str | None = None
    instructions: str | None = None
    setup: list[str] = Field(default_factory=list, max_length=50)
    verify: list[str] = Field(default_factory=list, max_length=50)
    verify_timeout_s: float = Field(600.0, gt=0)
    verify_retries: int = Field(2, ge=0, le=5)
    on_red: Literal["fix", "draft", "block"] = "fix"
    model: str | None = None
    max_budget_usd: float | None = Field(None, gt=0)
    max_turns: int | None = Field(None, ge=1)
    timeout_min: float | None = Field(None, gt=0)
    protected_paths: list[str] = Field(default_factory=list, max_length=200)
    ci_fix: bool = True


@dataclass(frozen=True)
class Parsed:
    """The file's settings before its files (instructions, base branch) are looked up."""

    settings: RepoSettings
    lines: Mapping[str, int]  # 1-based line of each top-level key

    def fail(self, key: str, message: str) -> SettingsInvalid:
        """An error about a key found valid in form but wrong on the base branch."""
        return invalid(self.lines.get(key), key, message)


def invalid(line: int | None, key: str | None, message: str) -> SettingsInvalid:
    """`.github/ghapp.yml:LINE: KEY: MESSAGE`."""
    where = f"{SETTINGS_PATH}:{line}" if line else SETTINGS_PATH
    return SettingsInvalid(f"{where}: {key}: {message}" if key else f"{where}: {message}")


class _Tagged(Exception):
    """A node with an explicit YAML tag; the file has no use for one."""

    def __init__(self, loc: tuple[int | str, ...], tag: str) -> None:
        super().__init__(tag)
        self.loc, self.tag = loc, tag


def _plain(node: Any, loc: tuple[int | str, ...] = ()) -> Any:
    """ruamel's nodes as plain Python values, so the strict schema judges them; no tags."""
    tag = getattr(getattr(node, "tag", None), "value", None)
    if tag is not None:
        raise _Tagged(loc, str(tag))
    if isinstance(node, Mapping):
        return {k: _plain(v, (*loc, k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v, (*loc, i)) for i, v in enumerate(node)]
    if isinstance(node, bool) or node is None:
        return node
    for kind in (int, float, str):
        if isinstance(node, kind):
            return kind(node)
    return node


def _line(root: CommentedMap, loc: Sequence[int | str]) -> int | None:
    """The 1-based line of the node an error location points at (its key, or its item)."""
    node: Any = root
    line: int | None = None
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            break
    return line


def _key(loc: Sequence[int | str]) -> str:
    """A dotted key with list indexes, e.g. verify[1]."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _load(text: str) -> CommentedMap:
    """YAML 1.2 (so `on` stays a string), duplicate keys refused, top level a mapping."""
    if len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
        raise invalid(None, None, f"the file is larger than {MAX_FILE_BYTES >> 10} KiB")
    try:
        data = YAML(typ="rt", pure=True).load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        raise invalid(line, None, f"YAML error: {problem}") from None
    except (YAMLError, RecursionError, ValueError) as exc:
        raise invalid(None, None, f"YAML error: {exc}") from None
    if data is None:
        data = CommentedMap()
    if not isinstance(data, CommentedMap):
        raise invalid(1, None, "the file must be a mapping of keys such as `version: 1`")
    return data


def _schema_error(root: CommentedMap, exc: ValidationError) -> SettingsInvalid:
    """The first schema error, placed on its line and explained with what the key allows."""
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    top = str(loc[0]) if loc else ""
    if error["type"] == "extra_forbidden":
        message = f"unknown key; the keys are {', '.join(ALLOWED)}"
    elif error["type"] == "missing":
        message = f"required; allowed: {ALLOWED.get(top, '')}"
    else:
        message = f"{error['msg']}; allowed: {ALLOWED.get(top, '')}"
    return invalid(
        _line(root, loc) or (1 if error["type"] == "missing" else None), _key(loc), message
    )


def _over(root: CommentedMap, key: str, message: str) -> SettingsInvalid:
    return invalid(_line(root, (key,)), key, message)


def parse(text: str, caps: Caps) -> Parsed:
    """Validate the file against the schema and the operator's caps; SettingsInvalid if not."""
    root = _load(text)
    try:
        data = _plain(root)
    except _Tagged as exc:
        message = f"YAML tags ({exc.tag}) are not allowed"
        raise invalid(_line(root, exc.loc), _key(exc.loc), message) from None
    version = data.get("version")
    if "version" in data and (type(version) is not int or version != 1):
        raise _over(root, "version", f"must be 1, got {version!r}")
    try:
        f = _File.model_validate(data)
    except ValidationError as exc:
        raise _schema_error(root, exc) from None
    for key, commands in (("setup", f.setup), ("verify", f.verify)):
        for i, command in enumerate(commands):
            if not command.strip() or "\x00" in command:
                raise invalid(_line(root, (key, i)), f"{key}[{i}]", "an empty command")
    if f.base_branch is not None and (
        not _BRANCH.fullmatch(f.base_branch) or ".." in f.base_branch
    ):
        raise _over(root, "base_branch", f"{f.base_branch!r} is not a branch name")
    if f.instructions is not None and (
        not _PATH.fullmatch(f.instructions)
        or f.instructions.startswith("/")
        or ".." in f.instructions.split("/")
    ):
        raise _over(root, "instructions", "must be a relative path inside the repository")
    for i, glob in enumerate(f.protected_paths):
        if not glob.strip():
            raise invalid(_line(root, ("protected_paths", i)), f"protected_paths[{i}]", "empty")
    if f.model is not None and f.model not in caps.models:
        allowed = ", ".join(caps.models) or "none: the operator set no MC_MODELS"
        raise _over(root, "model", f"{f.model!r} is not allowed; MC_MODELS allows {allowed}")
    for key, value, cap, name in (
        ("max_budget_usd", f.max_budget_usd, caps.max_budget_usd, "MC_TASK_BUDGET_MAX_USD"),
        ("max_turns", f.max_turns, caps.max_turns, "MC_MAX_TURNS"),
        ("timeout_min", f.timeout_min, caps.timeout_s / 60, "MC_SOFT_TIMEOUT_S / 60"),
        (
            "verify_timeout_s",
            f.verify_timeout_s if "verify_timeout_s" in data else None,
            caps.verify_timeout_max_s,
            "MC_VERIFY_TIMEOUT_MAX_S",
        ),
    ):
        if value is not None and value > cap:
            raise _over(root, key, f"{value:g} is over the operator's cap {cap:g} ({name})")
    settings = RepoSettings(
        present=True,
        base_branch=f.base_branch,
        instructions_path=f.instructions,
        setup=tuple(f.setup),
        verify=tuple(f.verify),
        verify_timeout_s=min(f.verify_timeout_s, caps.verify_timeout_max_s),
        verify_retries=f.verify_retries,
        on_red=OnRed(f.on_red),
        model=f.model,
        max_budget_usd=f.max_budget_usd,
        max_turns=f.max_turns,
        timeout_min=f.timeout_min,
        protected_paths=tuple(dict.fromkeys((*caps.protected_paths, *f.protected_paths))),
        ci_fix=f.ci_fix,
    )
    lines = {str(k): root.lc.key(k)[0] + 1 for k in root if isinstance(k, str)}
    return Parsed(settings, lines)
