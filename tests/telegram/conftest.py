"""A ghapp core on a real SQLite store with the bot talking to the fake Bot API over HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ghapp.agent.logview import AgentLogReader
from ghapp.bootstrap import Crew, build_core
from ghapp.core.model import Installation, NewTask, Task, TaskSource
from ghapp.core.runner import RunnerConfig, TaskRunner
from ghapp.core.tasks import Limits, TaskService
from ghapp.store.sqlite import SqliteTaskStore
from ghapp.telegram.bot import BotConfig, TelegramBot
from ghapp.telegram.outbox import OutboxConfig
from tests.fakes.memory import FakeClock, MemoryForge, MemoryVcs, ScriptedWorker
from tests.fakes.telegram import FakeTelegram

CHAT = 1001
OTHER_CHAT = 1002
STRANGER = 666

FAST = BotConfig(
    poll_timeout_s=1,
    connect_backoff_s=0.05,
    connect_backoff_max_s=0.2,
    request_timeout_s=2.0,
    stop_timeout_s=0.3,
    outbox=OutboxConfig(interval_s=0.0, backoff_s=0.05, backoff_max_s=0.2, flush_s=0.5),
)


@dataclass
class Rig:
    """Everything a Telegram test touches."""

    fake: FakeTelegram
    bot: TelegramBot
    store: SqliteTaskStore
    forge: MemoryForge
    vcs: MemoryVcs
    worker: ScriptedWorker
    clock: FakeClock
    service: TaskService
    runner: TaskRunner
    tmp: Path

    async def say(self, text: str, chat: int = CHAT, within: float = 10.0) -> str:
        """Send a message from a chat and return the bot's next message to that chat."""
        await asyncio.wait_for(self.bot.outbox.idle(), within)  # earlier notices are out
        before = len(self.fake.texts(chat))
        await self.fake.inject(chat, text)
        await self.fake.wait_for(lambda _: len(self.fake.texts(chat)) > before, within)
        return self.fake.texts(chat)[before]

    async def connected(self) -> None:
        """Wait until the bot polls."""
        for _ in range(500):
            if self.bot.connected:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the bot never connected")

    async def queue(self, issue: int = 5, budget: float = 5.0, title: str = "Fix bug") -> Task:
        """A task queued the GitHub way."""
        new = NewTask(
            source=TaskSource.LABEL,
            repo="octo/app",
            installation_id=1,
            issue_number=issue,
            requester="alice",
            instructions="",
            budget_usd=budget,
            title=title,
        )
        task = await self.service.submit(new)
        assert task is not None
        return task

    async def run_all(self) -> None:
        await self.runner.fill()
        await self.runner.drain()

    def write_log(self, task_id: int, events: list[dict[str, Any]]) -> Path:
        path = self.tmp / "logs" / f"task-{task_id}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(e) + "\n" for e in events))
        return path


SECRET = "tg-rig-secret-value"  # what the rig's bot knows as a secret of ghapp's


async def make_rig(
    tmp_path: Path,
    config: BotConfig = FAST,
    start_bot: bool = True,
    chats: tuple[int, ...] = (CHAT, OTHER_CHAT),
    user_ids: tuple[int, ...] = (),
) -> Rig:
    fake = FakeTelegram()
    await fake.start()
    store = SqliteTaskStore(tmp_path / "db.sqlite3")
    await store.migrate()
    await store.upsert_installation(Installation(1, "octo", ("octo/app", "octo/lib")))
    forge, clock = MemoryForge({"alice": "write"}), FakeClock()
    vcs = MemoryVcs(tmp_path / "work")
    worker = ScriptedWorker(vcs)
    settings = RunnerConfig(log_dir=tmp_path / "logs", daily_budget_usd=10, cancel_poll_s=0.05)
    core = build_core(store, forge, clock, Limits(10, 5, 8), crew=Crew(vcs, worker, settings))
    service, runner = core.service, core.runner
    assert runner is not None
    bot = TelegramBot(
        fake.token,
        chats,
        service,
        AgentLogReader(store),
        api_url=fake.base_url,
        config=config,
        secrets=(SECRET,),
        user_ids=user_ids,
    )
    core.reporter.messenger = bot
    rig = Rig(fake, bot, store, forge, vcs, worker, clock, service, runner, tmp_path)
    if start_bot:
        await bot.start()
        await rig.connected()
    return rig


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = await make_rig(tmp_path)
    yield rig
    await close(rig)


async def close(rig: Rig) -> None:
    await rig.bot.stop()
    await rig.runner.stop()
    await rig.store.close()
    await rig.fake.stop()
