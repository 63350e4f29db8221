"""Typed ports the core talks through; adapters implement them, bootstrap wires them."""

from ghapp.core.ports.agent import AgentOutcome, AgentRequest, LogReader, StopReason, Worker
from ghapp.core.ports.forge import CiForge, Forge, InstallationAccess, RepoAdmin
from ghapp.core.ports.messaging import Messenger, Notice, NoticeKind
from ghapp.core.ports.store import Clock, TaskStore
from ghapp.core.ports.workspace import Checks, SettingsSource, Vcs, Workspace

__all__ = [
    "AgentOutcome",
    "AgentRequest",
    "Checks",
    "CiForge",
    "Clock",
    "Forge",
    "InstallationAccess",
    "LogReader",
    "Messenger",
    "Notice",
    "NoticeKind",
    "RepoAdmin",
    "SettingsSource",
    "StopReason",
    "TaskStore",
    "Vcs",
    "Worker",
    "Workspace",
]
