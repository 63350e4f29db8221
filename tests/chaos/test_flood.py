"""Flood: 2,000 deliveries at concurrency 100 on loopback while a task runs.

A real `python -m ghapp` runs one task (scenario `slow`: the agent sits in its first
turn) with MC_CONCURRENCY=1, so every task the flood creates stays queued. The flood is
20% redeliveries (an id ghapp already answered, sent after that answer), 10% bad
signatures, 5% malformed bodies (signed, not a JSON object), and the rest new valid
triggers (`issues.labeled` mc-auto by an admin, one distinct issue each) and events ghapp
must ignore (ping, another label, a plain comment, a bot's label). Afterwards exactly one
task per valid trigger exists, every request got its status (202 new, 200 redelivery,
401 bad signature, 400 malformed), every stored delivery was processed, and no request
waited long: p99 under 500 ms, a bound that holds on a loaded 2-core machine (measured
between 35 and 230 ms here). The 50 ms intake target is measured in bench/webhook.py.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import hashlib
import hmac
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from tests.conftest import payload, webhook_headers
from tests.fakes.anthropic import ScriptedAnthropic
from tests.fakes.ghapp_process import GhappProcess, free_port, kill_agents, read_db
from tests.fakes.sandbox import require_claude, require_sandbox_user
from tests.fakes.stack import REPO, SECRET, Stack, close_stack, eventually, ghapp_env, make_stack

pytestmark = [pytest.mark.cli, pytest.mark.sandbox]

TOTAL = 2000
CONCURRENCY = 100
SHARES = {"redelivery": 0.20, "bad_signature": 0.10, "malformed": 0.05, "trigger": 0.35}
# the rest: events ghapp stores and ignores
WANT = {"trigger": 202, "ignored": 202, "redelivery": 200, "bad_signature": 401, "malformed": 400}
P99_LIMIT_S = 0.500  # a stall, not a slow machine; the real target is in bench/webhook.py
SEED = 20261127


@dataclass
class Shot:
    """One request of the flood."""

    kind: str
    delivery: str
    event: str
    body: bytes
    headers: dict[str, str]
    original: int | None = None  # index of the delivery a redelivery repeats
    issue: int | None = None  # the issue a trigger queues
    status: int | None = None
    latency_s: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Payloads:
    """Fixture payloads, read once."""

    def __init__(self) -> None:
        self.cache: dict[str, dict[str, Any]] = {}

    def __call__(self, name: str) -> dict[str, Any]:
        if name not in self.cache:
            self.cache[name] = payload(name, id=1)
        return copy.deepcopy(self.cache[name])


def _labeled(fixtures: Payloads, number: int, label: str, bot: bool = False) -> dict[str, Any]:
    data = fixtures("issues.labeled")
    data["label"]["name"] = label
    data["issue"].update(number=number, title=f"Flood issue {number}", body="[scenario:commit]")
    if bot:
        data["sender"].update(login="dependabot[bot]", type="Bot")
    return data


def plan(stack: Stack, rng: random.Random) -> list[Shot]:
    """The 2,000 requests in sending order; triggers get freshly seeded issues."""
    fixtures = Payloads()
    counts = {kind: int(TOTAL * share) for kind, share in SHARES.items()}
    counts["ignored"] = TOTAL - sum(counts.values())
    kinds = [kind for kind, n in counts.items() for _ in range(n)]
    rng.shuffle(kinds)
    # Redeliveries repeat an answered delivery, so the first ones must be new deliveries.
    head = [k for k in kinds if k in ("trigger", "ignored")][:CONCURRENCY]
    for k in head:
        kinds.remove(k)
    kinds = head + kinds
    shots: list[Shot] = []
    originals: list[int] = []
    for i, kind in enumerate(kinds):
        delivery = f"flood-{i:04d}"
        if kind == "trigger":
            number = stack.github.add_issue(REPO, f"Flood issue {i}", "[scenario:commit]")
            data = _labeled(fixtures, number, "mc-auto")
            shots.append(_signed(kind, delivery, "issues", data, issue=number))
        elif kind == "ignored":
            choice = rng.randrange(4)
            # Every new delivery has a body of its own, as GitHub's do: one seen before
            # under a new id is a replay, answered 200 "duplicate".
            if choice == 0:
                data = fixtures("ping")
                data["hook_id"] = 1000 + i
                shots.append(_signed(kind, delivery, "ping", data))
            elif choice == 1:
                data = _labeled(fixtures, rng.randrange(1, 50), "bug")
                data["issue"]["updated_at"] = (
                    f"2026-11-27T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"
                )
                shots.append(_signed(kind, delivery, "issues", data))
            elif choice == 2:
                data = fixtures("issue_comment.created")
                data["comment"]["body"] = f"Thanks! ({i})"
                shots.append(_signed(kind, delivery, "issue_comment", data))
            else:
                data = _labeled(fixtures, 90_000 + i, "mc-auto", bot=True)
                shots.append(_signed(kind, delivery, "issues", data))
        elif kind == "redelivery":
            j = rng.choice(originals[-500:])
            first = shots[j]
            shots.append(
                Shot(kind, first.delivery, first.event, first.body, first.headers, original=j)
            )
        elif kind == "bad_signature":
            data = _labeled(fixtures, 80_000 + i, "mc-auto")
            shot = _signed(kind, delivery, "issues", data)
            how = rng.randrange(3)
            if how == 0:
                shot.headers["X-Hub-Signature-256"] = _sig("not-the-secret", shot.body)
            elif how == 1:
                del shot.headers["X-Hub-Signature-256"]
            else:  # signed right, body changed on the way
                shot.body = shot.body.replace(b"mc-auto", b"mc-AUTO")
            shots.append(shot)
        else:  # malformed, but signed with the right secret
            raw = rng.choice([b"{not json", b"\xff\xfe\x00garbage", b"", b"[1, 2, 3]", b'"x"'])
            headers = webhook_headers(SECRET, "issues", delivery, raw)
            shots.append(Shot(kind, delivery, "issues", raw, headers))
        if kind in ("trigger", "ignored"):
            originals.append(i)
    return shots


def _sig(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _signed(kind: str, delivery: str, event: str, data: dict[str, Any], **kw: Any) -> Shot:
    body = json.dumps(data).encode()
    return Shot(kind, delivery, event, body, webhook_headers(SECRET, event, delivery, body), **kw)


async def fire(url: str, shots: list[Shot]) -> float:
    """Send every shot, CONCURRENCY at a time, in order; returns the wall time."""
    queue: asyncio.Queue[Shot] = asyncio.Queue()
    for shot in shots:
        queue.put_nowait(shot)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            while not queue.empty():
                shot = queue.get_nowait()
                if shot.original is not None:
                    await shots[shot.original].done.wait()
                began = time.perf_counter()
                async with session.post(url, data=shot.body, headers=shot.headers) as resp:
                    await resp.read()
                    shot.status = resp.status
                shot.latency_s = time.perf_counter() - began
                shot.done.set()

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return time.perf_counter() - began


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


@dataclass
class Flood:
    stack: Stack
    api: ScriptedAnthropic
    ghapp: GhappProcess


@pytest.fixture
async def flood() -> AsyncIterator[Flood]:
    user, claude = require_sandbox_user(), require_claude()
    api = ScriptedAnthropic(slow_turn_s=300.0)  # the running task's agent waits in its turn
    base = await api.start()
    stack = await make_stack(
        worker_user=user,
        claude_bin=str(claude),
        anthropic_env={"ANTHROPIC_BASE_URL": base, "ANTHROPIC_API_KEY": "sk-ant-test-key"},
    )
    port = free_port()
    stack.external_url = f"http://127.0.0.1:{port}/api/github/webhooks"
    env = ghapp_env(stack, port, MC_CONCURRENCY="1", LOG_LEVEL="info")
    ghapp = GhappProcess(env, stack.root, stack.root / "ghapp.log")
    try:
        yield Flood(stack, api, ghapp)
    finally:
        await ghapp.stop()
        kill_agents(stack.settings.data_dir)
        if stack.session is not None:
            await stack.session.close()
            stack.session = None
        await api.close()
        await close_stack(stack)


async def test_flood_of_deliveries_while_a_task_runs(flood: Flood) -> None:
    stack, ghapp = flood.stack, flood.ghapp
    db = stack.settings.sqlite_path
    rng = random.Random(SEED)
    shots = plan(stack, rng)
    await ghapp.start()

    # One task runs: its agent is inside a (slow) turn at the scripted API.
    data = payload("issues.labeled", id=1)
    data["label"]["name"] = "mc-auto"
    data["issue"]["body"] = "Fix the typo. [scenario:slow]"
    assert await stack.deliver("issues", data, "flood-running") == 202
    await eventually(lambda: any(r.get("tools") for r in flood.api.requests), within=60)

    # The load generator is this process: keep its own GC pauses out of the latencies.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        wall = await fire(stack.url, shots)
    finally:
        gc.enable()
        gc.unfreeze()

    latencies = [s.latency_s for s in shots]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    kinds = Counter(s.kind for s in shots)
    print(
        f"\nflood: {len(shots)} requests at concurrency {CONCURRENCY} in {wall:.2f} s "
        f"({len(shots) / wall:.0f}/s): p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms; {dict(kinds)}"
    )

    # Every request got its status code.
    wrong = [(s.kind, s.delivery, s.status) for s in shots if s.status != WANT[s.kind]]
    assert not wrong, f"{len(wrong)} wrong statuses, e.g. {wrong[:10]}"

    # Every new delivery is stored and gets processed; nothing else is stored.
    new = {s.delivery for s in shots if s.kind in ("trigger", "ignored")} | {"flood-running"}

    def processed() -> bool:
        rows = read_db(db, "SELECT COUNT(*) FROM deliveries WHERE processed_at IS NULL")
        return int(rows[0][0]) == 0

    began = time.perf_counter()
    await eventually(processed, within=45)
    drained = time.perf_counter() - began
    stored = read_db(db, "SELECT id, error FROM deliveries")
    assert {r["id"] for r in stored} == new
    assert not [r["id"] for r in stored if r["error"]], "deliveries processed with errors"

    # Exactly one task per valid trigger (plus the running one), each from its delivery.
    tasks = read_db(db, "SELECT * FROM tasks ORDER BY id")
    triggers = {s.delivery: s.issue for s in shots if s.kind == "trigger"}
    assert len(tasks) == len(triggers) + 1
    by_delivery = {t["delivery_id"]: t for t in tasks}
    assert set(by_delivery) == set(triggers) | {"flood-running"}
    for delivery, issue in triggers.items():
        assert by_delivery[delivery]["issue_number"] == issue
        assert by_delivery[delivery]["state"] == "queued"
    running = by_delivery["flood-running"]
    assert running["state"] == "running" and running["issue_number"] == 1
    assert (await ghapp.health()).get("ok") is True
    print(
        f"flood: {len(triggers)} tasks queued behind the running one, {len(new)} deliveries "
        f"stored, inbox drained {drained:.1f} s after the flood"
    )
    assert p99 < P99_LIMIT_S, f"p99 {p99 * 1000:.1f} ms >= {P99_LIMIT_S * 1000:.0f} ms"
