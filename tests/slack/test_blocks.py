"""A task message's buttons follow its state: nothing offered that cannot work."""

from __future__ import annotations

import dataclasses

import pytest

from ghapp.core.model import TaskState
from ghapp.slack.blocks import buttons
from tests.unit.test_report import task


@pytest.mark.parametrize(
    ("state", "log", "offered"),
    [
        (TaskState.QUEUED, None, ["mc_cancel"]),
        (TaskState.RUNNING, "/logs/1.log", ["mc_cancel", "mc_logs"]),
        (TaskState.FAILED, "/logs/1.log", ["mc_retry", "mc_logs"]),
        (TaskState.CANCELLED, None, ["mc_retry"]),
        (TaskState.SUCCEEDED, "/logs/1.log", ["mc_logs"]),
    ],
)
def test_buttons_by_state(state: TaskState, log: str | None, offered: list[str]) -> None:
    shown = buttons(dataclasses.replace(task(1, state), log_path=log))
    assert [b["action_id"] for b in shown] == offered
    assert {b["value"] for b in shown} <= {"1"}
