"""The task log: every stream line as it arrives, private to ghapp, capped with its tail kept."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)
DEFAULT_MAX_BYTES = 50 << 20


class TaskLog:
    """Append-only lines; past the cap, the oldest half goes (whole lines), the newest stays."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max(max_bytes, 1 << 16)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._fh = os.fdopen(fd, "ab")
        self._size = self._fh.seek(0, os.SEEK_END)
        self.failed = False

    def write(self, line: bytes) -> None:
        """Add one line; a full disk is logged once and never stalls the agent's pipe."""
        try:
            self._fh.write(line + b"\n")
            self._fh.flush()
            self._size += len(line) + 1
            if self._size > self.max_bytes:
                self._keep_tail()
        except OSError as exc:
            if not self.failed:
                log.warning("task log %s: write failed: %s", self.path, exc)
            self.failed = True

    def _keep_tail(self) -> None:
        """Rewrite the file with its newest half, starting at a line boundary."""
        keep = self.max_bytes // 2
        with self.path.open("rb") as src:
            src.seek(max(self._size - keep, 0))
            data = src.read()
        cut = data.find(b"\n")
        data = data[cut + 1 :] if cut >= 0 else b""
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, self.path)
        self._fh.close()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._fh = os.fdopen(fd, "ab")
        self._size = len(data)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> TaskLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
