"""The stores the shared pattern tests run against: the one place to add a backend.

Each test that exercises a store takes the ``stores`` fixture (``tests/conftest.py``), one
:class:`Stores` per backend. A ``Stores`` stands for one deployment: every call returns
another process's view of the same data (for memory, the same object or a peer of it), so
a test can publish "on one process" and read "on another".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from asgistream.backends.memory import MemoryEventLog, MemoryFanout, MemoryJobStore, MemorySlots
from asgistream.middleware.limiter import Slots
from asgistream.patterns.eventlog import EventLog
from asgistream.patterns.fanout import FanoutBackend
from asgistream.patterns.jobs import JobStore

T = TypeVar("T")


class Stores(Protocol):
    name: str

    def event_log(self, *, capacity: int = 1000) -> EventLog: ...

    def fanout(self) -> FanoutBackend: ...

    def jobs(self, *, max_finished: int = 1000) -> JobStore: ...

    def slots(self, capacity: int, *, name: str = "default") -> Slots: ...


class MemoryStores:
    """The memory backend: one object per store, shared by every "process" of a test."""

    name = "memory"

    def __init__(self) -> None:
        self._made: dict[str, Any] = {}

    def event_log(self, *, capacity: int = 1000) -> MemoryEventLog:
        return self._once("event_log", lambda: MemoryEventLog(capacity=capacity))

    def fanout(self) -> MemoryFanout:
        first: MemoryFanout | None = self._made.get("fanout")
        if first is None:
            return self._once("fanout", MemoryFanout)
        return first.peer()

    def jobs(self, *, max_finished: int = 1000) -> MemoryJobStore:
        return self._once("jobs", lambda: MemoryJobStore(max_finished=max_finished))

    def slots(self, capacity: int, *, name: str = "default") -> MemorySlots:
        return self._once(f"slots {name}", lambda: MemorySlots(capacity))

    def _once(self, kind: str, make: Callable[[], T]) -> T:
        if kind not in self._made:
            self._made[kind] = make()
        made: T = self._made[kind]
        return made


BACKENDS: dict[str, type[Stores]] = {"memory": MemoryStores}
"""Every backend the shared tests run against, by name."""
