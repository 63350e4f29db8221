"""The repository's own gate, as values: its settings, check results and the PR's Checks section."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from ghapp.core.model import GhappError
from ghapp.core.publish import code, fenced

SETTINGS_PATH = ".github/ghapp.yml"
WORKFLOWS = ".github/workflows/**"
# MC_PROTECTED_PATHS when unset: what steers agents and CI, and this file.
DEFAULT_PROTECTED = (".github/**", ".claude/**", "CLAUDE.md", "AGENTS.md", SETTINGS_PATH)
TAIL_LINES = 50
# Paths that look like tests: a tests/spec directory, or test_x / x_test / x.test / x.spec files.
_TEST_FILE = re.compile(
    r"(^|/)(tests?|__tests__|specs?|testing)/"
    r"|(^|/)test_[^/]*$|_test\.[^/]+$|\.(test|spec)\.[^/]+$|(^|/)conftest\.py$|Tests?\.[^/]+$"
)


class OnRed(StrEnum):
    """What a red verify run leads to."""

    FIX = "fix"
    DRAFT = "draft"
    BLOCK = "block"


class SettingsInvalid(GhappError):
    """The repository's settings file is wrong; the message names file, line, key and the rule."""


@dataclass(frozen=True)
class RepoSettings:
    """Effective settings of one repository: its `.github/ghapp.yml` over the operator's."""

    present: bool = False  # the file exists on the base branch
    base_branch: str | None = None  # None: the repository's default branch
    instructions: str = ""  # guidance text read from the base branch
    instructions_path: str | None = None
    setup: tuple[str, ...] = ()
    verify: tuple[str, ...] = ()
    verify_timeout_s: float = 600.0
    verify_retries: int = 2
    on_red: OnRed = OnRed.FIX
    model: str | None = None
    max_budget_usd: float | None = None
    max_turns: int | None = None
    timeout_min: float | None = None
    protected_paths: tuple[str, ...] = ()  # the operator's and the file's
    ci_fix: bool = True
    source_sha: str = ""  # the base-branch commit the file was read at

    def budget(self, task_budget: float) -> float:
        """An attempt's cap: the task's, lowered by the repository's max_budget_usd."""
        return task_budget if self.max_budget_usd is None else min(task_budget, self.max_budget_usd)

    def timeout_s(self, operator_s: float) -> float:
        """The agent's soft timeout: the repository's timeout_min, else the operator's."""
        return operator_s if self.timeout_min is None else self.timeout_min * 60

    def describe(self) -> str:
        """The effective settings as `/mc config` shows them."""
        where = f"`{SETTINGS_PATH}`" if self.present else f"no `{SETTINGS_PATH}`"
        if self.source_sha:
            where += f" on the base branch at {self.source_sha[:12]}"
        rows = [
            ("base_branch", self.base_branch or "(the repository's default)"),
            ("instructions", self.instructions_path or "(none)"),
            ("setup", ", ".join(f"`{c}`" for c in self.setup) or "(none)"),
            ("verify", ", ".join(f"`{c}`" for c in self.verify) or "(none)"),
            ("verify_timeout_s", f"{self.verify_timeout_s:g}"),
            ("on_red", f"{self.on_red.value} (verify_retries {self.verify_retries})"),
            ("model", self.model or "(the operator's)"),
            (
                "max_budget_usd",
                "(the operator's)" if self.max_budget_usd is None else f"{self.max_budget_usd:g}",
            ),
            ("max_turns", "(the operator's)" if self.max_turns is None else str(self.max_turns)),
            (
                "timeout_min",
                "(the operator's)" if self.timeout_min is None else f"{self.timeout_min:g}",
            ),
            ("protected_paths", ", ".join(f"`{p}`" for p in self.protected_paths)),
            ("ci_fix", "true" if self.ci_fix else "false"),
        ]
        table = "\n".join(f"| `{key}` | {value} |" for key, value in rows)
        return (
            f"Effective MissionControl settings ({where}):\n\n| key | value |\n|---|---|\n{table}"
        )


@dataclass(frozen=True)
class CheckResult:
    """One verify or setup command as ghapp ran it."""

    command: str
    passed: bool
    duration_s: float
    tail: str = ""  # last lines of its output
    timed_out: bool = False


def tail_lines(text: str, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of a command's output."""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def green(results: Sequence[CheckResult]) -> bool:
    """Every command passed (an empty gate is green)."""
    return all(r.passed for r in results)


def failure_text(results: Sequence[CheckResult]) -> str:
    """What the agent reads about a red run: each failing command and its output tail."""
    parts = []
    for r in results:
        if not r.passed:
            how = "timed out" if r.timed_out else "failed"
            parts.append(f"$ {r.command}\n({how} after {r.duration_s:.1f} s)\n{r.tail}")
    return "\n\n".join(parts)


def checks_section(
    results: Sequence[CheckResult], *, flags: Iterable[str] = (), rounds: int = 1
) -> str:
    """The PR body's Checks section: command, pass/fail, duration, a failure's tail folded."""
    lines = ["### Checks", ""]
    if rounds > 1:
        lines += [f"Verified {rounds} times; the last run:", ""]
    for r in results:
        mark = "passed" if r.passed else ("timed out" if r.timed_out else "failed")
        icon = "✅" if r.passed else "❌"
        lines.append(f"- {icon} {code(r.command)}: {mark} in {r.duration_s:.1f} s")
        if not r.passed and r.tail:
            lines += [
                "",
                "  <details><summary>Last lines of its output</summary>",
                "",
                fenced(r.tail, "text"),
                "",
                "  </details>",
            ]
    for flag in flags:
        lines += ["", f"⚠️ {flag}"]
    return "\n".join(lines)


@lru_cache(maxsize=256)
def _glob_re(pattern: str) -> re.Pattern[str]:
    """`**` spans directories, `*` and `?` stay within one; no slash: a name at any depth."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    body = "".join(out)
    prefix = "" if "/" in pattern.rstrip("/") else "(?:.*/)?"
    return re.compile(f"{prefix}{body}")


def matches(path: str, pattern: str) -> bool:
    """Whether a repository path falls under a protected-path glob."""
    pattern = pattern.strip().lstrip("/")
    if pattern.endswith("/"):
        pattern += "**"
    return _glob_re(pattern).fullmatch(path) is not None


def touched(paths: Iterable[str], patterns: Iterable[str]) -> list[str]:
    """The paths that match any of the patterns, in order."""
    globs = list(patterns)
    return [p for p in paths if any(matches(p, g) for g in globs)]


def changed_tests(paths: Iterable[str]) -> list[str]:
    """The paths that look like test files."""
    return [p for p in paths if _TEST_FILE.search(p)]
