"""Socket Mode against the fake's websocket: commands arrive over it, and only a leader holds it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from ghapp.bootstrap import build
from ghapp.cluster import Role
from tests.fakes.memory import ScriptedWorker
from tests.fakes.postgres import require_postgres
from tests.fakes.slack import ALLOWED, APP_TOKEN, OTHER, TEAM, USER, FakeSlack
from tests.fakes.stack import Stack, close_stack, eventually
from tests.slack.conftest import SlackRig, slack_stack


@pytest.fixture
async def socket_stack(fake_slack: FakeSlack) -> AsyncIterator[Stack]:
    s = await slack_stack(fake_slack, slack_signing_secret=None, slack_app_token=APP_TOKEN)
    yield s
    await close_stack(s)


def command(fake: FakeSlack, text: str, channel: str = ALLOWED) -> dict[str, str]:
    return {
        "team_id": TEAM,
        "channel_id": channel,
        "user_id": USER,
        "command": "/mc",
        "text": text,
        "api_app_id": "A0APP",
        "response_url": f"{fake.url}/respond/{uuid.uuid4().hex}",
        "trigger_id": "1.2.3",
    }


async def test_commands_over_socket_mode(socket_stack: Stack, fake_slack: FakeSlack) -> None:
    rig = SlackRig(socket_stack, fake_slack)
    await socket_stack.start(worker=ScriptedWorker())
    await fake_slack.wait_for(lambda: fake_slack.sockets)
    assert (await rig.app.health())["slack"] == "socket"
    envelope = await fake_slack.push(command(fake_slack, "status"))
    await fake_slack.wait_for(lambda: fake_slack.responses)
    assert "Nothing is running" in fake_slack.responses[0].text
    await fake_slack.wait_for(lambda: envelope in [a["envelope_id"] for a in fake_slack.acks])
    # a refusal is the ack's own payload, and nothing else is answered
    refused = await fake_slack.push(command(fake_slack, "status", OTHER))
    await fake_slack.wait_for(lambda: any(a["envelope_id"] == refused for a in fake_slack.acks))
    [ack] = [a for a in fake_slack.acks if a["envelope_id"] == refused]
    assert ack["payload"]["response_type"] == "ephemeral"
    assert "does not take commands" in json.dumps(ack["payload"])
    assert len(fake_slack.responses) == 1
    # No public endpoint in Socket Mode: a signed HTTP request is not taken.
    status, _, _ = await rig.post(fake_slack.command_body("status"))
    assert status == 404


async def test_only_the_leader_holds_the_socket(socket_stack: Stack, fake_slack: FakeSlack) -> None:
    rig = SlackRig(socket_stack, fake_slack)
    await socket_stack.start(worker=ScriptedWorker())
    bot = rig.app.slack
    assert bot is not None
    await fake_slack.wait_for(lambda: fake_slack.sockets)
    await bot.set_socket(False)  # lost the election: the connection goes
    await fake_slack.wait_for(lambda: not fake_slack.sockets)
    assert (await rig.app.health())["slack"] == "standby"
    opens = fake_slack.socket_opens
    await bot.set_socket(True)  # won it again
    await fake_slack.wait_for(lambda: fake_slack.sockets and fake_slack.socket_opens > opens)
    await fake_slack.push(command(fake_slack, "help"))
    await fake_slack.wait_for(lambda: fake_slack.responses)
    assert "/mc task" in fake_slack.responses[0].text


@pytest.fixture
async def pg_dsn() -> AsyncIterator[str]:
    server = require_postgres()
    name = server.create_database("slack")
    yield server.dsn(name)
    server.drop_database(name)


async def test_in_a_cluster_one_process_holds_the_socket_and_another_takes_over(
    socket_stack: Stack, fake_slack: FakeSlack, pg_dsn: str
) -> None:
    base = replace(socket_stack.settings, database_url=pg_dsn)
    first = build(replace(base, node_id="a", data_dir=base.data_dir / "a"), role=Role.WEB)
    second = build(replace(base, node_id="b", data_dir=base.data_dir / "b"), role=Role.WEB)
    await first.start()
    await second.start()
    try:
        await fake_slack.wait_for(lambda: fake_slack.sockets, within=15)
        await asyncio.sleep(1.0)  # the other one stays in standby
        modes = sorted([(await first.health())["slack"], (await second.health())["slack"]])
        assert modes == ["socket", "standby"] and len(fake_slack.sockets) == 1
        leader, standby = (
            (first, second) if first.slack and first.slack.mode == "socket" else (second, first)
        )
        await leader.stop()
        await eventually(lambda: standby.slack is not None and standby.slack.mode == "socket", 15)
        await fake_slack.wait_for(lambda: len(fake_slack.sockets) == 1, within=15)
        await fake_slack.push(command(fake_slack, "status"))
        await fake_slack.wait_for(lambda: fake_slack.responses)
        assert "Nothing is running" in fake_slack.responses[0].text
    finally:
        for app in (first, second):
            with contextlib.suppress(Exception):
                await app.stop()
