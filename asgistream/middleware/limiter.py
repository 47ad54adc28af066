"""Concurrency limits held for a response's whole life.

A :class:`Limiter` has ``capacity`` units. Each request takes ``weight`` units before its app
runs and gives them back when the app returns: for a stream that is when the stream ends, for
a batch when its body is sent. Weights are granted whole, in arrival order: a waiter is
granted only when all of its weight fits, and nobody behind it jumps the queue, so a heavy
request is never starved by a flow of light ones and two half-granted requests can never
block each other. A request that waits longer than ``queue_timeout`` is answered ``503`` with
a ``Retry-After`` header before its app has sent anything.

Units go back on every way out: completion, an error, cancellation, a client that leaves
(also while it waits in the queue).

The units are counted by :class:`Slots`: in this process
(:class:`~asgistream.backends.memory.MemorySlots`, the default), or in a store that many
processes share, for a limit that holds across a whole deployment. The limiter keeps the
policy: the timeouts, the rejection and the metrics.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Protocol

import anyio

from .. import shutdown as _shutdown
from .._types import ASGIApp, Message, Receive, Scope, Send
from ..disconnect import watch
from ..errors import HTTPError, send_error
from ..negotiation import Mode, NegotiationError, get_mode, negotiate

if TYPE_CHECKING:
    from .metrics import Sink

__all__ = [
    "DEFAULT_QUEUE_TIMEOUT",
    "DEFAULT_RETRY_AFTER",
    "Limiter",
    "LimiterFull",
    "LimiterMiddleware",
    "Slots",
    "by_mode",
]

DEFAULT_QUEUE_TIMEOUT = 5.0
"""Seconds a request may wait for units before it is answered 503."""

DEFAULT_RETRY_AFTER = 1
"""Seconds a rejected client is told to wait (``Retry-After``)."""

Weight = int | Callable[[Scope], int]
"""Units a request takes: a number, or a function of the request's scope."""


class LimiterFull(Exception):
    """No units for this request: ``reason`` is ``"timeout"`` (none became free in time),
    ``"queue_full"`` or ``"shutdown"`` (the server is stopping)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"limiter full: {reason}")
        self.reason = reason


class Slots(Protocol):
    """Where a limiter's units are counted: ``capacity`` units, granted whole and first come
    first served, to the requests of one process or of many.

    A store shared by processes counts each process's units under a lease that the process
    renews, so the units of a process that dies come back by themselves.
    """

    @property
    def capacity(self) -> int:
        """Units in all."""
        ...

    @property
    def in_use(self) -> int:
        """Units held now (as this process last knew, for a shared store)."""
        ...

    @property
    def waiting(self) -> int:
        """This process's requests waiting for units now."""
        ...

    async def acquire(
        self, weight: int, *, queue_timeout: float | None, max_waiting: int | None
    ) -> None:
        """Take ``weight`` units (``1 <= weight <= capacity``) once they all fit and every
        earlier waiter has been served. Raise :class:`LimiterFull` after ``queue_timeout``
        seconds (``0``: do not wait; ``None``: no limit), when ``max_waiting`` requests of
        this process wait already, or after :meth:`shutdown` when it would have to wait. A
        waiter that is cancelled, even in the instant it was granted, leaves nothing held
        and nobody blocked. A shared store that cannot count right now raises an
        :class:`~asgistream.HTTPError` (a 503 with ``Retry-After``), which the middleware
        sends as it is."""
        ...

    async def release(self, weight: int) -> None:
        """Give back ``weight`` units and serve the waiters that now fit. Called in
        ``finally`` blocks, maybe in a cancelled task: it must complete all the same."""
        ...

    def shutdown(self) -> None:
        """Refuse this process's waiters now, and every later request that would wait;
        units held stay held and free units are still granted."""
        ...


class Limiter:
    """``capacity`` units shared by concurrent requests, granted whole and first come first served.

    Pass ``capacity`` for units counted in this process, or ``slots`` for another
    :class:`Slots` store (one shared by processes: its capacity is the deployment's).
    ``queue_timeout``: seconds a request may wait for its units (``0``: never wait;
    ``None``: wait as long as it takes). ``retry_after``: the ``Retry-After`` seconds of a
    rejection. ``max_waiting``: requests that may wait at once; more are rejected at once
    (``None``: no limit). ``name`` labels this limiter in metrics; ``sink`` records waits and
    rejections (see :mod:`asgistream.middleware.metrics`).
    """

    def __init__(
        self,
        capacity: int | None = None,
        *,
        slots: Slots | None = None,
        queue_timeout: float | None = DEFAULT_QUEUE_TIMEOUT,
        retry_after: int = DEFAULT_RETRY_AFTER,
        max_waiting: int | None = None,
        name: str = "default",
        sink: Sink | None = None,
    ) -> None:
        if (capacity is None) == (slots is None):
            raise ValueError("pass either capacity or slots")
        if capacity is not None and (type(capacity) is not int or capacity < 1):
            raise ValueError(f"capacity must be a positive int, not {capacity!r}")
        if queue_timeout is not None and not queue_timeout >= 0:
            raise ValueError(f"queue_timeout must be None or >= 0 seconds, not {queue_timeout!r}")
        if type(retry_after) is not int or retry_after < 0:
            raise ValueError(f"retry_after must be a non-negative int, not {retry_after!r}")
        if max_waiting is not None and (type(max_waiting) is not int or max_waiting < 0):
            raise ValueError(f"max_waiting must be None or a non-negative int, not {max_waiting!r}")
        if slots is None:
            from ..backends.memory.slots import MemorySlots

            assert capacity is not None
            slots = MemorySlots(capacity)
        self.slots = slots
        self.queue_timeout = queue_timeout
        self.retry_after = retry_after
        self.max_waiting = max_waiting
        self.name = name
        self.sink = sink

    # -- state ---------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self.slots.capacity

    @property
    def in_use(self) -> int:
        """Units held right now."""
        return self.slots.in_use

    @property
    def waiting(self) -> int:
        """Requests waiting for units right now."""
        return self.slots.waiting

    def __repr__(self) -> str:
        return (
            f"Limiter({self.name!r}, in_use={self.in_use}/{self.capacity}, waiting={self.waiting})"
        )

    # -- acquiring and releasing -----------------------------------------------------------

    async def acquire(self, weight: int = 1) -> None:
        """Wait until ``weight`` units are free and take them all at once.

        Raises :class:`LimiterFull` when ``queue_timeout`` passes or the queue is full, and
        ``ValueError`` for a weight that could never be granted. A weight of 0 takes nothing.
        """
        if self._checked(weight):
            await self.slots.acquire(
                weight, queue_timeout=self.queue_timeout, max_waiting=self.max_waiting
            )

    async def try_acquire(self, weight: int = 1) -> bool:
        """Take ``weight`` units if they are free and nobody waits; never waits."""
        if not self._checked(weight):
            return True
        try:
            await self.slots.acquire(weight, queue_timeout=0, max_waiting=self.max_waiting)
        except LimiterFull:
            return False
        return True

    async def release(self, weight: int = 1) -> None:
        """Give back ``weight`` units and grant waiters that now fit, in order."""
        if weight:
            await self.slots.release(weight)

    def shutdown(self) -> None:
        """Refuse every waiting request and every request that would have to wait.

        Requests that hold units keep them. Called by an app's shutdown (register the limiter
        with ``app.shutdown.register(limiter)``; a limiter around one endpoint of an
        :class:`~asgistream.App` registers itself), so that queued requests get a 503 at once
        instead of holding the server up until their ``queue_timeout``.
        """
        self.slots.shutdown()

    @contextlib.asynccontextmanager
    async def hold(self, weight: int = 1) -> AsyncIterator[None]:
        """Hold ``weight`` units for the duration of the block (see :meth:`acquire`)."""
        await self.acquire(weight)
        try:
            yield
        finally:
            await self.release(weight)

    def _checked(self, weight: int) -> bool:
        """Whether ``weight`` takes units at all; ``ValueError`` if it never could."""
        if type(weight) is not int or weight < 0:
            raise ValueError(f"weight must be a non-negative int, not {weight!r}")
        if weight > self.slots.capacity:
            raise ValueError(f"weight {weight} exceeds the capacity {self.slots.capacity}")
        return weight > 0


class LimiterMiddleware:
    """Run ``app`` only while holding units of ``limiter``; answer 503 when none come.

    ``weight`` is a number of units or ``weight(scope) -> int``; a weight of 0 lets the
    request through without taking units. While a request waits, its disconnect is watched,
    so a client that leaves gives up its place in the queue. Wrap a whole application or
    one endpoint: ``LimiterMiddleware(app, limiter=limiter, weight=2)``.
    """

    def __init__(self, app: ASGIApp, *, limiter: Limiter, weight: Weight = 1) -> None:
        self.app = app
        self.limiter = limiter
        self.weight = weight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        weight = self.weight if isinstance(self.weight, int) else self.weight(scope)
        if weight == 0:
            await self.app(scope, receive, send)
            return
        limiter = self.limiter
        try:
            free = await limiter.try_acquire(weight)
        except HTTPError as error:  # a shared store that cannot count now: its 503
            await _reject(send, limiter, error)
            return
        if free:
            try:
                await self.app(scope, receive, send)
            finally:
                await limiter.release(weight)
            return
        queued = await self._wait(scope, receive, weight)
        if queued is None:
            return  # the client left while waiting: nobody to answer
        if isinstance(queued, LimiterFull | HTTPError):
            await _reject(send, limiter, queued)
            return
        try:
            await self.app(scope, queued, send)
        finally:
            await limiter.release(weight)

    async def _wait(
        self, scope: Scope, receive: Receive, weight: int
    ) -> Receive | LimiterFull | HTTPError | None:
        """Wait for units while watching for a disconnect.

        Returns the ``receive`` the app must use (it replays what the watcher read), the
        rejection (or the store's error, such as an unreachable Redis), or ``None`` if the
        client left.
        """
        limiter = self.limiter
        registry = scope.get(_shutdown.SCOPE_KEY)
        if registry is not None:
            # Inside an App: its shutdown refuses the queue (a set: registering twice is one).
            registry.register(limiter)
        body = _BodyKeeper(receive)
        acquired = False
        outcome: LimiterFull | HTTPError | None = None
        started = time.perf_counter()
        async with watch(body.receive) as watcher:
            try:
                await limiter.acquire(weight)
                acquired = True
            except (LimiterFull, HTTPError) as error:
                outcome = error
        sink = limiter.sink
        if sink is not None:
            endpoint, mode = _labels(scope)
            sink.limiter_waited(limiter.name, endpoint, mode, time.perf_counter() - started)
            if outcome is not None:
                sink.limiter_rejected(limiter.name, endpoint, mode, _reason(outcome))
        if watcher.disconnected:
            if acquired:
                await limiter.release(weight)
            return None
        if outcome is not None:
            return outcome
        if not body.read:
            return receive
        return _replay(body.read, receive)


class _BodyKeeper:
    """The ``receive`` a :class:`Watch` reads while a request waits: it keeps the body
    messages for the app, and stops reading after one with ``more_body`` (a long body stays
    with the server's flow control until the app reads it: nothing unbounded is buffered)."""

    __slots__ = ("_receive", "read")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.read: list[Message] = []

    async def receive(self) -> Message:
        if self.read and self.read[-1].get("more_body", False):
            await anyio.sleep_forever()
        message = await self._receive()
        if message["type"] == "http.request":
            self.read.append(message)
        return message


def _replay(read: list[Message], receive: Receive) -> Receive:
    pending = deque(read)

    async def replay() -> Message:
        if pending:
            return pending.popleft()
        return await receive()

    return replay


def _reason(outcome: LimiterFull | HTTPError) -> str:
    return outcome.reason if isinstance(outcome, LimiterFull) else outcome.type


async def _reject(send: Send, limiter: Limiter, full: LimiterFull | HTTPError) -> None:
    if isinstance(full, HTTPError):
        with contextlib.suppress(OSError):
            await send_error(send, full)
        return
    seconds = limiter.retry_after
    message = (
        "The server is shutting down; retry later"
        if full.reason == "shutdown"
        else "The server is at capacity; retry later"
    )
    error = HTTPError(
        503,
        message,
        type="overloaded",
        detail={"reason": full.reason, "retry_after": seconds},
        headers={"retry-after": str(seconds)},
    )
    with contextlib.suppress(OSError):
        await send_error(send, error)


def _labels(scope: Scope) -> tuple[str, str]:
    from .metrics import endpoint_label

    mode = get_mode(scope)
    return endpoint_label(scope), "" if mode is None else mode.value


def by_mode(*, stream: int, batch: int, default: Mode = Mode.BATCH) -> Callable[[Scope], int]:
    """A weight function: ``stream`` units for a request that negotiates a stream, else ``batch``.

    The mode already in the scope (from :class:`~asgistream.NegotiationMiddleware`) is used if
    there is one; otherwise the request is negotiated here with ``default`` for no preference,
    without storing the result. A request that cannot be negotiated weighs 0: its endpoint
    answers 400 or 406 at once.
    """

    def weight(scope: Scope) -> int:
        mode = get_mode(scope)
        if mode is None:
            accept = [
                value.decode("latin-1")
                for name, value in scope.get("headers", ())
                if name.lower() == b"accept"
            ]
            try:
                mode = negotiate(scope.get("query_string", b""), accept or None, default=default)
            except NegotiationError:
                return 0
        return stream if mode is Mode.STREAM else batch

    return weight
