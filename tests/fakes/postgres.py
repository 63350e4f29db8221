"""A throwaway PostgreSQL server for tests and benchmarks: initdb + pg_ctl on a loopback port.

One server per Python process, started on first use in a temp directory (as the
``postgres`` OS user when running as root, since PostgreSQL refuses root) and stopped at
exit. Each test gets its own database or schema on it. Tests skip on a developer machine
without PostgreSQL's binaries and fail under CI=true (tests/run.sh installs them).
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.fakes.ghapp_process import free_port
from tests.fakes.sandbox import _unavailable

_SERVER: PgServer | None = None
_FAILED: str | None = None


def _bin_dir() -> Path | None:
    """Newest Debian PostgreSQL binaries (/usr/lib/postgresql/N/bin), or PATH's."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class PgServer:
    """A running cluster that only listens on 127.0.0.1; trust auth, superuser `postgres`."""

    root: Path
    bin_dir: Path
    port: int
    run_as: str | None

    @classmethod
    def start(cls, *, durable: bool = False) -> PgServer:
        """initdb and start; `durable` keeps fsync on (benchmarks), tests turn it off."""
        bin_dir = _bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl) not found")
        run_as = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root needs the postgres OS user") from None
            run_as = "postgres"
        root = Path(tempfile.mkdtemp(prefix="ghapp-pg-"))
        os.chmod(root, 0o700)
        if run_as is not None:
            shutil.chown(root, run_as, run_as)
        server = cls(root, bin_dir, free_port(), run_as)
        try:
            server._run(
                "initdb",
                "-D",
                str(root / "data"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            )
            options = [f"-h 127.0.0.1 -p {server.port} -k {root}", "-c max_connections=200"]
            if not durable:
                options.append("-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            server._run(
                "pg_ctl",
                "-D",
                str(root / "data"),
                "-l",
                str(root / "log"),
                "-w",
                "-t",
                "60",
                "-o",
                " ".join(options),
                "start",
            )
        except BaseException:
            server.stop()
            raise
        server._watch(os.getpid())
        return server

    def _watch(self, owner: int) -> None:
        """A detached watcher stops the cluster once `owner` is gone, however it ended
        (atexit never runs when a hung test run is killed)."""
        stop = self._argv("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        script = (
            f"while kill -0 {owner} 2>/dev/null; do sleep 1; done; "
            f"{shlex.join(stop)} >/dev/null 2>&1; rm -rf {shlex.quote(str(self.root))}"
        )
        subprocess.Popen(
            ["sh", "-c", script],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _argv(self, tool: str, *args: str) -> list[str]:
        """A PostgreSQL tool's command line, run as the cluster's owner."""
        argv = [str(self.bin_dir / tool), *args]
        return ["runuser", "-u", self.run_as, "--", *argv] if self.run_as is not None else argv

    def _run(self, tool: str, *args: str) -> str:
        """A PostgreSQL tool as the cluster's owner; its output in the error if it fails."""
        done = subprocess.run(
            self._argv(tool, *args), capture_output=True, text=True, cwd=self.root, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr or done.stdout}")
        return done.stdout

    def stop(self) -> None:
        """Stop at once and remove every file of the cluster."""
        if (self.root / "data" / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
            except RuntimeError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, database: str = "postgres", **settings: str) -> str:
        """Connection URL; extra settings (search_path=...) become server settings."""
        query = "&".join(f"{k}={v}" for k, v in settings.items())
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}" + (
            f"?{query}" if query else ""
        )

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL with psql over loopback; returns its unaligned output."""
        argv = [
            str(self.bin_dir / "psql"),
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-c",
            sql,
        ]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr}")
        return done.stdout.strip()

    def create_database(self, prefix: str = "t") -> str:
        """A fresh empty database; returns its name."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.psql(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still on it."""
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def require_postgres() -> PgServer:
    """The process's shared test server, started on first use; skip or fail without one."""
    global _SERVER, _FAILED
    if _SERVER is None and _FAILED is None:
        try:
            _SERVER = PgServer.start()
        except (RuntimeError, OSError) as exc:
            _FAILED = str(exc)
        else:
            atexit.register(_SERVER.stop)
    if _SERVER is None:
        _unavailable(f"PostgreSQL is not available: {_FAILED}")
    assert _SERVER is not None
    return _SERVER
