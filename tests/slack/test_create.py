"""/create against the fake GitHub, from Slack and Telegram: with and without Administration."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator

import pytest

from ghapp.core.model import Installation
from tests.fakes.memory import ScriptedWorker
from tests.fakes.slack import FakeSlack
from tests.fakes.stack import OWNER, REPO, Stack, close_stack
from tests.fakes.telegram import FakeTelegram
from tests.slack.conftest import SlackRig, slack_stack

CHAT = 1001


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def stack(fake_slack: FakeSlack, telegram: FakeTelegram) -> AsyncIterator[Stack]:
    s = await slack_stack(
        fake_slack,
        telegram_token=telegram.token,
        telegram_chat_ids=(CHAT,),
        telegram_api_url=telegram.base_url,
    )
    org = s.github.add_installation(7, "acme")
    org.account_type = "Organization"
    yield s
    await close_stack(s)


def readme(stack: Stack, repo: str) -> str:
    bare = stack.root / "git" / f"{repo}.git"
    return subprocess.run(
        ["git", "-C", str(bare), "show", "main:README.md"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.mark.parametrize("granted", [None, "read"])
async def test_without_the_permission_it_names_it_and_where(
    stack: Stack, fake_slack: FakeSlack, telegram: FakeTelegram, granted: str | None
) -> None:
    if granted is not None:  # Administration: read is not enough to create a repository
        stack.github.installations[7].permissions["administration"] = granted
    app = await stack.start(worker=ScriptedWorker())
    await app.store.upsert_installation(Installation(1, OWNER, (REPO,)))
    await app.store.upsert_installation(Installation(7, "acme", ()))
    rig = SlackRig(stack, fake_slack)
    reply = await rig.command("create newrepo")
    assert reply.ephemeral
    assert "Repository permissions → Administration: Read and write" in reply.text
    assert "https://github.com/settings/apps/ghapp-test/permissions" in reply.text
    assert "https://github.com/organizations/acme/settings/installations/7" in reply.text
    await telegram.inject(CHAT, "/create newrepo")
    await telegram.wait_text("Repository permissions → Administration: Read and write", CHAT)
    assert "acme/newrepo" not in stack.github.repos
    assert await app.store.projects() == []
    assert stack.github.requests_to("/orgs/acme/repos") == []


async def test_with_the_permission_it_creates_and_registers_the_repository(
    stack: Stack, fake_slack: FakeSlack, telegram: FakeTelegram
) -> None:
    stack.github.installations[7].permissions["administration"] = "write"
    app = await stack.start(worker=ScriptedWorker())
    await app.store.upsert_installation(Installation(1, OWNER, (REPO,)))
    await app.store.upsert_installation(Installation(7, "acme", ()))
    rig = SlackRig(stack, fake_slack)
    reply = await rig.command("create newrepo")
    assert not reply.ephemeral
    assert reply.text == (
        "Created acme/newrepo and added it as project newrepo (the default project): "
        "https://github.com/acme/newrepo"
    )
    created = stack.github.repos["acme/newrepo"]
    assert created.private
    assert readme(stack, "acme/newrepo").startswith("# newrepo")
    [project] = await app.store.projects()
    assert (project.slug, project.repo, project.installation_id) == ("newrepo", "acme/newrepo", 7)
    assert await app.store.installation_for_repo("acme/newrepo") == 7
    # A task can go there at once; a second /create of the same name is refused.
    queued = await rig.command("task newrepo: add a licence")
    assert queued.text.startswith("Queued task #1 on acme/newrepo")
    again = await rig.command("create newrepo")
    assert again.ephemeral and again.text == "Project newrepo already exists: acme/newrepo."
    # The same from Telegram.
    await telegram.inject(CHAT, "/create other")
    said = await telegram.wait_text("Created acme/other", CHAT)
    assert said.endswith("https://github.com/acme/other")
    assert "acme/other" in stack.github.repos


async def test_several_organizations_need_the_name(stack: Stack, fake_slack: FakeSlack) -> None:
    stack.github.installations[7].permissions["administration"] = "write"
    other = stack.github.add_installation(8, "bigco")
    other.account_type = "Organization"
    other.permissions["administration"] = "write"
    app = await stack.start(worker=ScriptedWorker())
    for inst in (Installation(7, "acme", ()), Installation(8, "bigco", ())):
        await app.store.upsert_installation(inst)
    rig = SlackRig(stack, fake_slack)
    reply = await rig.command("create thing")
    assert reply.ephemeral and "Several organizations allow it (acme, bigco)" in reply.text
    assert "Created bigco/thing" in (await rig.command("create bigco/thing")).text
    assert "bigco/thing" in stack.github.repos and "acme/thing" not in stack.github.repos
    assert "Project thing already exists" in (await rig.command("create acme/thing")).text
    stack.github.add_repo("acme/taken", installation_id=None)
    taken = await rig.command("create acme/taken")
    assert taken.ephemeral and "acme/taken already exists on GitHub" in taken.text
