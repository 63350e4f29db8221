"""The child process that writes deliveries: replaced when it dies, deaf to signals meant for
ghapp's group, gone with its input; and nothing it answered is lost."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ghapp.github.signature import Verdict
from ghapp.store.sqlite import SqliteTaskStore, writer
from tests.conftest import sign
from tests.contract.support import T0
from tests.fakes.ghapp_process import alive, writer_pids
from tests.fakes.stack import eventually

SECRET = "writer-secret-\u00e9"
OTHERS: set[int] = set()  # writers of stores other tests left open are not this test's


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteTaskStore]:
    OTHERS.update(writer_pids(os.getpid()))
    store = SqliteTaskStore(tmp_path / "ghapp.sqlite3", intake_secret=SECRET)
    await store.migrate()
    yield store
    await store.close()


def the_writer() -> int:
    [pid] = set(writer_pids(os.getpid())) - OTHERS
    return pid


async def stored_ids(store: SqliteTaskStore) -> list[str]:
    return sorted(d.id for d in await store.pending_deliveries(limit=10_000))


async def test_deliveries_are_written_by_a_child_process(store: SqliteTaskStore) -> None:
    writer = the_writer()
    assert await store.add_delivery("d-1", "issues", b'{"n": 1}', T0) is True
    assert await store.add_delivery("d-1", "issues", b'{"n": 1}', T0) is False
    assert await store.add_delivery("d-2", "issues", b'{"n": 1}', T0) is False  # a replay
    assert await store.add_delivery("d-é-\u4e00", "issues", b'{"n": 2}', T0) is True
    assert await stored_ids(store) == ["d-1", "d-é-\u4e00"]  # UTF-8 travels whole
    assert the_writer() == writer  # one writer, for every batch


async def test_the_writer_checks_each_signature_and_shape_and_stores_only_what_passes(
    store: SqliteTaskStore,
) -> None:
    """The event loop hashes no body: the child verifies, so a forged or misshapen delivery
    sharing a batch with good ones is refused alone; a new child gets the secret too."""
    good, other, array = b'{"n": 1}', b'{"n": 2}', b"[1]"
    verdicts = await asyncio.gather(
        store.receive("d-1", "issues", good, T0, sign(SECRET, good)),
        store.receive("d-2", "issues", other, T0, sign("not the secret", other)),
        store.receive("d-3", "issues", array, T0, sign(SECRET, array)),
        store.receive("d-4", "issues", good, T0, sign(SECRET, good)),  # a replay
        store.receive("d-5", "issues", other, T0, "sha256=" + "0" * 64),
        store.receive("d-6", "issues", other, T0, None),
        store.receive("d-7", "issues", other, T0, "sha256=\u00e9"),
    )
    assert verdicts == [
        Verdict.NEW,
        Verdict.UNSIGNED,
        Verdict.NOT_OBJECT,
        Verdict.DUPLICATE,
        Verdict.UNSIGNED,
        Verdict.UNSIGNED,
        Verdict.UNSIGNED,
    ]
    assert await stored_ids(store) == ["d-1"]
    first = the_writer()
    os.kill(first, signal.SIGKILL)
    await eventually(lambda: not alive(first), within=5)
    assert await store.receive("d-8", "issues", other, T0, sign(SECRET, other)) is Verdict.NEW
    assert await store.receive("d-9", "issues", b"{}", T0, sign("x", b"{}")) is Verdict.UNSIGNED


async def test_a_delivery_that_cannot_be_encoded_fails_alone(store: SqliteTaskStore) -> None:
    """A lone surrogate (what undecodable header bytes become) fails its own caller; the
    delivery queued beside it is stored, and nobody waits for ever."""
    async with asyncio.timeout(10):
        odd, good = await asyncio.gather(
            store.add_delivery("d-\udcff", "issues", b'{"n": 1}', T0),
            store.add_delivery("d-good", "issues", b'{"n": 2}', T0),
            return_exceptions=True,
        )
    assert isinstance(odd, UnicodeEncodeError)
    assert good is True
    assert await stored_ids(store) == ["d-good"]


async def test_a_quiet_writer_copies_its_wal_into_the_database_file(
    store: SqliteTaskStore, tmp_path: Path
) -> None:
    """Checkpoints come every few batches under load, and after a quarter second of quiet: a
    lone delivery reaches the database file itself, not only the WAL."""
    assert await store.add_delivery("d-1", "issues", b'{"n": 1}', T0)
    alone = tmp_path / "alone.sqlite3"

    def in_the_file_alone() -> bool:
        shutil.copyfile(tmp_path / "ghapp.sqlite3", alone)  # without its -wal
        conn = sqlite3.connect(alone)
        try:
            return conn.execute("SELECT id FROM deliveries").fetchall() == [("d-1",)]
        except sqlite3.OperationalError:  # not even the schema is in the file yet
            return False
        finally:
            conn.close()

    await eventually(in_the_file_alone, within=3)


async def test_a_killed_writer_is_replaced_without_a_failed_delivery(
    store: SqliteTaskStore,
) -> None:
    assert await store.add_delivery("d-1", "issues", b'{"n": 1}', T0) is True
    first = the_writer()
    os.kill(first, signal.SIGKILL)
    await eventually(lambda: not alive(first), within=5)
    assert await store.add_delivery("d-2", "issues", b'{"n": 2}', T0) is True
    assert the_writer() != first
    assert await stored_ids(store) == ["d-1", "d-2"]


async def test_a_writer_killed_mid_burst_loses_nothing_and_stores_nothing_twice(
    store: SqliteTaskStore,
) -> None:
    ids = [f"d-{i:03}" for i in range(300)]
    bodies = {d: b'{"d": "%s", "pad": "%s"}' % (d.encode(), b"x" * 20_000) for d in ids}
    burst = asyncio.gather(*(store.add_delivery(d, "issues", bodies[d], T0) for d in ids))
    await asyncio.sleep(0.05)  # batches are on their way, some committed
    os.kill(the_writer(), signal.SIGKILL)
    results = await burst
    # A batch the dead writer had committed is answered "duplicate" by its successor: stored.
    assert all(isinstance(r, bool) for r in results)
    assert await stored_ids(store) == ids
    assert [d.body for d in await store.pending_deliveries(limit=1000)] == [bodies[d] for d in ids]


async def test_the_writer_ignores_sigterm_and_ends_with_its_input(
    store: SqliteTaskStore,
) -> None:
    assert await store.add_delivery("d-1", "issues", b'{"n": 1}', T0) is True  # it is up
    writer = the_writer()
    os.kill(writer, signal.SIGTERM)  # systemd's stop signals the whole group; ghapp decides
    os.kill(writer, signal.SIGINT)  # Ctrl-C in a terminal, likewise
    assert await store.add_delivery("d-2", "issues", b'{"n": 2}', T0) is True
    assert the_writer() == writer
    await store.close()
    assert not alive(writer)


def hold_the_lock(path: str, seconds: float, held: threading.Event, freed: list[float]) -> None:
    """Another connection's write transaction (ghapp's marks, say), and when it ended."""
    conn = writer.connect(path)
    conn.execute("BEGIN IMMEDIATE")
    held.set()
    time.sleep(seconds)
    conn.execute("COMMIT")
    freed.append(time.monotonic())
    conn.close()


def test_a_batch_takes_the_write_lock_as_soon_as_another_connection_lets_go(
    tmp_path: Path,
) -> None:
    """SQLite's busy handler sleeps 1, 2, 5, 10, 15, 20, 25 ms… between asks: a lock held for
    60 ms was taken about 18 ms after it was free, and every webhook of the batch waited."""
    path = str(tmp_path / "lock.sqlite3")
    setup = writer.connect(path)
    setup.execute("CREATE TABLE t (n INTEGER)")
    setup.close()
    late = []
    for _ in range(5):
        held, freed = threading.Event(), list[float]()
        thread = threading.Thread(target=hold_the_lock, args=(path, 0.06, held, freed))
        thread.start()
        held.wait()
        batch = writer.connect(path)
        writer.in_transaction(batch, lambda conn: conn.execute("INSERT INTO t VALUES (1)"))
        late.append(time.monotonic() - freed[0])
        thread.join()
        batch.close()
    assert sorted(late)[2] < 0.008, late


async def test_a_writer_that_cannot_be_replaced_fails_its_deliveries_and_a_later_one_works(
    store: SqliteTaskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody waits for ever: a delivery nobody can store is a 500, and GitHub retries it."""
    assert await store.add_delivery("d-1", "issues", b'{"n": 1}', T0) is True
    first = the_writer()
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")  # what offload starts
    os.kill(first, signal.SIGKILL)
    await eventually(lambda: not alive(first), within=5)
    for lost in ("d-2", "d-2b"):  # the first may still go to the dead one, the next waits
        with pytest.raises(sqlite3.OperationalError, match="did not start"):
            async with asyncio.timeout(10):
                await store.add_delivery(lost, "issues", lost.encode(), T0)
    monkeypatch.undo()
    assert await store.add_delivery("d-3", "issues", b'{"n": 3}', T0) is True
    assert await stored_ids(store) == ["d-1", "d-3"]
