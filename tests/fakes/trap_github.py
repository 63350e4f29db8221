"""FakeGitHub with traps: run an action (kill ghapp) the moment a matching request arrives.

A trap fires once, either ``before`` the fake handles the request (GitHub never saw it:
the fake answers 503 to a client that is dead by then) or ``after`` (GitHub did it, the
client never heard). Git smart-HTTP requests go through the same middleware, so a trap
on ``POST .../git-receive-pack`` phase ``after`` fires once the push has landed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from tests.fakes.github import FakeGitHub, Handler
from tests.fakes.stack import REPO, Stack, make_stack

Phase = Literal["before", "after"]


@dataclass
class Trap:
    """One armed trap; ``hit`` is set when it fired, ``done`` once its action has ended."""

    name: str
    method: str
    path: re.Pattern[str]
    phase: Phase
    action: Callable[[], Awaitable[None]]
    hit: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    request_path: str = ""

    def matches(self, request: web.Request, phase: Phase) -> bool:
        return (
            not self.hit.is_set()
            and phase == self.phase
            and request.method == self.method
            and self.path.fullmatch(request.path) is not None
        )


class TrapGitHub(FakeGitHub):
    """FakeGitHub whose requests can trip one-shot traps."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.traps: list[Trap] = []

    def arm(
        self,
        name: str,
        method: str,
        path: str,
        phase: Phase,
        action: Callable[[], Awaitable[None]],
    ) -> Trap:
        """Arm a trap on METHOD and a path regex (full match on the request path)."""
        trap = Trap(name, method, re.compile(path), phase, action)
        self.traps.append(trap)
        return trap

    def disarm(self, trap: Trap) -> None:
        if trap in self.traps:
            self.traps.remove(trap)

    def _spring(self, request: web.Request, phase: Phase) -> Trap | None:
        for trap in self.traps:
            if trap.matches(request, phase):
                trap.hit.set()  # before awaiting anything: a concurrent request cannot re-fire
                trap.request_path = request.path
                self.traps.remove(trap)
                return trap
        return None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        trap = self._spring(request, "before")
        if trap is not None:
            await self._fire(trap)
            return web.Response(status=503, text="trapped before handling\n")
        response = await super()._middleware(request, handler)
        trap = self._spring(request, "after")
        if trap is not None:
            await self._fire(trap)
        return response

    @staticmethod
    async def _fire(trap: Trap) -> None:
        try:
            await trap.action()
        finally:
            trap.done.set()


async def make_trap_stack(worker_user: str | None, claude_bin: str, **extra: Any) -> Stack:
    """make_stack() with a TrapGitHub: one installed repo, issue #1 seeded, admin owner."""
    return await make_stack(worker_user, claude_bin, github_type=TrapGitHub, **extra)


def bare_repo(stack: Stack) -> Path:
    """The fake's bare repository of REPO."""
    return stack.root / "git" / f"{REPO}.git"
