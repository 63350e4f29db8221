"""Reads `.github/ghapp.yml` and the guidance file from the base branch's head in ghapp's
mirror: never from a checkout or a task branch, so the agent cannot edit its own gate."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ghapp.core.gate import SETTINGS_PATH, RepoSettings
from ghapp.core.model import Repository
from ghapp.repo_settings import (
    DEFAULT_INSTRUCTIONS,
    MAX_FILE_BYTES,
    MAX_INSTRUCTIONS_BYTES,
    Caps,
    Parsed,
    invalid,
    parse,
)
from ghapp.workspace.git import GitError, GitWorkspace


class MirrorSettings:
    """The SettingsSource port over the git mirror."""

    def __init__(self, git: GitWorkspace, caps: Caps) -> None:
        self.git, self.caps = git, caps

    async def load(self, repo: Repository, token: str) -> RepoSettings:
        """Fetch the mirror; the settings at the head of the default branch, or SettingsInvalid."""
        mirror = await self.git.sync(repo, token)
        sha = await self.git.branch_head(mirror, repo.default_branch)
        if sha is None:
            raise GitError(f"{repo.full_name} has no branch {repo.default_branch!r}")
        operator = RepoSettings(protected_paths=self.caps.protected_paths, source_sha=sha)
        try:
            raw = await self.git.read_blob(mirror, sha, SETTINGS_PATH, MAX_FILE_BYTES)
        except ValueError:
            raise invalid(
                None, None, f"the file is larger than {MAX_FILE_BYTES >> 10} KiB"
            ) from None
        if raw is None:
            return operator
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid(None, None, "the file is not UTF-8 text") from None
        parsed = parse(text, self.caps)
        settings = replace(parsed.settings, source_sha=sha)
        base_sha = sha
        if settings.base_branch is not None:
            found = await self.git.branch_head(mirror, settings.base_branch)
            if found is None:
                raise parsed.fail(
                    "base_branch",
                    f"{repo.full_name} has no branch {settings.base_branch!r}; "
                    "ghapp never creates it",
                )
            base_sha = found
        return await self._instructions(parsed, settings, mirror, base_sha)

    async def _instructions(
        self, parsed: Parsed, settings: RepoSettings, mirror: Path, sha: str
    ) -> RepoSettings:
        """The named file, else AGENTS.md, else CLAUDE.md; at most 64 KiB of UTF-8."""
        named = settings.instructions_path
        for path in (named,) if named else DEFAULT_INSTRUCTIONS:
            try:
                raw = await self.git.read_blob(mirror, sha, path, MAX_INSTRUCTIONS_BYTES)
            except ValueError:
                raise parsed.fail(
                    "instructions", f"{path} is larger than 64 KiB; name a shorter file"
                ) from None
            if raw is None:
                continue
            text = raw.decode("utf-8", "replace")
            return replace(settings, instructions=text, instructions_path=path)
        if named:
            raise parsed.fail("instructions", f"{named} is not a file on the base branch")
        return replace(settings, instructions_path=None)
