"""The whole app against fake GitHub and real git: `.github/ghapp.yml` on the base branch
decides the gate, verify runs in the sandbox, and the PR says what the checks said."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ghapp.core.model import Task
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

GATE = """\
version: 1
verify:
  - grep -q fixed app.py
on_red: {on_red}
verify_retries: 1
"""


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    s = await make_stack(worker_user=None)
    yield s
    await close_stack(s)


def labeled() -> dict[str, Any]:
    data = payload("issues.labeled", id=1)
    data["label"]["name"] = "mc-auto"
    return data


def maintainer_commits(stack: Stack, files: dict[str, str]) -> str:
    return push_files(stack.root / "git", REPO, files)


async def finished(stack: Stack) -> Task:
    assert stack.app is not None
    store = stack.app.store

    async def done() -> bool:
        task = await store.latest_task_for(REPO, 1)
        return task is not None and task.state.terminal

    await eventually(done, within=60)
    task = await store.latest_task_for(REPO, 1)
    assert task is not None
    return task


def branches(stack: Stack) -> str:
    bare = stack.root / "git" / f"{REPO}.git"
    return subprocess.run(
        ["git", "-C", str(bare), "branch", "--list"], capture_output=True, text=True, check=True
    ).stdout


async def test_red_then_fixed_opens_a_ready_pr_with_the_checks(stack: Stack) -> None:
    maintainer_commits(stack, {".github/ghapp.yml": GATE.format(on_red="fix")})
    worker = FileWorker([{"app.py": "broken\n"}, {"app.py": "fixed\n"}])
    await stack.start(worker=worker)
    assert await stack.deliver("issues", labeled()) == 202
    task = await finished(stack)
    assert task.state.value == "succeeded", task.failure_reason
    assert len(worker.requests) == 2
    assert "grep -q fixed app.py" in worker.requests[1].prompt  # the failure, fenced
    [pr] = stack.github.pulls.values()
    assert not pr.draft
    assert "### Checks" in pr.body and "✅ `grep -q fixed app.py`: passed" in pr.body
    assert "Verified 2 times" in pr.body
    tracking = [b for _, b in stack.github.comment_edits]
    assert any("Checks: running verify" in b for b in tracking)
    assert any("the agent is fixing it" in b for b in tracking)


async def test_the_agent_cannot_loosen_its_own_gate(stack: Stack) -> None:
    maintainer_commits(stack, {".github/ghapp.yml": GATE.format(on_red="draft")})
    loosened = "version: 1\nverify: ['true']\n"
    worker = FileWorker([{"app.py": "broken\n", ".github/ghapp.yml": loosened}])
    await stack.start(worker=worker)
    assert await stack.deliver("issues", labeled()) == 202
    task = await finished(stack)
    [pr] = stack.github.pulls.values()
    assert task.state.value == "succeeded" and pr.draft and len(worker.requests) == 1
    assert "❌ `grep -q fixed app.py`: failed" in pr.body  # the base branch's gate ran
    assert "`true`" not in pr.body.split("### Checks")[1].split("###")[0]
    assert "### Protected paths" in pr.body and "- `.github/ghapp.yml`" in pr.body


async def test_an_unknown_key_refuses_the_task_before_the_agent(stack: Stack) -> None:
    maintainer_commits(stack, {".github/ghapp.yml": "version: 1\nverfy:\n  - make test\n"})
    worker = FileWorker([{"app.py": "x\n"}])
    app = await stack.start(worker=worker)
    assert await stack.deliver("issues", labeled()) == 202
    task = await finished(stack)
    assert task.state.value == "failed" and worker.requests == [] and task.cost_usd == 0
    assert task.failure_reason is not None
    assert task.failure_reason.startswith(".github/ghapp.yml:2: verfy: unknown key")
    await eventually(lambda: "State: failed" in stack.comments(1)[0])  # written after the store
    [tracking] = stack.comments(1)
    assert ".github/ghapp.yml:2: verfy: unknown key; the keys are version" in tracking
    assert stack.github.pulls == {} and "mc/" not in branches(stack)
    assert (await app.store.get_task(task.id)) is not None


async def test_a_workflow_change_is_never_pushed(stack: Stack) -> None:
    stack.github.push_rules.workflows = True  # GitHub would take it: only ghapp refuses
    worker = FileWorker([{"app.py": "x\n", ".github/workflows/ci.yml": "on: push\n"}])
    await stack.start(worker=worker)
    assert await stack.deliver("issues", labeled()) == 202
    task = await finished(stack)
    assert task.state.value == "failed"
    assert "`.github/workflows/ci.yml`" in (task.failure_reason or "")
    assert "mc/" not in branches(stack) and stack.github.pulls == {}


async def test_a_refused_draft_is_opened_ready_and_says_so(stack: Stack) -> None:
    maintainer_commits(stack, {".github/ghapp.yml": GATE.format(on_red="draft")})
    stack.github.drafts_supported = False
    await stack.start(worker=FileWorker([{"app.py": "broken\n"}]))
    assert await stack.deliver("issues", labeled()) == 202
    task = await finished(stack)
    [pr] = stack.github.pulls.values()
    assert task.state.value == "succeeded" and not pr.draft
    assert "does not allow draft pull requests" in pr.body and "❌" in pr.body


async def test_config_command_shows_the_base_branch_settings(stack: Stack) -> None:
    maintainer_commits(stack, {".github/ghapp.yml": GATE.format(on_red="block")})
    await stack.start(worker=FileWorker([{}]))
    data = payload("issue_comment.created.with-installation")
    data["comment"]["body"] = "/mc config"
    data["comment"]["id"] = stack.github.add_comment(REPO, 1, "/mc config", user=OWNER)
    data["sender"]["login"] = OWNER
    assert await stack.deliver("issue_comment", data) == 202

    def answered() -> bool:
        return any("Effective MissionControl settings" in b for b in stack.comments(1))

    await eventually(answered, within=30)
    [reply] = [b for b in stack.comments(1) if "Effective" in b]
    assert "`grep -q fixed app.py`" in reply and "block" in reply
