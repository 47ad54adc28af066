"""The stores the shared pattern tests run against: the one place to add a backend.

Each test that exercises a store takes the ``stores`` fixture (``tests/conftest.py``), one
:class:`Stores` per backend. A ``Stores`` stands for one deployment: every call returns
another process's view of the same data (for memory, the same object or a peer of it), so
a test can publish "on one process" and read "on another".
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol, TypeVar

from asgistream.backends.memory import MemoryEventLog, MemoryFanout, MemoryJobStore, MemorySlots
from asgistream.backends.redis import RedisBackend
from asgistream.middleware.limiter import Slots
from asgistream.patterns.eventlog import EventLog
from asgistream.patterns.fanout import FanoutBackend
from asgistream.patterns.jobs import JobStore
from tests.redis_server import processes

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


class RedisStores:
    """The Redis backend: two open :class:`RedisBackend` objects stand for two processes;
    each call returns a store on the next one, under a key prefix of this test's own."""

    name = "redis"

    def __init__(self, backends: Sequence[RedisBackend]) -> None:
        self._backends = backends
        self._calls = 0

    def _next(self) -> RedisBackend:
        backend = self._backends[self._calls % len(self._backends)]
        self._calls += 1
        return backend

    def event_log(self, *, capacity: int = 1000) -> EventLog:
        from asgistream.backends.redis.eventlog import RedisEventLog

        return RedisEventLog(self._next(), capacity=capacity)

    def fanout(self) -> FanoutBackend:
        from asgistream.backends.redis.fanout import RedisFanout

        return RedisFanout(self._next(), "broadcast")

    def jobs(self, *, max_finished: int = 1000) -> JobStore:
        from asgistream.backends.redis.jobs import RedisJobStore

        return RedisJobStore(self._next(), max_finished=max_finished)

    def slots(self, capacity: int, *, name: str = "default") -> Slots:
        from asgistream.backends.redis.slots import RedisSlots

        return RedisSlots(self._next(), name, capacity)


@contextlib.asynccontextmanager
async def open_stores(name: str, redis_url: Callable[[], str]) -> AsyncIterator[Stores]:
    """The stores of backend ``name``; for Redis, two processes' views under a new prefix
    (``redis_url`` is called only then, so memory tests need no Redis)."""
    if name == "memory":
        yield MemoryStores()
        return
    async with processes(redis_url(), 2) as backends:
        yield RedisStores(backends)


BACKENDS = ("memory", "redis")
"""Every backend the shared tests run against."""
