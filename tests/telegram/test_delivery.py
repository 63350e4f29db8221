"""Notices: life cycle, limits (4,096, pacing, 429), and Telegram down at start or mid-way."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from pathlib import Path

import pytest
from telegram.error import BadRequest

from ghapp.agent.logview import AgentLogReader
from ghapp.core.model import TaskState
from ghapp.core.ports import AgentOutcome, Notice, NoticeKind
from ghapp.messaging.text import MAX_MESSAGE, units
from ghapp.telegram.bot import TelegramBot
from ghapp.telegram.outbox import OutboxConfig
from tests.fakes.telegram import Mode
from tests.telegram.conftest import CHAT, FAST, OTHER_CHAT, Rig, close, make_rig


async def test_task_life_cycle_reaches_every_allowed_chat(rig: Rig) -> None:
    task = await rig.queue(issue=5, title="Fix the flaky test")
    await rig.run_all()
    for chat in (CHAT, OTHER_CHAT):
        await rig.fake.wait_text(f"Task #{task.id} queued: octo/app#5", chat)
        await rig.fake.wait_text(f"Task #{task.id} started", chat)
        pr = await rig.fake.wait_text("pull request https://github.test/octo/app/pull/500", chat)
        assert "(cost $0.50)" in pr and "Took 0s, attempt 1." in pr
    rig.worker.outcome = AgentOutcome(False, 9.0, reason="API Error: 500")
    failed = await rig.queue(issue=6)
    await rig.run_all()
    assert "API Error: 500" in await rig.fake.wait_text(f"Task #{failed.id} failed", CHAT)
    await rig.fake.wait_text("⚠️ Daily budget: $9.50 of $10.00 spent", CHAT)
    await rig.service.reporter.notify(
        NoticeKind.MERGED, f"Task #{task.id}: pull request merged", task
    )
    await rig.fake.wait_text(f"🎉 Task #{task.id}: pull request merged", OTHER_CHAT)
    texts = rig.fake.texts(CHAT)
    assert texts.index(next(t for t in texts if "queued" in t)) < texts.index(
        next(t for t in texts if "started" in t)
    )


async def test_budget_exhausted_and_waiting_notices(rig: Rig) -> None:
    rig.worker.outcome = AgentOutcome(True, 10.0, "pricey")
    await rig.queue(issue=1, budget=8)
    await rig.run_all()
    await rig.fake.wait_text("🛑 Daily budget: $10.00 of $10.00 spent", CHAT)
    waiting = await rig.queue(issue=2)
    await rig.run_all()
    await rig.fake.wait_text(f"⏸ Task #{waiting.id} is waiting for daily budget", OTHER_CHAT)


async def test_long_notices_are_split_under_the_limit(rig: Rig) -> None:
    text = "\n".join(f"{i:05d} " + "é" * 90 for i in range(100))  # ~9,700 units
    await rig.bot.notify(Notice(NoticeKind.FAILED, text))
    await rig.bot.outbox.idle()
    parts = rig.fake.texts(CHAT)
    assert len(parts) == 3 and all(units(p) <= MAX_MESSAGE for p in parts)
    assert "00000" in parts[0] and parts[-1].endswith("é" * 90) and "00099" in parts[-1]
    # the fake enforces the real limit, so an unsplit text would have failed
    with pytest.raises(BadRequest, match="too long"):
        await rig.bot.app.bot.send_message(chat_id=CHAT, text="x" * (MAX_MESSAGE + 1))


async def test_fake_edits_messages_like_the_bot_api(rig: Rig) -> None:
    sent = await rig.bot.app.bot.send_message(chat_id=CHAT, text="first")
    edited = await rig.bot.app.bot.edit_message_text(
        "second", chat_id=CHAT, message_id=sent.message_id
    )
    assert not isinstance(edited, bool) and edited.text == "second"
    assert rig.fake.texts(CHAT)[-1] == "second"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # PTB's own RetryAfter constructor
async def test_429_retry_after_is_honoured(rig: Rig) -> None:
    rig.fake.flood = [1]
    started = time.monotonic()
    await rig.bot.notify(Notice(NoticeKind.QUEUED, "after the flood"))
    await rig.fake.wait_for(lambda sent: len(sent) == 2, within=5)
    assert len(rig.fake.method_calls("sendMessage")) == 3  # one refused with 429, two delivered
    assert max(s.at for s in rig.fake.sent) - started >= 0.95
    assert rig.bot.outbox.dropped == 0


async def test_messages_to_one_chat_are_paced(tmp_path: Path) -> None:
    config = dataclasses.replace(FAST, outbox=dataclasses.replace(FAST.outbox, interval_s=0.2))
    rig = await make_rig(tmp_path, config)
    try:
        for i in range(3):
            await rig.bot.notify(Notice(NoticeKind.QUEUED, f"n{i}"))
        await rig.bot.outbox.idle()
        times = [s.at for s in rig.fake.sent if s.chat_id == CHAT]
        assert len(times) == 3 and all(b - a >= 0.18 for a, b in itertools.pairwise(times))
    finally:
        await close(rig)


@pytest.mark.parametrize("mode", ["refuse", "502"])
async def test_unreachable_at_start_does_not_block_and_catches_up(
    tmp_path: Path, mode: Mode
) -> None:
    rig = await make_rig(tmp_path, start_bot=False)
    try:
        await rig.fake.down(mode)
        started = time.monotonic()
        await rig.bot.start()
        await rig.queue(issue=1)  # the core notifies while Telegram is away
        assert time.monotonic() - started < 2.0  # far below PTB's timeouts and backoff
        await asyncio.sleep(0.3)  # a negative: nothing may arrive while Telegram is away
        assert not rig.bot.connected and rig.fake.sent == []
        await rig.fake.up()
        await rig.connected()
        await rig.fake.wait_text("Task #1 queued", CHAT)
        assert "Queue: 1 task" in await rig.say("/status")
    finally:
        await close(rig)


@pytest.mark.parametrize("mode", ["refuse", "502"])
async def test_unreachable_mid_way_never_blocks_tasks_and_notices_resume(
    rig: Rig, mode: Mode
) -> None:
    assert "Queue: 0 tasks" in await rig.say("/status")
    await rig.fake.down(mode)
    started = time.monotonic()
    task = await rig.queue(issue=7)
    await rig.run_all()
    assert time.monotonic() - started < 2.0  # submit and run never wait for Telegram
    assert (await rig.store.get_task(task.id)).state is TaskState.SUCCEEDED  # type: ignore[union-attr]
    await asyncio.sleep(0.1)
    await rig.fake.up()
    for needle in (" queued", " started", ": pull request"):
        await rig.fake.wait_text(f"Task #{task.id}{needle}", CHAT)
    await rig.fake.wait_text("pull request https://github.test", OTHER_CHAT)
    assert "Queue: 0 tasks" in await rig.say("/status", within=15)  # polling recovered too


async def test_undeliverable_messages_are_dropped_after_bounded_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = dataclasses.replace(FAST, outbox=dataclasses.replace(FAST.outbox, max_attempts=2))
    rig = await make_rig(tmp_path, config)
    try:
        await rig.fake.down("502")
        with caplog.at_level(logging.WARNING, logger="ghapp.telegram"):
            await rig.bot.notify(Notice(NoticeKind.FAILED, "lost forever"))
            await rig.bot.outbox.idle()
        assert rig.bot.outbox.dropped == 2
        assert "dropped a message to chat 1001: ❌ lost forever" in caplog.text
        await rig.fake.up()
        await rig.bot.notify(Notice(NoticeKind.QUEUED, "found"))
        await rig.fake.wait_text("found", OTHER_CHAT)
        assert not any("lost" in t for t in rig.fake.texts())
    finally:
        await close(rig)


async def test_outbox_is_bounded_and_keeps_the_newest(tmp_path: Path) -> None:
    config = dataclasses.replace(FAST, outbox=OutboxConfig(interval_s=0, max_queue=3))
    rig = await make_rig(tmp_path, config, start_bot=False)
    try:
        await rig.fake.down("refuse")
        await rig.bot.start()
        started = time.monotonic()
        for i in range(10):
            await rig.bot.notify(Notice(NoticeKind.QUEUED, f"n{i}"))
        assert time.monotonic() - started < 1.0
        await rig.fake.up()
        await rig.connected()
        await rig.bot.outbox.idle()
        assert rig.fake.texts(CHAT) == ["🕓 n7", "🕓 n8", "🕓 n9"]
        assert rig.bot.outbox.dropped == 14
    finally:
        await close(rig)


async def test_rejected_token_leaves_the_bot_off_and_never_logs_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = await make_rig(tmp_path, start_bot=False)
    bot = TelegramBot(
        "999:wrong-secret",
        [CHAT],
        rig.service,
        AgentLogReader(rig.store),
        api_url=rig.fake.base_url,
        config=FAST,
    )
    try:
        with caplog.at_level(logging.INFO):
            await bot.start()
            await asyncio.sleep(0.3)
            await bot.notify(Notice(NoticeKind.QUEUED, "nobody hears this"))
            assert not bot.connected
            await bot.stop()
        ours = [r for r in caplog.records if not r.name.startswith("aiohttp")]
        assert any("rejected TELEGRAM_BOT_TOKEN" in r.getMessage() for r in ours)
        assert not any("wrong-secret" in r.getMessage() for r in ours)
        assert rig.fake.sent == []
    finally:
        await close(rig)


async def test_stop_is_bounded_while_telegram_is_down(rig: Rig) -> None:
    await rig.fake.down("refuse")
    await asyncio.sleep(0.2)  # polling has failed and sleeps out PTB's backoff
    await rig.bot.notify(Notice(NoticeKind.QUEUED, "pending"))
    started = time.monotonic()
    await rig.bot.stop()
    assert time.monotonic() - started < 5.0 and not rig.bot.connected
