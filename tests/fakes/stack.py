"""A whole ghapp wired by bootstrap against the fakes: fake GitHub with git, scripted API."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from ghapp.bootstrap import build
from ghapp.config import Settings
from ghapp.core.ports import AgentOutcome, AgentRequest, Messenger, Worker
from ghapp.process import Ghapp, web_app
from ghapp.web import SERVER_OPTIONS
from tests.conftest import webhook_headers
from tests.fakes.git_http import make_bare_repo
from tests.fakes.github import FakeGitHub

SECRET = "stack-webhook-secret"
REPO = "Codertocat/Hello-World"
OWNER = "Codertocat"


def shared_tmp(prefix: str) -> Path:
    """A temp dir the sandbox user can traverse (pytest's tmp_path is 0700 to root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o711)
    return path


@dataclass
class Stack:
    """ghapp plus its far ends; tests drive it with signed deliveries."""

    github: FakeGitHub
    root: Path
    settings: Settings
    app: Ghapp | None = None
    server: TestServer | None = None
    session: aiohttp.ClientSession | None = None
    deliveries: list[str] = field(default_factory=list)
    external_url: str | None = None

    @property
    def url(self) -> str:
        if self.external_url is not None:
            return self.external_url
        assert self.server is not None
        return str(self.server.make_url(self.settings.webhook_path))

    async def start(
        self, worker: Worker | None = None, messenger: Messenger | None = None, **overrides: Any
    ) -> Ghapp:
        """Build ghapp exactly as production does, with a few test-speed settings."""
        settings = replace(self.settings, **overrides) if overrides else self.settings
        self.app = build(
            settings,
            worker=worker,
            messenger=messenger,
            poll_s=0.2,
            worker_env={"CLAUDE_CODE_MAX_RETRIES": "0"},
        )
        self.server = TestServer(web_app(self.app))
        await self.server.start_server(**SERVER_OPTIONS)
        self.session = aiohttp.ClientSession()
        return self.app

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
        if self.server is not None:
            await self.server.close()
            self.server = None

    async def deliver(
        self, event: str, payload: dict[str, Any], delivery: str | None = None
    ) -> int:
        """POST a signed delivery the way GitHub does; returns the status code."""
        if self.session is None:
            self.session = aiohttp.ClientSession()
        delivery = delivery or str(uuid.uuid4())
        self.deliveries.append(delivery)
        body = json.dumps(payload).encode()
        async with self.session.post(
            self.url, data=body, headers=webhook_headers(SECRET, event, delivery, body)
        ) as resp:
            return resp.status

    def comments(self, number: int) -> list[str]:
        return [c.body for c in self.github.comments_on(REPO, number)]

    def reactions(self) -> list[tuple[str, str]]:
        return list(self.github.reactions)


@dataclass
class CommittingWorker:
    """An in-process agent that makes one real commit at once and keeps every request."""

    requests: list[AgentRequest] = field(default_factory=list)

    async def run(self, request: AgentRequest, stop: asyncio.Event) -> AgentOutcome:
        self.requests.append(request)
        (request.cwd / f"change-{len(self.requests)}.txt").write_text("work\n")
        for argv in (["git", "add", "-A"], ["git", "commit", "-qm", "agent work"]):
            proc = await asyncio.create_subprocess_exec(*argv, cwd=request.cwd)
            assert await proc.wait() == 0
        return AgentOutcome(True, 0.01, "made a change")


@dataclass
class FileWorker:
    """An in-process agent: each run writes the next round's files and commits them."""

    rounds: list[dict[str, str]]
    requests: list[AgentRequest] = field(default_factory=list)

    async def run(self, request: AgentRequest, stop: asyncio.Event) -> AgentOutcome:
        self.requests.append(request)
        files = self.rounds[min(len(self.requests), len(self.rounds)) - 1]
        for rel, text in files.items():
            target = request.cwd / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        commit = ["git", "commit", "-qm", f"round {len(self.requests)}"]
        for argv in (["git", "add", "-A"], commit) if files else ():  # no files: no commit
            proc = await asyncio.create_subprocess_exec(*argv, cwd=request.cwd)
            assert await proc.wait() == 0
        return AgentOutcome(True, 0.01, f"round {len(self.requests)}")


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], within: float = 20.0
) -> None:
    """Wait until check() is true; fail with a clear message after timeout."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.05)


async def make_stack(
    worker_user: str | None,
    claude_bin: str = "claude",
    github_type: type[FakeGitHub] = FakeGitHub,
    **extra: Any,
) -> Stack:
    """Fake GitHub with one installed repository, and Settings pointing ghapp at it."""
    root = shared_tmp("ghapp-stack-")
    git_root = root / "git"
    git_root.mkdir()
    make_bare_repo(git_root, REPO, {"README.md": "Hello World\n", "app.py": "print('hi')\n"})
    github = github_type(git_root)
    await github.start()
    github.add_repo(REPO, installation_id=1)
    github.set_permission(REPO, OWNER, "admin")
    assert github.add_issue(REPO, "Spelling error in the README file", "[scenario:commit]") == 1
    settings = Settings(
        webhook_secret=SECRET,
        app_id=str(github.app_id),
        private_key=github.private_key_pem,
        github_api_url=github.base_url,
        data_dir=root / "data",
        worker_user=worker_user,
        claude_bin=claude_bin,
        write_interval_s=0,
        **extra,
    )
    return Stack(github, root, settings)


async def close_stack(stack: Stack) -> None:
    await stack.stop()
    await stack.github.close()
    shutil.rmtree(stack.root, ignore_errors=True)


def ghapp_env(stack: Stack, port: int, **extra: str) -> dict[str, str]:
    """The environment of a real `python -m ghapp` process pointed at the fakes."""
    s = stack.settings
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "WEBHOOK_SECRET": SECRET,
        "APP_ID": str(s.app_id),
        "PRIVATE_KEY": s.private_key or "",
        "GITHUB_API_URL": s.github_api_url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "MC_DATA_DIR": str(s.data_dir),
        "CLAUDE_BIN": s.claude_bin,
        "MC_WRITE_INTERVAL_S": "0",
        "LOG_LEVEL": "debug",
        **{k: v for k, v in s.anthropic_env.items()},
        **extra,
    }
    if s.worker_user:
        env["MC_WORKER_USER"] = s.worker_user
    return env
