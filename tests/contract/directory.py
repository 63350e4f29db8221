"""TaskStore contract: installations, projects and chat threads."""

from __future__ import annotations

import asyncio
from typing import Any

from ghapp.core.model import (
    Installation,
    Project,
)
from ghapp.core.ports import TaskStore
from tests.contract.support import (
    StoreFactory,
    at,
    new,
)


class DirectoryContract:
    """Part of TaskStoreContract, whose docstring names the fixtures it needs."""

    async def test_upsert_installation_replaces_account_and_repos(self, store: TaskStore) -> None:
        await store.upsert_installation(Installation(1, "octo", ("octo/a", "octo/b")))
        await store.upsert_installation(Installation(2, "other", ()))
        await store.upsert_installation(Installation(1, "octo-renamed", ("octo/c",)))
        assert await store.installations() == [
            Installation(1, "octo-renamed", ("octo/c",)),
            Installation(2, "other", ()),
        ]
        assert await store.installation_for_repo("octo/a") is None
        assert await store.installation_for_repo("octo/c") == 1

    async def test_installation_repos_change_and_match_any_case(self, store: TaskStore) -> None:
        await store.upsert_installation(Installation(1, "octo", ("octo/a",)))
        await store.set_installation_repos(1, added=["octo/b", "octo/c"], removed=["OCTO/A"])
        [inst] = await store.installations()
        assert sorted(inst.repos) == ["octo/b", "octo/c"]
        assert await store.installation_for_repo("Octo/B") == 1
        assert await store.installation_for_repo("octo/a") is None
        await store.set_installation_repos(1, added=["octo/b"], removed=["octo/nope"])
        assert sorted((await store.installations())[0].repos) == ["octo/b", "octo/c"]
        await store.remove_installation(1)
        assert await store.installations() == []
        assert await store.installation_for_repo("octo/b") is None

    async def test_repos_of_an_unknown_installation_are_recorded(self, store: TaskStore) -> None:
        await store.set_installation_repos(5, added=["octo/x"], removed=[])
        assert await store.installation_for_repo("octo/x") == 5
        assert [i.id for i in await store.installations()] == [5]

    async def test_projects_replace_by_slug_with_one_default(self, store: TaskStore) -> None:
        await store.add_project(Project("web", "octo/web", 1, is_default=True))
        await store.add_project(Project("api", "octo/api", 1))
        assert {p.slug: p.is_default for p in await store.projects()} == {
            "web": True,
            "api": False,
        }
        await store.add_project(Project("api", "octo/api2", 2, is_default=True))
        assert sorted(await store.projects(), key=lambda p: p.slug) == [
            Project("api", "octo/api2", 2, is_default=True),
            Project("web", "octo/web", 1, is_default=False),
        ]
        await store.add_project(Project("api", "octo/api2", 2, is_default=False))
        assert not any(p.is_default for p in await store.projects())
        assert await store.remove_project("web") is True
        assert await store.remove_project("web") is False
        assert [p.slug for p in await store.projects()] == ["api"]

    async def test_one_process_posts_a_tasks_chat_thread(
        self, store: TaskStore, open_store: StoreFactory
    ) -> None:
        """Processes sharing a store agree on a task's parent message (Slack threads)."""
        refs: Any = store
        other: Any = await open_store()
        task = await store.create_task(new(1), at(0))
        assert task is not None
        assert await refs.thread_ref("slack:C1", task.id) is None
        first, second = await asyncio.gather(
            refs.claim_thread("slack:C1", task.id, at(0), 10.0),
            other.claim_thread("slack:C1", task.id, at(0), 10.0),
        )
        assert sorted([first, second]) == [False, True]  # exactly one posts the parent
        assert await refs.claim_thread("slack:C2", task.id, at(0), 10.0)  # per chat
        assert not await other.claim_thread("slack:C1", task.id, at(0.1), 10.0)
        # A claim whose poster died without posting is taken over once it is stale.
        assert await other.claim_thread("slack:C1", task.id, at(1), 10.0)
        await other.set_thread_ref("slack:C1", task.id, "1700000001.000100")
        assert await refs.thread_ref("slack:C1", task.id) == "1700000001.000100"
        assert not await refs.claim_thread("slack:C1", task.id, at(60), 10.0)  # posted: final
        assert await refs.thread_ref("slack:C2", task.id) is None
