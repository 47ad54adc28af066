"""A limiter's :class:`~asgistream.middleware.limiter.Slots` counted in this process."""

from __future__ import annotations

from collections import deque

import anyio

from ...middleware.limiter import LimiterFull

__all__ = ["MemorySlots"]


class _Waiter:
    __slots__ = ("event", "granted", "refused", "weight")

    def __init__(self, weight: int) -> None:
        self.weight = weight
        self.granted = False
        self.refused = False
        self.event = anyio.Event()


class MemorySlots:
    """``capacity`` units and a first-come-first-served queue of waiters, in memory."""

    __slots__ = ("_closed", "_in_use", "_waiters", "capacity")

    def __init__(self, capacity: int) -> None:
        if type(capacity) is not int or capacity < 1:
            raise ValueError(f"capacity must be a positive int, not {capacity!r}")
        self.capacity = capacity
        self._in_use = 0
        self._waiters: deque[_Waiter] = deque()
        self._closed = False

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(
        self, weight: int, *, queue_timeout: float | None, max_waiting: int | None
    ) -> None:
        if not self._waiters and self._in_use + weight <= self.capacity:
            self._in_use += weight
            return
        if self._closed:
            raise LimiterFull("shutdown")
        if queue_timeout == 0:
            raise LimiterFull("timeout")
        if max_waiting is not None and len(self._waiters) >= max_waiting:
            raise LimiterFull("queue_full")
        waiter = _Waiter(weight)
        self._waiters.append(waiter)
        try:
            with anyio.fail_after(queue_timeout):
                await waiter.event.wait()
            if waiter.refused:
                raise LimiterFull("shutdown")
        except BaseException as exc:
            if waiter.granted:
                # Granted in the same instant as the timeout or cancellation: give it back.
                self._give_back(weight)
            elif not waiter.refused:
                self._waiters.remove(waiter)
                # A heavy waiter leaving the head may let lighter ones behind it in.
                self._grant()
            if isinstance(exc, TimeoutError):
                raise LimiterFull("timeout") from None
            raise

    async def release(self, weight: int) -> None:
        self._give_back(weight)

    def shutdown(self) -> None:
        self._closed = True
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            waiter.refused = True
            waiter.event.set()

    def _give_back(self, weight: int) -> None:
        if weight > self._in_use:
            raise RuntimeError(f"releasing {weight} units but only {self._in_use} are in use")
        self._in_use -= weight
        self._grant()

    def _grant(self) -> None:
        waiters = self._waiters
        while waiters and self._in_use + waiters[0].weight <= self.capacity:
            waiter = waiters.popleft()
            self._in_use += waiter.weight
            waiter.granted = True
            waiter.event.set()
