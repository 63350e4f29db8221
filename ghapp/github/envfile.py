"""Private files written by setup: .env updated in place and the app's private key, both 0600."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

_KEY = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")
_PLAIN = re.compile(r"[A-Za-z0-9_./:@+,=-]*")


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with a file only its owner can read."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)  # O_CREAT's mode is only used for a new file
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _quoted(value: str) -> str:
    """A value read_dotenv gives back unchanged."""
    if _PLAIN.fullmatch(value):
        return value
    if '"' in value or "\n" in value:
        raise ValueError("a .env value may not contain double quotes or newlines")
    return f'"{value}"'


def update_dotenv(path: Path, values: Mapping[str, str], drop: Iterable[str] = ()) -> None:
    """Set `values` in the .env at `path`, keep every other line, comment out `drop` keys."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    pending = dict(values)
    dropped = set(drop) - set(values)
    out: list[str] = []
    for line in lines:
        match = _KEY.match(line)
        key = match.group(1) if match else None
        if key in pending:
            out.append(f"{key}={_quoted(pending.pop(key))}")
        elif key in values:
            continue  # a duplicate of a key already replaced above
        elif key in dropped:
            out.append(f"# {line}  # replaced by ghapp setup")
        else:
            out.append(line)
    if pending:
        if out and out[-1].strip():
            out.append("")
        out.append("# Written by ghapp setup (GitHub App manifest flow)")
        out.extend(f"{key}={_quoted(value)}" for key, value in pending.items())
    write_private(path, "\n".join(out) + "\n")


def save_private_key(directory: Path, app_id: int, pem: str) -> Path:
    """Write the app's key as private-key.pem, or private-key-<id>.pem if another key is there."""
    path = directory / "private-key.pem"
    if path.exists() and path.read_text(encoding="utf-8").strip() != pem.strip():
        path = directory / f"private-key-{app_id}.pem"
    write_private(path, pem if pem.endswith("\n") else pem + "\n")
    return path
