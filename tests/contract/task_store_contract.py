"""Behaviour every TaskStore backend must show; a backend's test module subclasses this.

A subclass provides two fixtures:

- ``open_store``: an async factory that opens another, already migrated store object on
  the same database (a second connection); everything it opened is closed at teardown.
- ``store``: one store from that factory, used by most tests.

The tests live by concern, one module each: inbox, tasks, claims, budget, lifecycle, leases,
directory, shared (write slots, log tails) and invariants; their timeline and builders are in
support.
"""

from __future__ import annotations

from tests.contract.budget import BudgetContract
from tests.contract.claims import ClaimsContract
from tests.contract.directory import DirectoryContract
from tests.contract.inbox import InboxContract
from tests.contract.invariants import InvariantsContract
from tests.contract.leases import LeaseContract
from tests.contract.lifecycle import LifeCycleContract
from tests.contract.shared import SharedContract
from tests.contract.tasks import TasksContract


class TaskStoreContract(
    InboxContract,
    TasksContract,
    ClaimsContract,
    BudgetContract,
    LifeCycleContract,
    LeaseContract,
    DirectoryContract,
    SharedContract,
    InvariantsContract,
):
    """The whole TaskStore contract; see the module docstring for the fixtures to provide."""
