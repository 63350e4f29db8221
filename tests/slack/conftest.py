"""ghapp built by bootstrap against fake GitHub and the fake Slack; Slack's side is played here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from ghapp.core.model import Installation, Project
from ghapp.process import Ghapp
from tests.fakes.slack import ALLOWED, BOT_TOKEN, SECRET, FakeSlack, Message, Response
from tests.fakes.stack import OWNER, REPO, Stack, close_stack, make_stack


@dataclass
class SlackRig:
    """The stack, the fake Slack, and Slack's half of the conversation."""

    stack: Stack
    slack: FakeSlack

    @property
    def app(self) -> Ghapp:
        assert self.stack.app is not None
        return self.stack.app

    @property
    def events_url(self) -> str:
        assert self.stack.server is not None
        return str(self.stack.server.make_url("/slack/events"))

    async def post(self, body: str, **kw: Any) -> tuple[int, str, float]:
        return await self.slack.post_to(self.events_url, body, **kw)

    async def command(self, text: str, channel: str = ALLOWED, **kw: Any) -> Response:
        """Run `/mc <text>` and return ghapp's answer through the response URL."""
        before = len(self.slack.responses)
        status, body, took = await self.post(self.slack.command_body(text, channel, **kw))
        assert status == 200 and took < 3.0, (status, body, took)
        await self.slack.wait_for(lambda: len(self.slack.responses) > before)
        return self.slack.responses[before]

    async def press(self, action: str, task_id: int, **kw: Any) -> Response:
        """Press a task button and return ghapp's (private) answer."""
        before = len(self.slack.responses)
        status, body, _ = await self.post(self.slack.button_body(action, task_id, **kw))
        assert status == 200, (status, body)
        await self.slack.wait_for(lambda: len(self.slack.responses) > before)
        return self.slack.responses[before]

    async def parent(self, task_id: int, within: float = 10.0) -> Message:
        """The task's parent message in the allowed channel, once posted."""
        await self.slack.wait_for(lambda: self.slack.parent_of_task(task_id), within)
        message = self.slack.parent_of_task(task_id)
        assert message is not None
        return message

    async def idle(self) -> None:
        """Every queued notice went out."""
        assert self.app.slack is not None
        await asyncio.wait_for(self.app.slack.threads.idle(), 20)


async def slack_stack(slack: FakeSlack, worker_user: str | None = None, **extra: Any) -> Stack:
    """make_stack with Slack configured for the fake (HTTP mode unless extra says otherwise)."""
    settings: dict[str, Any] = {
        "slack_bot_token": BOT_TOKEN,
        "slack_signing_secret": SECRET,
        "slack_channel_ids": (ALLOWED,),
        "slack_api_url": slack.api_url,
    }
    settings.update(extra)
    return await make_stack(worker_user=worker_user, **settings)


async def with_project(app: Ghapp) -> None:
    """The installed repository, known to the store, as the default project."""
    await app.store.upsert_installation(Installation(1, OWNER, (REPO,)))
    await app.store.add_project(Project("hello", REPO, 1, is_default=True))


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    slack = FakeSlack()
    await slack.start()
    yield slack
    await slack.stop()


@pytest.fixture
async def stack(fake_slack: FakeSlack) -> AsyncIterator[Stack]:
    s = await slack_stack(fake_slack)
    yield s
    await close_stack(s)
