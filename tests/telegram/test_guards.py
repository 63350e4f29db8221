"""Telegram: /retry asks GitHub afresh about the requester; what the bot sends is inert."""

from __future__ import annotations

from ghapp.core.model import TaskState
from ghapp.core.ports import AgentOutcome
from tests.telegram.conftest import SECRET, Rig


async def test_retry_of_a_task_whose_requester_lost_access_is_refused(rig: Rig) -> None:
    rig.worker.make_commits = 0
    task = await rig.queue(issue=1)
    await rig.run_all()
    rig.forge.permissions["alice"] = "read"
    reply = await rig.say(f"/retry {task.id}")
    assert reply.startswith(f"Task #{task.id} was not run again: alice")
    assert "no longer has write access to octo/app" in reply
    after = await rig.store.get_task(task.id)
    assert after is not None and after.state is TaskState.FAILED and after.attempt == 1


async def test_a_failure_notice_neither_mentions_nor_leaks(rig: Rig) -> None:
    rig.worker.outcome = AgentOutcome(
        False, 0.1, reason=f"ask @someone; key {SECRET} sk-ant-api03-abcdefghijk\u200b"
    )
    task = await rig.queue(issue=2)
    await rig.run_all()
    text = await rig.fake.wait_text(f"Task #{task.id} failed")
    assert "＠someone" in text and "@someone" not in text
    assert SECRET not in text and "sk-ant-" not in text and "\u200b" not in text
    assert text.count("[redacted]") == 2
