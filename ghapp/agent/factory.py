"""Builds the agent adapter from Settings: the CLI, its sandbox, limits, proxies and prices."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from ghapp.agent import cgroup
from ghapp.agent.checks import SandboxChecks
from ghapp.agent.claude import ClaudeWorker, SandboxConfig, agent_identity
from ghapp.agent.egress import AllowList
from ghapp.agent.prices import load_prices
from ghapp.agent.sandbox import AgentLimits, find_bwrap, probe
from ghapp.config import ConfigError, Settings
from ghapp.core.model import STORED_LOG_CHARS
from ghapp.core.ports import Clock, TaskStore, Worker

log = logging.getLogger(__name__)


def sandboxing(settings: Settings, uid: int | None, gid: int | None) -> SandboxConfig:
    """MC_SANDBOX and the limits; refuses to start when bwrap cannot run and none was not asked."""
    limits = AgentLimits(
        max_procs=settings.agent_max_procs,
        max_files=settings.agent_max_files,
        max_file_mb=settings.agent_disk_mb,
        memory_mb=settings.agent_memory_mb,
        disk_mb=settings.agent_disk_mb,
    )
    allow = AllowList.parse(settings.agent_allow_hosts)
    if settings.sandbox == "none":
        log.warning(
            "MC_SANDBOX=none: the agent runs WITHOUT a sandbox (it can reach the network and "
            "every file its user can). Development only."
        )
        return SandboxConfig(None, limits, allow)
    bwrap = find_bwrap()
    why = "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    if bwrap is not None:
        why = probe(bwrap, uid, gid) or ""
    if why:
        raise ConfigError(
            f"MC_SANDBOX: cannot start a sandbox: {why}; fix it, or set MC_SANDBOX=none "
            "(development only)"
        )
    return SandboxConfig(bwrap, limits, allow, memory_cgroups=cgroup.unavailable() is None)


def agent_instance(data_dir: Path) -> str:
    """The tag RUN_MARKER carries for one data directory, so a restart finds its own leftovers."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]


def claude_worker(
    settings: Settings, store: TaskStore, clock: Clock, extra_env: dict[str, str] | None
) -> ClaudeWorker:
    """The real agent: the CLI in a per-attempt sandbox, metered by ghapp's proxy."""
    if settings.worker_user is None:
        log.warning(
            "MC_WORKER_USER is not set: the agent runs as the service user. "
            "Development only; set MC_WORKER_USER in production."
        )

    async def book(task_id: int, attempt: int, cost: float) -> None:
        await store.add_spend(task_id, attempt, clock.now(), cost)

    async def ship_log(task_id: int, attempt: int, text: str) -> None:
        await store.append_task_log(task_id, attempt, text, STORED_LOG_CHARS)

    identity = agent_identity(settings.worker_user)
    return ClaudeWorker(
        settings.claude_bin,
        run_as=settings.worker_user,
        model=settings.model,
        anthropic_env=settings.anthropic_env,
        prices=load_prices(settings.prices_path),
        book=book,
        ship_log=ship_log,
        sandboxing=sandboxing(settings, identity.uid, identity.gid),
        extra_env=extra_env,
        repo_settings=settings.repo_agent_settings,
        max_turns=settings.max_turns,
        log_max_bytes=settings.log_max_mb << 20,
        instance=agent_instance(settings.data_dir),
    )


def sandbox_checks(settings: Settings, worker: Worker) -> SandboxChecks:
    """Setup and verify commands in the agent's sandbox, as the agent's user."""
    if isinstance(worker, ClaudeWorker):
        identity, confinement = worker.identity, worker.sandboxing
    else:  # a test's in-process agent: the same confinement as production would use
        identity = agent_identity(settings.worker_user)
        confinement = sandboxing(settings, identity.uid, identity.gid)
    return SandboxChecks(identity, confinement, instance=agent_instance(settings.data_dir))
