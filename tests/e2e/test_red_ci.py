"""Red CI on ghapp's pull requests: fake check_suite / check_run deliveries, the check-runs
and job-log endpoints, and the follow-up they may queue (one per head, a cap per PR)."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ghapp.core.model import Task, TaskSource
from tests.conftest import payload
from tests.fakes.git_http import push_files
from tests.fakes.stack import (
    OWNER,
    REPO,
    FileWorker,
    Stack,
    close_stack,
    eventually,
    make_stack,
)

LOG = "\n".join(f"step {i}" for i in range(500)) + "\nE   AssertionError: 1 != 2\n##[error]exit 1"


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    s = await make_stack(worker_user=None)
    yield s
    await close_stack(s)


async def idle(stack: Stack) -> None:
    """Every delivery handled and no task queued or running."""
    assert stack.app is not None
    app = stack.app

    async def quiet() -> bool:
        if await app.store.pending_deliveries():
            return False
        return await app.store.active_task_for(REPO, pr_number(stack)) is None and (
            await app.store.active_task_for(REPO, 1) is None
        )

    await eventually(quiet, within=60)


def pr_number(stack: Stack) -> int:
    return next(iter(stack.github.pulls.values())).number if stack.github.pulls else 0


def head(stack: Stack) -> str:
    pr = next(iter(stack.github.pulls.values()))
    bare = stack.root / "git" / f"{REPO}.git"
    out = subprocess.run(
        ["git", "-C", str(bare), "rev-parse", f"refs/heads/{pr.head}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


async def opened_pr(stack: Stack, worker: FileWorker, **settings: Any) -> None:
    """Label issue #1 and wait for ghapp's pull request."""
    await stack.start(worker=worker, **settings)
    data = payload("issues.labeled", id=1)
    data["label"]["name"] = "mc-auto"
    assert await stack.deliver("issues", data) == 202
    await eventually(lambda: bool(stack.github.pulls), within=60)
    await idle(stack)


async def red(stack: Stack, event: str = "check_run", sha: str | None = None) -> None:
    """CI fails on the PR's head (or `sha`) and GitHub tells ghapp; wait until it is handled."""
    sha = sha or head(stack)
    if not stack.github.check_runs.get((REPO, sha)):
        stack.github.add_check_run(REPO, sha, "lint", "success")
        stack.github.add_check_run(REPO, sha, "tests", "failure", summary="1 failed", log=LOG)
    pr = next(iter(stack.github.pulls.values()))
    body = stack.github.check_event(event, REPO, sha, pr.head, pr.number)
    assert await stack.deliver(event, body) == 202
    await idle(stack)


async def ci_tasks(stack: Stack) -> list[Task]:
    assert stack.app is not None
    tasks = await stack.app.store.list_tasks(limit=100)
    return [t for t in tasks if t.source is TaskSource.CI]


async def test_one_follow_up_per_red_head_with_the_failing_output(stack: Stack) -> None:
    worker = FileWorker([{"app.py": "v1\n"}, {}])  # the follow-up commits nothing
    await opened_pr(stack, worker)
    first = head(stack)
    await red(stack, "check_run")
    [task] = await ci_tasks(stack)
    assert task.is_pull_request and task.issue_number == pr_number(stack)
    assert task.requester == OWNER  # who asked for the PR; its spend is on their behalf
    assert f"CI failed on head {first}" in task.instructions
    prompt = worker.requests[1].prompt
    assert "CI failed on this pull request" in prompt
    assert "## tests: failure" in prompt and "1 failed" in prompt
    assert "E   AssertionError: 1 != 2" in prompt and "step 499" in prompt
    assert "step 250" not in prompt  # only the log's tail
    assert "lint" not in prompt.split("output of the failing checks")[1].split("Rules:")[0]
    # the same head again (a check_suite event, a redelivery): nothing new
    await red(stack, "check_suite")
    await red(stack, "check_run")
    assert len(await ci_tasks(stack)) == 1


async def test_checks_still_running_wait_and_a_green_head_does_nothing(stack: Stack) -> None:
    await opened_pr(stack, FileWorker([{"app.py": "v1\n"}]))
    sha = head(stack)
    stack.github.add_check_run(REPO, sha, "tests", "failure", log=LOG)
    stack.github.add_check_run(REPO, sha, "slow", None, status="in_progress")
    await red(stack, sha=sha)
    assert await ci_tasks(stack) == []
    stack.github.check_runs[(REPO, sha)] = []
    stack.github.add_check_run(REPO, sha, "tests", "success")
    stack.github.add_check_run(REPO, sha, "deploy", "cancelled")  # not the code's fault
    await red(stack, sha=sha)
    assert await ci_tasks(stack) == []


async def test_no_follow_up_after_a_human_pushed(stack: Stack) -> None:
    await opened_pr(stack, FileWorker([{"app.py": "v1\n"}]))
    branch = next(iter(stack.github.pulls.values())).head
    push_files(stack.root / "git", REPO, {"app.py": "a person's fix\n"}, branch=branch)
    await red(stack)
    assert await ci_tasks(stack) == []


async def test_autofix_off_on_the_pr_stops_it(stack: Stack) -> None:
    await opened_pr(stack, FileWorker([{"app.py": "v1\n"}, {"app.py": "v2\n"}]))
    number = pr_number(stack)
    for text in ("/mc autofix off",):
        data = payload("issue_comment.created.pull_request", id=1)
        data["issue"]["number"] = number
        data["comment"]["body"] = text
        data["comment"]["id"] = stack.github.add_comment(REPO, number, text, user=OWNER)
        data["sender"] = {"login": OWNER, "type": "User"}
        data["repository"]["full_name"] = REPO
        assert await stack.deliver("issue_comment", data) == 202
    await idle(stack)
    assert any("Autofix is off" in c for c in stack.comments(number))
    await red(stack)
    assert await ci_tasks(stack) == []
    stack.github.add_comment(REPO, number, "/mc autofix on", user=OWNER)
    await red(stack, "check_suite")
    assert len(await ci_tasks(stack)) == 1


async def test_no_more_than_the_cap_per_pr(stack: Stack) -> None:
    rounds: list[dict[str, str]] = [{"app.py": f"v{i}\n"} for i in range(5)]
    await opened_pr(stack, FileWorker(rounds), ci_fix_max=1)
    await red(stack)
    assert len(await ci_tasks(stack)) == 1
    await red(stack)  # the follow-up's new head is red too
    assert len(await ci_tasks(stack)) == 1


async def test_ci_fix_false_in_the_settings_stops_it(stack: Stack) -> None:
    push_files(stack.root / "git", REPO, {".github/ghapp.yml": "version: 1\nci_fix: false\n"})
    await opened_pr(stack, FileWorker([{"app.py": "v1\n"}]))
    await red(stack)
    assert await ci_tasks(stack) == []
