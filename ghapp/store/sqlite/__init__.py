"""The SQLite backend: one file, one node (or several processes on one machine)."""

from ghapp.store.sqlite.store import SqliteTaskStore

__all__ = ["SqliteTaskStore"]
