"""The README's run command, exactly as written, on Debian's own Python (pip refuses to
install into it: PEP 668, "externally managed"), in a fresh copy of the source tree.

pip works offline here: tests/run.sh fills a wheelhouse with ghapp's dependencies, and
the test points pip at it and at nothing else, so no traffic leaves the machine.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from pathlib import Path

import aiohttp

from tests.fakes.ghapp_process import free_port
from tests.fakes.sandbox import _unavailable

ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = ROOT / ".venv" / "wheelhouse"
SYSTEM_PYTHON = Path("/usr/bin/python3")


def readme_run_command() -> str:
    """The one line under "Set-up: two commands" that installs and runs ghapp."""
    section = (ROOT / "README.md").read_text().split("## Set-up: two commands", 1)[1]
    return section.split("```sh\n", 1)[1].split("\n", 1)[0]


def externally_managed() -> bool:
    """Whether /usr/bin/python3 is a distribution's Python that pip refuses to change."""
    if not SYSTEM_PYTHON.exists():
        return False
    found = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
        capture_output=True,
        text=True,
    )
    return (Path(found.stdout.strip()) / "EXTERNALLY-MANAGED").exists()


def copy_sources(target: Path) -> None:
    """The files git tracks, as a fresh clone would have them."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


async def test_the_readme_run_command_works_on_a_stock_debian_python(tmp_path: Path) -> None:
    if not externally_managed():
        _unavailable("/usr/bin/python3 is not an externally managed (Debian/Ubuntu) Python")
    if not any(WHEELHOUSE.glob("aiohttp-*.whl")):
        _unavailable(f"no wheelhouse at {WHEELHOUSE} (tests/run.sh fills it)")
    command = readme_run_command()
    assert command.count("\n") == 0 and "ghapp" in command
    source = tmp_path / "ghapp"
    copy_sources(source)
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",  # python3 is Debian's, as on a fresh machine
        "HOME": str(tmp_path / "home"),
        "LANG": "C.UTF-8",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(WHEELHOUSE),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            "sh",
            "-c",
            command,
            cwd=source,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        for _ in range(3000):  # installing takes a while; serving is the proof
            if "setup mode: APP_ID is not set" in log.read_text(errors="replace"):
                break
            assert proc.returncode is None, log.read_text(errors="replace")[-3000:]
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("ghapp did not start:\n" + log.read_text()[-3000:])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/") as response:
                assert response.status == 403  # the set-up page, asking for the logged link
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
    assert (source / ".venv" / "bin" / "python").exists()
