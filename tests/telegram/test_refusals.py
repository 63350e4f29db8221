"""Telegram saying no as it really does: a blocked bot, an unknown chat, a group that became
a supergroup, two pollers of one token, an edit that changes nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from telegram.error import BadRequest

from ghapp.agent.logview import AgentLogReader
from ghapp.core.ports import Notice, NoticeKind
from ghapp.telegram.bot import TelegramBot
from tests.fakes.stack import eventually
from tests.telegram.conftest import CHAT, FAST, OTHER_CHAT, Rig

SUPERGROUP = -1001234567890


async def test_a_migrated_group_gets_its_notices_in_the_new_supergroup(rig: Rig) -> None:
    rig.fake.migrated[CHAT] = SUPERGROUP
    await rig.bot.notify(Notice(NoticeKind.QUEUED, "first after the upgrade"))
    await rig.fake.wait_text("first after the upgrade", SUPERGROUP)
    await rig.bot.notify(Notice(NoticeKind.QUEUED, "second"))
    await rig.fake.wait_text("second", SUPERGROUP)
    to_old = [c for c in rig.fake.method_calls("sendMessage") if int(c["chat_id"]) == CHAT]
    assert len(to_old) == 1  # refused once, then the new id is used
    assert rig.bot.outbox.dropped == 0
    # The operator's commands now come from the supergroup and are answered there.
    assert "/status" in await rig.say("/help", chat=SUPERGROUP)


async def test_a_user_who_blocked_the_bot_costs_one_try_per_message(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.fake.blocked.add(CHAT)
    await rig.bot.notify(Notice(NoticeKind.QUEUED, "only the other chat"))
    await rig.fake.wait_text("only the other chat", OTHER_CHAT)
    await rig.bot.outbox.idle()
    to_blocked = [c for c in rig.fake.method_calls("sendMessage") if int(c["chat_id"]) == CHAT]
    assert len(to_blocked) == 1 and rig.bot.outbox.dropped == 1
    assert "bot was blocked by the user" in caplog.text


async def test_an_unknown_chat_is_refused_once_not_retried(rig: Rig) -> None:
    rig.fake.known_chats = {OTHER_CHAT}
    await rig.bot.notify(Notice(NoticeKind.QUEUED, "hello"))
    await rig.fake.wait_text("hello", OTHER_CHAT)
    await rig.bot.outbox.idle()
    to_unknown = [c for c in rig.fake.method_calls("sendMessage") if int(c["chat_id"]) == CHAT]
    assert len(to_unknown) == 1 and rig.bot.outbox.dropped == 1


async def test_two_pollers_of_one_token_conflict_and_say_so(
    rig: Rig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "ghapp.telegram.bot")
    second = TelegramBot(
        rig.fake.token,
        [CHAT],
        rig.service,
        AgentLogReader(rig.store),
        api_url=rig.fake.base_url,
        config=FAST,
    )
    await second.start()
    try:
        await eventually(lambda: rig.fake.conflicts >= 2, within=15)
        await eventually(lambda: "another process polls this bot token" in caplog.text, within=15)
    finally:
        await second.stop()


async def test_an_edit_that_changes_nothing_is_refused_like_the_bot_api(rig: Rig) -> None:
    sent = await rig.bot.app.bot.send_message(chat_id=CHAT, text="same")
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await rig.bot.app.bot.edit_message_text("same", chat_id=CHAT, message_id=sent.message_id)
