"""The tracking comment: one per task, whatever ghapp lost on the way."""

from __future__ import annotations

from ghapp.core.model import Task, TaskSource, TaskState
from ghapp.core.report import MARKER, Reporter
from tests.fakes.memory import FakeClock, MemoryForge, RecordingMessenger


def task(task_id: int = 3, state: TaskState = TaskState.QUEUED) -> Task:
    return Task(
        id=task_id,
        source=TaskSource.LABEL,
        repo="octo/app",
        installation_id=1,
        issue_number=5,
        requester="alice",
        instructions="",
        budget_usd=2.0,
        state=state,
        created_at=FakeClock().now(),
    )


async def test_a_comment_whose_id_was_never_saved_is_found_by_its_marker() -> None:
    forge = MemoryForge()
    reporter = Reporter(forge, RecordingMessenger(), "/mc")
    first = await reporter.track(task())  # ghapp dies before the store keeps this id
    again = await reporter.track(task(state=TaskState.RUNNING))
    assert again == first and len(forge.comments) == 1
    assert forge.edits == [(first, forge.edits[0][1])] and "State: running" in forge.edits[0][1]
    other = await reporter.track(task(4))  # another task on the same issue gets its own
    assert other != first and len(forge.comments) == 2
    assert all(body.startswith(MARKER) for _, _, body in forge.comments)
