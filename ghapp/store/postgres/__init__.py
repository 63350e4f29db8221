"""The PostgreSQL backend: one database shared by every node of a cluster."""

from ghapp.store.postgres.store import PostgresTaskStore

__all__ = ["PostgresTaskStore"]
