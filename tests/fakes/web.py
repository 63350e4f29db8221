"""The web layer's dependencies for a test server: health from a real store, no background
parts, and intake checked where ghapp would check it for that store."""

from __future__ import annotations

from typing import Any

from ghapp.core.model import TaskState
from ghapp.store.sqlite import SqliteTaskStore
from ghapp.web import WebDeps


def web_deps(store: SqliteTaskStore, secret: str, path: str, woken: list[int]) -> WebDeps:
    """WebDeps over `store`; each stored delivery appends to `woken`. A store with a writer
    process checks and writes webhooks there (`store.receive`), as bootstrap wires it."""

    async def health() -> dict[str, Any]:
        return {"ok": await store.ping(), "queued": await store.count(TaskState.QUEUED)}

    async def nothing() -> None:
        return None

    receive = store.receive if store.has_writer else None
    return WebDeps(
        store, secret, path, lambda: woken.append(1), health, nothing, nothing, receive=receive
    )
