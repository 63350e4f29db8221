"""Reads the usage of a Messages API response as its bytes pass, without holding them."""

from __future__ import annotations

import json
from typing import Any

MAX_EVENT = 1 << 20  # an SSE event we decode; longer ones (big deltas) are only counted
BYTES_PER_TOKEN = 3  # output estimate for a stream cut before its final usage


class UsageMeter:
    """Usage of one response: message_start, then message_delta values overwrite (cumulative)."""

    def __init__(self, model: str) -> None:
        self.usage: dict[str, Any] = {}
        self.model = model  # priced as requested: what the proxy admitted
        self.error: str | None = None
        self.final = False  # a message_delta with usage arrived
        self._buf = bytearray()
        self._skipping = False
        self._delta_bytes = 0

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of an event stream, in whatever pieces the network gives."""
        self._buf += chunk
        while True:
            end = self._boundary()
            if end is None:
                break
            event, sep = bytes(self._buf[: end[0]]), end[1]
            del self._buf[: end[0] + sep]
            if self._skipping:
                self._skipping = False
                self._delta_bytes += len(event)
                continue
            self._event(event)
        if len(self._buf) > MAX_EVENT:  # a huge event: count it, keep no copy
            self._delta_bytes += len(self._buf)
            self._buf.clear()
            self._skipping = True

    def _boundary(self) -> tuple[int, int] | None:
        """Where the first complete event ends, and the separator's length."""
        found = [(i, len(s)) for s in (b"\n\n", b"\r\n\r\n") if (i := self._buf.find(s)) >= 0]
        return min(found) if found else None

    def _event(self, raw: bytes) -> None:
        """Decode the events that carry usage; count the bytes of the rest."""
        lines = raw.replace(b"\r\n", b"\n").split(b"\n")
        name = b""
        data = b""
        for line in lines:
            if line.startswith(b"event:"):
                name = line[6:].strip()
            elif line.startswith(b"data:"):
                data += line[5:].strip()
        if name not in (b"message_start", b"message_delta", b"error"):
            self._delta_bytes += len(data)
            return
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            return
        if not isinstance(obj, dict):
            return
        if name == b"message_start":
            message = obj.get("message")
            if isinstance(message, dict):
                self.take(message)
        elif name == b"message_delta":
            usage = obj.get("usage")
            if isinstance(usage, dict):
                self.usage.update(usage)
                self.final = True
        else:
            err = obj.get("error")
            self.error = str(err.get("type")) if isinstance(err, dict) else "error"

    def take(self, message: dict[str, Any]) -> None:
        """Usage of a whole message (message_start, or a non-streamed body that is final)."""
        usage = message.get("usage")
        if isinstance(usage, dict):
            self.usage.update(usage)

    def feed_body(self, body: bytes) -> None:
        """Usage of a non-streamed JSON response."""
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError, UnicodeDecodeError):
            return
        if isinstance(obj, dict):
            self.take(obj)
            self.final = True

    def billed(self) -> dict[str, Any]:
        """What to charge: the usage seen, with output estimated if the stream broke early."""
        usage = dict(self.usage)
        if not self.final:
            estimate = self._delta_bytes // BYTES_PER_TOKEN
            seen = usage.get("output_tokens")
            usage["output_tokens"] = max(seen if isinstance(seen, int) else 0, estimate)
        return usage
