"""Telegram /retry asks GitHub afresh whether the task's requester may still spend."""

from __future__ import annotations

from ghapp.core.model import TaskState
from tests.telegram.conftest import Rig


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
