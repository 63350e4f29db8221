"""TaskStore contract: deliveries stored once, replays refused, claimed by one node."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from ghapp.core.ports import TaskStore
from tests.contract.support import (
    T0,
    StoreFactory,
    at,
)


class InboxContract:
    """Part of TaskStoreContract, whose docstring names the fixtures it needs."""

    async def test_redelivery_is_refused_without_change(self, store: TaskStore) -> None:
        assert await store.add_delivery("d-1", "issues", b'{"a": 1}', T0) is True
        assert await store.add_delivery("d-1", "ping", b"other", at(5)) is False
        assert await store.has_delivery("d-1") is True
        assert await store.has_delivery("d-2") is False
        [stored] = await store.pending_deliveries()
        assert (stored.id, stored.event, stored.body, stored.received_at) == (
            "d-1",
            "issues",
            b'{"a": 1}',
            T0,
        )

    async def test_concurrent_deliveries_each_stored_once(self, store: TaskStore) -> None:
        ids = [f"d-{i % 150}" for i in range(200)]  # 50 redeliveries racing their originals
        results = await asyncio.gather(
            *(store.add_delivery(d, "issues", d.encode(), T0) for d in ids)
        )
        assert sum(results) == 150
        accepted = {d for d, ok in zip(ids, results, strict=True) if ok}
        assert accepted == set(ids)
        pending = await store.pending_deliveries(limit=1000)
        assert sorted(p.id for p in pending) == sorted(accepted)
        await asyncio.gather(*(store.mark_delivery(d, at(1)) for d in accepted))
        assert await store.pending_deliveries() == []

    async def test_a_burst_keeps_the_first_of_each_id_and_refuses_replays(
        self, store: TaskStore
    ) -> None:
        assert await store.add_delivery("old", "issues", b"old body", T0) is True
        burst = [(f"d-{i}", f"body {i}".encode()) for i in range(450)]  # over several statements
        burst[10] = ("d-9", b"another body")  # a repeated id: its first row and body stand
        burst[250] = ("d-3", b"body 3")  # a redelivery far apart in the same burst
        burst[420] = ("replay", b"old body")  # a stored body under a new id
        results = await asyncio.gather(
            *(store.add_delivery(d, "issues", body, at(1)) for d, body in burst)
        )
        refused = {i for i, ok in enumerate(results) if not ok}
        assert refused == {10, 250, 420}
        stored = {d.id: d.body for d in await store.pending_deliveries(limit=1000)}
        assert len(stored) == 448 and "replay" not in stored
        assert stored["d-9"] == b"body 9" and stored["d-3"] == b"body 3"
        assert stored["d-449"] == b"body 449" and stored["old"] == b"old body"

    async def test_pending_deliveries_oldest_first_until_marked(self, store: TaskStore) -> None:
        for delivery_id, minutes in (("late", 9), ("early", 1), ("middle", 5)):
            body = b"\x00\xff" if delivery_id == "late" else delivery_id.encode()
            await store.add_delivery(delivery_id, "issues", body, at(minutes))
        assert [d.id for d in await store.pending_deliveries()] == ["early", "middle", "late"]
        assert [d.id for d in await store.pending_deliveries(limit=2)] == ["early", "middle"]
        await store.mark_delivery("middle", at(10), error="boom")
        await store.mark_delivery("early", at(11))
        [left] = await store.pending_deliveries()
        assert left.id == "late" and left.processed_at is None and left.body == b"\x00\xff"
        assert await store.has_delivery("middle") is True
        assert await store.add_delivery("middle", "issues", b"", at(12)) is False

    async def test_a_replayed_body_under_a_new_id_is_a_duplicate(self, store: TaskStore) -> None:
        body = b'{"action": "labeled", "label": {"name": "mc-auto"}}'
        assert await store.add_delivery("d-1", "issues", body, T0) is True
        await store.mark_delivery("d-1", at(1))  # handled long ago: still a duplicate
        assert await store.add_delivery("d-2", "issues", body, at(5)) is False
        assert await store.add_delivery("d-3", "ping", body, at(6)) is False
        assert await store.has_delivery("d-2") is False
        assert await store.add_delivery("d-4", "issues", body + b" ", at(7)) is True
        assert [d.id for d in await store.pending_deliveries()] == ["d-4"]

    async def test_concurrent_replays_store_each_body_once(
        self, store: TaskStore, open_store: StoreFactory
    ) -> None:
        other = await open_store()
        shots = [(f"d-{i}", f"body-{i % 50}".encode()) for i in range(200)]
        results = await asyncio.gather(
            *(
                (store, other)[i % 2].add_delivery(d, "issues", body, T0)
                for i, (d, body) in enumerate(shots)
            )
        )
        assert sum(results) == 50
        pending = await store.pending_deliveries(limit=1000)
        assert sorted(p.body for p in pending) == sorted({body for _, body in shots})
        stored = {d for (d, _), ok in zip(shots, results, strict=True) if ok}
        assert {p.id for p in pending} == stored

    async def test_prune_drops_old_processed_bodies_and_keeps_the_dedupe(
        self, store: TaskStore
    ) -> None:
        for delivery_id, minutes in (("old", 1), ("recent", 50), ("unprocessed", 2)):
            assert await store.add_delivery(
                delivery_id, "issues", delivery_id.encode(), at(minutes)
            )
        await store.mark_delivery("old", at(2))
        await store.mark_delivery("recent", at(51))
        assert await store.prune_deliveries(at(30)) == 1
        assert await store.prune_deliveries(at(30)) == 0  # once
        [left] = await store.pending_deliveries()
        assert (left.id, left.body) == ("unprocessed", b"unprocessed")  # never pruned
        assert await store.has_delivery("old")
        assert await store.add_delivery("old", "issues", b"again", at(60)) is False
        assert await store.add_delivery("replay-of-old", "issues", b"old", at(60)) is False
        assert await store.add_delivery("new", "issues", b"new", at(60)) is True

    async def test_claimed_deliveries_go_to_one_node_until_the_claim_expires(
        self, store: TaskStore, open_store: StoreFactory
    ) -> None:
        other = await open_store()
        for delivery_id, minutes in (("d1", 1), ("d2", 2), ("d3", 3)):
            await store.add_delivery(delivery_id, "issues", delivery_id.encode(), at(minutes))
        assert [d.id for d in await store.claim_deliveries("n1", at(5), 60, limit=2)] == [
            "d1",
            "d2",
        ]
        assert [d.id for d in await other.claim_deliveries("n2", at(5), 60)] == ["d3"]
        again = await other.claim_deliveries("n2", at(5), 60)  # its own again, never n1's
        assert [d.id for d in again] == ["d3"]
        await other.mark_delivery("d3", at(5))
        again = await store.claim_deliveries("n1", at(5), 60)  # a restarted n1 takes its own back
        assert [d.id for d in again] == ["d1", "d2"] and again[0].body == b"d1"
        await store.mark_delivery("d1", at(5))
        assert await other.claim_deliveries("n2", at(5) + timedelta(seconds=59), 60) == []
        late = await other.claim_deliveries("n2", at(6), 60)  # n1's claim ran out
        assert [d.id for d in late] == ["d2"]
        assert [d.id for d in await store.pending_deliveries()] == ["d2"]

    async def test_concurrent_delivery_claims_split_the_inbox(
        self, store: TaskStore, open_store: StoreFactory
    ) -> None:
        other = await open_store()
        for i in range(30):
            await store.add_delivery(f"d{i:02}", "issues", f"{i}".encode(), at(i))
        batches = await asyncio.gather(
            *(
                s.claim_deliveries(f"n{i}", at(40), 60, limit=4)
                for i, s in enumerate([store, other] * 5)
            )
        )
        got = [d.id for batch in batches for d in batch]
        assert len(got) == 30 and set(got) == {f"d{i:02}" for i in range(30)}

    async def test_a_deferred_delivery_waits_for_its_time_then_goes_to_any_node(
        self, store: TaskStore, open_store: StoreFactory
    ) -> None:
        other = await open_store()
        await store.add_delivery("d1", "issues", b"{}", at(1))
        [claimed] = await store.claim_deliveries("n1", at(2), 300)
        await store.defer_delivery(claimed.id, at(3), "GitHub 502: Bad Gateway")
        [pending] = await store.pending_deliveries()  # still unprocessed, with its last error
        assert pending.error == "GitHub 502: Bad Gateway" and pending.processed_at is None
        assert await store.claim_deliveries("n1", at(2), 300) == []  # not even its old holder
        assert await other.claim_deliveries("n2", at(3) - timedelta(seconds=1), 300) == []
        assert [d.id for d in await other.claim_deliveries("n2", at(3), 300)] == ["d1"]
        await other.mark_delivery("d1", at(4))
        await store.defer_delivery("d1", at(9), "late")  # a processed delivery stays processed
        assert await store.pending_deliveries() == []
