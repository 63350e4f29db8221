"""A whole GitHub conversation with the real CLI: label, PR, review follow-ups, merge."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ghapp.core.model import Task, TaskState
from tests.conftest import payload
from tests.fakes.anthropic import ScriptedAnthropic
from tests.fakes.sandbox import require_claude, require_sandbox_user
from tests.fakes.stack import OWNER, REPO, Stack, close_stack, eventually, make_stack


@pytest.fixture
async def stack() -> AsyncIterator[tuple[Stack, ScriptedAnthropic]]:
    user, claude = require_sandbox_user(), require_claude()
    api = ScriptedAnthropic()
    base = await api.start()
    s = await make_stack(
        worker_user=user,
        claude_bin=str(claude),
        anthropic_env={"ANTHROPIC_BASE_URL": base, "ANTHROPIC_API_KEY": "sk-ant-test-key"},
    )
    yield s, api
    await close_stack(s)
    await api.close()


async def settled(stack: Stack, number: int, count: int = 1) -> Task:
    """The newest task of an issue or PR once `count` tasks exist there and it is terminal."""
    assert stack.app is not None
    store = stack.app.store

    async def done() -> bool:
        tasks = [t for t in await store.list_tasks(limit=100) if t.issue_number == number]
        return len(tasks) >= count and all(t.state.terminal for t in tasks)

    await eventually(done, within=90)
    task = await store.latest_task_for(REPO, number)
    assert task is not None
    return task


def pr_comment(stack: Stack, number: int, body: str) -> dict[str, Any]:
    data = payload("issue_comment.created.pull_request", id=1)
    data["repository"]["full_name"] = REPO
    data["issue"]["number"] = number
    data["sender"]["login"], data["sender"]["type"] = OWNER, "User"
    data["comment"]["body"] = body
    data["comment"]["id"] = stack.github.add_comment(REPO, number, body, user=OWNER)
    return data


def review_comment(stack: Stack, number: int, body: str, path: str, line: int) -> dict[str, Any]:
    data = payload("pull_request.opened", id=1)
    data["action"] = "created"
    data["repository"]["full_name"] = REPO
    data["pull_request"]["number"] = number
    data["sender"]["login"], data["sender"]["type"] = OWNER, "User"
    cid = stack.github.add_review_comment(REPO, number, body, user=OWNER)
    data["comment"] = {"id": cid, "body": body, "path": path, "line": line}
    return data


def branch_log(stack: Stack, branch: str) -> list[str]:
    repo = stack.root / "git" / f"{REPO}.git"
    out = subprocess.run(
        ["git", "-C", str(repo), "log", "--format=%s", f"main..{branch}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split("\n")[:-1]


async def test_label_pr_review_feedback_follow_ups_and_merge(
    stack: tuple[Stack, ScriptedAnthropic],
) -> None:
    s, api = stack
    app = await s.start()
    labeled = payload("issues.labeled", id=1)
    labeled["label"]["name"] = "mc-auto"
    labeled["issue"]["body"] = "Fix the spelling. [scenario:commit]"
    assert await s.deliver("issues", labeled) == 202
    first = await settled(s, 1)
    assert first.state is TaskState.SUCCEEDED, first.failure_reason
    [pr] = [p for p in s.github.pulls.values() if p.head == first.branch]
    assert first.pr_number == pr.number and len(branch_log(s, pr.head)) == 1

    # Review feedback as a comment on the PR: a follow-up on the same branch and PR.
    feedback = pr_comment(s, pr.number, "/mc please also add notes [file:notes.txt]")
    assert await s.deliver("issue_comment", feedback) == 202
    second = await settled(s, pr.number)
    assert second.state is TaskState.SUCCEEDED, second.failure_reason
    assert second.branch == first.branch and second.pr_number == pr.number
    assert second.parent_task_id == first.id and second.is_pull_request
    assert len(branch_log(s, pr.head)) == 2

    # An inline review comment: its file and line reach the agent.
    inline = review_comment(s, pr.number, "/mc rename here [file:renamed.txt]", "app.py", 1)
    assert await s.deliver("pull_request_review_comment", inline) == 202
    third = await settled(s, pr.number, count=2)
    assert third.state is TaskState.SUCCEEDED, third.failure_reason
    assert third.review_path == "app.py" and third.review_line == 1
    assert "app.py, line 1" in api.seen()
    assert len(branch_log(s, pr.head)) == 3
    assert len(s.github.pulls) == 1  # never a second PR

    # The PR is merged on GitHub: the task records it and the tracking comment says so.
    closed = payload("pull_request.closed", id=1)
    closed["repository"]["full_name"] = REPO
    closed["pull_request"].update(number=pr.number, merged=True, merged_at="2026-11-27T12:00:00Z")
    assert await s.deliver("pull_request", closed) == 202

    async def merged() -> bool:
        task = await app.store.get_task(first.id)
        told = any("(merged)" in c.body for c in s.github.comments_on(REPO, 1))
        return task is not None and task.pr_fate == "merged" and told

    await eventually(merged)  # the fate is stored before the comment is edited

    # What GitHub saw: one tracking comment on the issue, edited through the life cycle.
    [tracking] = s.github.comments_on(REPO, 1)
    assert first.pr_url and first.pr_url in tracking.body and "(merged)" in tracking.body
    edits = [body for cid, body in s.github.comment_edits if cid == tracking.id]
    states = [line for body in edits for line in body.splitlines() if line.startswith("State:")]
    assert states == ["State: running", "State: succeeded", "State: succeeded"]
    # On the PR: the maintainer's comment plus one tracking comment per follow-up.
    on_pr = [c.body for c in s.github.comments_on(REPO, pr.number)]
    assert len(on_pr) == 3 and sum("MissionControl task #" in b for b in on_pr) == 2
    subjects = (
        f"issue:{REPO}#1",
        f"comment:{feedback['comment']['id']}",
        f"review_comment:{inline['comment']['id']}",
    )
    # a task's rocket follows its stored state, so wait for the last one
    await eventually(lambda: (subjects[-1], "rocket") in s.reactions())
    reactions = s.reactions()
    for subject in subjects:
        assert (subject, "eyes") in reactions and (subject, "rocket") in reactions
