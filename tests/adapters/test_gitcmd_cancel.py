"""A git command cancelled in the same turn as its output lands is still cancelled (on 3.11
asyncio.wait_for returned the output and swallowed the cancel: a stopping runner then waited
for ever on a job that went on to start its agent)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ghapp.workspace.gitcmd import Git


def reaped_pid() -> int:
    """A pid whose process (and group) no longer exists: the fake's kill must hit nobody."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


async def test_a_git_command_cancelled_as_its_output_lands_is_cancelled(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    finished = asyncio.Event()
    dead = reaped_pid()

    class Finishing:
        pid = dead
        returncode = 0

        async def communicate(self) -> tuple[bytes, bytes]:
            await finished.wait()
            return b"", b""

        async def wait(self) -> int:
            return 0

    async def spawn(*args: Any, **kwargs: Any) -> Finishing:
        return Finishing()

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spawn)
    call = asyncio.ensure_future(Git(None).run_bytes(["status"], cwd=tmp_path))
    await asyncio.sleep(0.01)  # git runs
    finished.set()  # its output lands ...
    call.cancel()  # ... in the same turn as the runner's cancel
    with pytest.raises(asyncio.CancelledError):
        await call
