"""Project commands: a short name for a repository where the GitHub App is installed."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from ghapp.core.model import BadCommand, GhappError, Project
from ghapp.core.ports import InstallationAccess, RepoAdmin, TaskStore

_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_SLUG_RULE = "a slug is 1-32 lowercase letters, digits, '-' or '_', starting with a letter or digit"
PERMISSION = "Repository permissions → Administration: Read and write"
log = logging.getLogger(__name__)


def slug_of(word: str) -> str:
    """A project slug, lowercased; BadCommand when it is not one."""
    slug = word.lower()
    if not _SLUG.fullmatch(slug):
        raise BadCommand(f"{word!r} is not a valid slug: {_SLUG_RULE}")
    return slug


class ProjectCommands:
    """/projects, /addproject, /rmproject and /create; each change is one store call."""

    def __init__(
        self, store: TaskStore, cmd: Callable[[str], str], repos: RepoAdmin | None = None
    ) -> None:
        self.store = store
        self.cmd = cmd
        self.repos = repos

    async def _installed_repos(self) -> list[str]:
        """Every repository some installation reaches, sorted."""
        return sorted(r for inst in await self.store.installations() for r in inst.repos)

    async def show(self, args: str, requester: str) -> str:
        """Projects, whether the app still reaches them, and where it is installed."""
        projects = await self.store.projects()
        out = []
        if not projects:
            out.append(f"No projects yet. Add one: {self.cmd('addproject')} <slug> <owner/repo>")
        else:
            out.append("Projects:")
        for p in projects:
            gone = await self.store.installation_for_repo(p.repo) is None
            mark = " (default)" if p.is_default else ""
            out.append(f"{p.slug}: {p.repo}{mark}" + (" — app not installed there" if gone else ""))
        repos = await self._installed_repos()
        if repos:
            shown = ", ".join(repos[:30]) + (
                f" … and {len(repos) - 30} more" if len(repos) > 30 else ""
            )
            out.append(f"\nMissionControl is installed on: {shown}")
        else:
            out.append("\nMissionControl is not installed on any repository yet.")
        return "\n".join(out)

    async def add(self, args: str, requester: str) -> str:
        """Name a repository where the app is installed; the first project becomes the default."""
        words = args.split()
        flags = [w for w in words if w.startswith("--")]
        positional = [w for w in words if not w.startswith("--")]
        for flag in flags:
            if flag != "--default":
                raise BadCommand(f"unknown option {flag}")
        if len(positional) != 2:
            raise BadCommand("give a slug and a repository")
        slug, repo = slug_of(positional[0]), positional[1].removesuffix(".git")
        if not _REPO.fullmatch(repo):
            raise BadCommand(f"{positional[1]!r} is not a repository; write it as owner/name")
        installation = await self.store.installation_for_repo(repo)
        if installation is None:
            installed = ", ".join((await self._installed_repos())[:30]) or "none"
            raise GhappError(
                f"MissionControl is not installed on {repo}, so it cannot be a project. "
                "Install the GitHub App on that repository (or add the repository to an "
                f"existing installation) and try again. Installed repositories: {installed}."
            )
        canonical = next(
            (r for r in await self._installed_repos() if r.lower() == repo.lower()), repo
        )
        projects = await self.store.projects()
        old = next((p for p in projects if p.slug == slug), None)
        has_default = any(p.is_default for p in projects if p.slug != slug)
        is_default = "--default" in flags or not has_default or bool(old and old.is_default)
        await self.store.add_project(Project(slug, canonical, installation, is_default))
        verb = "Updated" if old else "Added"
        mark = " as the default project" if is_default else ""
        return f"{verb} project {slug}: {canonical}{mark}."

    async def remove(self, args: str, requester: str) -> str:
        """Forget a project; its tasks and branches stay."""
        words = args.split()
        if len(words) != 1:
            raise BadCommand("give exactly one project slug")
        slug = slug_of(words[0])
        old = next((p for p in await self.store.projects() if p.slug == slug), None)
        if old is None or not await self.store.remove_project(slug):
            known = ", ".join(p.slug for p in await self.store.projects()) or "none"
            raise GhappError(f"There is no project {slug} (projects: {known}).")
        note = ""
        if old.is_default:
            note = (
                f" It was the default: name a project in {self.cmd('task')}, or set a new default "
                "with --default."
            )
        return f"Removed project {slug} ({old.repo}); its tasks are unchanged.{note}"

    async def create(self, args: str, requester: str) -> str:
        """Create the repository in an organization that lets the app, and make it a project."""
        words = args.split()
        if len(words) != 1:
            raise BadCommand("give exactly one project slug, which is also the repository name")
        org, _, name = words[0].rpartition("/")
        slug = slug_of(name)
        old = next((p for p in await self.store.projects() if p.slug == slug), None)
        if old is not None:
            raise GhappError(f"Project {slug} already exists: {old.repo}.")
        found = [
            r
            for r in await self._installed_repos()
            if r.split("/", 1)[1].lower() == slug
            and (not org or r.split("/", 1)[0].lower() == org.lower())
        ]
        if found:
            raise GhappError(
                f"{found[0]} already exists and MissionControl is installed on it: "
                f"{self.cmd('addproject')} {slug} {found[0]}"
            )
        target = await self._creatable(org)
        assert self.repos is not None  # _creatable refused otherwise
        repo = await self.repos.create_repo(target.installation_id, target.account, slug)
        await self.store.set_installation_repos(target.installation_id, [repo.full_name], [])
        has_default = any(p.is_default for p in await self.store.projects())
        await self.store.add_project(
            Project(slug, repo.full_name, target.installation_id, not has_default)
        )
        mark = " (the default project)" if not has_default else ""
        return f"Created {repo.full_name} and added it as project {slug}{mark}: {repo.html_url}"

    async def _creatable(self, org: str) -> InstallationAccess:
        """The organization installation to create in; GhappError naming what to grant where."""
        if self.repos is None:
            raise GhappError("This ghapp has no GitHub App configured, so it cannot create repos.")
        found: list[InstallationAccess] = []
        for inst in await self.store.installations():
            try:
                found.append(await self.repos.access(inst.id))
            except Exception:
                log.exception("could not read installation %s", inst.id)
        orgs = [a for a in found if a.organization]
        if org:
            orgs = [a for a in orgs if a.account.lower() == org.lower()]
        if not orgs:
            where = f"the organization {org}" if org else "an organization"
            users = ", ".join(a.account for a in found if not a.organization) or "nowhere"
            raise GhappError(
                f"MissionControl is not installed on {where}, and a GitHub App cannot create "
                f"repositories under a user account (installed on: {users}). Install it on "
                f"an organization and grant it {PERMISSION}, or create the repository yourself, "
                f"install the app on it and run {self.cmd('addproject')} <slug> <owner/repo>."
            )
        able = [a for a in orgs if a.administration == "write"]
        if not able:
            settings = await self.repos.app_settings_url()
            accept = "; ".join(f"{a.account}: {a.settings_url}" for a in orgs)
            raise GhappError(
                f"Creating repositories needs the GitHub App permission '{PERMISSION}', "
                f"which {', '.join(a.account for a in orgs)} has not granted. Add it in the "
                f"app's settings ({settings}, Permissions & events), then have an organization "
                f"owner accept the new permission on the installation ({accept})."
            )
        if len(able) > 1:
            names = ", ".join(a.account for a in able)
            raise BadCommand(
                f"several organizations allow it ({names}): write <organization>/<slug>"
            )
        return able[0]
