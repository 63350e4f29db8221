"""The delivery writer: a child process, so intake's SQLite work and WAL checkpoints run on
another core, not under the event loop's GIL, and a checkpoint's fsync never stalls a commit.

Started by offload.py with the database's path, it reads batches on stdin and answers each, in
order, on stdout; it ends when stdin does (ghapp closed it or died), never on a signal, so a
batch it began is committed or rolled back, never cut.
"""

from __future__ import annotations

import functools
import os
import signal
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import BinaryIO, TypeVar

from ghapp.github.signature import Verdict, refusal
from ghapp.store.rows import body_sha256, pack_body
from ghapp.store.sqlite import schema

T = TypeVar("T")

COUNT = struct.Struct("!I")  # a batch's number of deliveries; a reply's length; the secret's
# Whether to check the signature, then the lengths of id, event, received_at, signature, body.
FIELDS = struct.Struct("!BHHHHI")
OK, FAILED = b"\0", b"\1"  # a reply's first byte: a Verdict per delivery follows, or an error
# id, event, received_at as stored, X-Hub-Signature-256 (None: the caller checked), body
WriteRow = tuple[str, str, str, str | None, bytes]

# The WAL is copied into the database by a thread of its own, after every CHECKPOINT_EVERY
# batches or CHECKPOINT_BYTES of bodies (pages written again in between are copied once, and
# each copy costs two fsyncs), and after CHECKPOINT_IDLE_S without one; past
# CHECKPOINT_RESTART_PAGES it waits for a full checkpoint, so the file stays bounded.
CHECKPOINT_EVERY = 8
CHECKPOINT_BYTES = 1 << 20
CHECKPOINT_IDLE_S = 0.25
CHECKPOINT_RESTART_PAGES = 2000
POLL_S = 0.0005  # how often a batch asks for the write lock while another connection holds it
# A full checkpoint holds new writers back while it waits for readers: intake waits at most
# this long for it (then the next batch tries again), not the store's busy timeout.
CHECKPOINT_WAIT_MS = 20

INSERT_DELIVERY = (
    "INSERT INTO deliveries (id, event, received_at, body_sha256) VALUES (?, ?, ?, ?) "
    "ON CONFLICT DO NOTHING"
)
INSERT_BODY = "INSERT INTO delivery_bodies (seq, body) VALUES (?, ?)"


def insert(
    rows: Sequence[WriteRow], conn: sqlite3.Connection, secret: str | None = None
) -> list[Verdict]:
    """Each delivery's small row, and its body only where the row is new (not a duplicate);
    one with a signature is written only if it matches `secret` (none: none matches)."""
    verdicts = []
    for delivery_id, event, received_at, header, body in rows:
        if header is None:
            refused = None  # the caller checked it (add_delivery)
        else:
            refused = Verdict.UNSIGNED if secret is None else refusal(secret, body, header)
        if refused is not None:
            verdicts.append(refused)
            continue
        added = conn.execute(INSERT_DELIVERY, (delivery_id, event, received_at, body_sha256(body)))
        if added.rowcount == 1:
            conn.execute(INSERT_BODY, (added.lastrowid, pack_body(body)))  # the row's seq
            verdicts.append(Verdict.NEW)
        else:
            verdicts.append(Verdict.DUPLICATE)
    return verdicts


def begin_immediate(conn: sqlite3.Connection) -> None:
    """Take the write lock, asking again every POLL_S: SQLite's own busy handler sleeps up to
    100 ms between asks, so a lock freed a moment later held every webhook of the batch for
    tens of milliseconds (up to 35 ms seen while ghapp's connection marked deliveries)."""
    deadline = time.monotonic() + schema.BUSY_TIMEOUT_MS / 1000
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
            time.sleep(POLL_S)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {schema.BUSY_TIMEOUT_MS}")


def in_transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """One BEGIN IMMEDIATE, the work, one COMMIT; nothing of failed work stays."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")
    begin_immediate(conn)
    try:
        done = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return done


def encode_row(row: WriteRow) -> bytes:
    """One delivery as the child reads it: its lengths, then its bytes. Raises (for this
    delivery alone) on text that is not UTF-8 or a field too long for its length."""
    delivery_id, event, received_at, header, body = row
    texts = (delivery_id.encode(), event.encode(), received_at.encode(), (header or "").encode())
    return FIELDS.pack(header is not None, *map(len, texts), len(body)) + b"".join(texts) + body


def encode_batch(rows: Sequence[bytes]) -> bytes:
    """Encoded deliveries as one batch: their count, then each of them."""
    return COUNT.pack(len(rows)) + b"".join(rows)


def read_batch(stream: BinaryIO) -> list[WriteRow] | None:
    """The next batch, or None at the end of the stream (a cut batch is no batch)."""
    head = stream.read(COUNT.size)
    if len(head) < COUNT.size:
        return None
    rows = []
    for _ in range(COUNT.unpack(head)[0]):
        sizes = stream.read(FIELDS.size)
        if len(sizes) < FIELDS.size:
            return None
        signed, *lengths = FIELDS.unpack(sizes)
        data = stream.read(sum(lengths))
        if len(data) < sum(lengths):
            return None
        texts, start = [], 0
        for size in lengths[:4]:  # sliced as bytes, then decoded: a field may be UTF-8
            texts.append(data[start : start + size].decode())
            start += size
        delivery_id, event, received_at, header = texts
        rows.append((delivery_id, event, received_at, header if signed else None, data[start:]))
    return rows


def encode_secret(secret: str) -> bytes:
    """The first thing the child reads: WEBHOOK_SECRET, on its pipe (not argv or environ)."""
    data = secret.encode()
    return COUNT.pack(len(data)) + data


def read_secret(stream: BinaryIO) -> str | None:
    """The secret, or None if ghapp closed the pipe first."""
    head = stream.read(COUNT.size)
    if len(head) < COUNT.size:
        return None
    (size,) = COUNT.unpack(head)
    data = stream.read(size)
    return data.decode() if len(data) == size else None


def encode_reply(verdicts: Sequence[Verdict] | None, error: str = "") -> bytes:
    """Each delivery's Verdict, or why the batch failed."""
    body = bytes(verdicts) if verdicts is not None else error.encode()
    return (OK if verdicts is not None else FAILED) + COUNT.pack(len(body)) + body


def connect(path: str) -> sqlite3.Connection:
    """A connection with the store's settings; the schema is already there (ghapp made it)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=schema.BUSY_TIMEOUT_MS / 1000)
    for pragma in schema.PRAGMAS:
        conn.execute(pragma).fetchall()
    return conn


def checkpoint_forever(path: str, wake: threading.Event) -> None:
    """Copy the WAL into the database when woken or idle; all of it once it grows long."""
    conn = connect(path)
    conn.execute(f"PRAGMA busy_timeout = {CHECKPOINT_WAIT_MS}")
    while True:
        wake.wait(CHECKPOINT_IDLE_S)
        wake.clear()
        try:
            # fetchall: a statement left open would keep its snapshot, and the WAL its length
            _, pages, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
            if pages > CHECKPOINT_RESTART_PAGES:
                conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
        except sqlite3.Error as exc:  # busy past the timeout: the next batch tries again
            print(f"delivery writer: checkpoint: {exc}", file=sys.stderr, flush=True)


def serve(path: str, stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Answer batches until stdin ends."""
    secret = read_secret(stdin)
    if secret is None:
        return
    conn = connect(path)
    # Only if the checkpointer falls far behind does a commit checkpoint (and wait) itself.
    conn.execute(f"PRAGMA wal_autocheckpoint = {4 * CHECKPOINT_RESTART_PAGES}")
    wake = threading.Event()
    threading.Thread(target=checkpoint_forever, args=(path, wake), daemon=True).start()
    batches = written = 0
    while (rows := read_batch(stdin)) is not None:
        try:
            reply = encode_reply(
                in_transaction(conn, functools.partial(insert, rows, secret=secret))
            )
        except sqlite3.Error as exc:
            reply = encode_reply(None, f"{type(exc).__name__}: {exc}")
        stdout.write(reply)
        stdout.flush()
        batches, written = batches + 1, written + sum(len(row[-1]) for row in rows)
        if batches >= CHECKPOINT_EVERY or written >= CHECKPOINT_BYTES:
            wake.set()
            batches = written = 0
    conn.close()


def main(argv: Sequence[str]) -> int:
    """Serve until ghapp closes the pipe; SIGTERM and SIGINT go to ghapp, which does that."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with os.fdopen(0, "rb", buffering=1 << 20) as stdin, os.fdopen(1, "wb") as stdout:
        serve(argv[0], stdin, stdout)
    return 0
