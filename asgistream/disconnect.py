"""Watching ``receive()`` for the client's disconnect while a response is produced.

Streaming and batch responses both run their producer inside a :class:`Watch`. When the
client leaves (or a timeout, or the server's shutdown, calls :meth:`Watch.stop`), the body of
the ``async with`` is cancelled wherever it waits, so the producer's ``finally`` blocks run.

Why not an anyio task group: spawning one task through anyio (4.14 and later) costs about
48 µs and 5 KB, more than a whole 100-item batch response. So the watcher is one plain asyncio
task that does nothing but await ``receive()``, started the first time the body lets the event
loop run (a response that completes in one go never needs one, and costs one cancelled
callback), and always cancelled and awaited by its owner when the body ends: the same
structure a task group gives, at the cost of a task. The cancellation is counted the way
:func:`asyncio.timeout` counts it, so a cancellation from outside always goes through.

A :class:`Schedule` (stream heartbeats and timeouts) is kept by one timer, armed for the
moment the schedule next has something to do and re-armed only when it fires: the schedule
works out lazily what is due, so the response pays nothing per event for it. Its ``beat``
(the heartbeat's write) runs in a task of its own, owned and awaited like the watcher.

On any other event loop anyio runs (trio: ``hypercorn -k trio``), :func:`watch` gives a
:class:`TaskGroupWatch` instead: the same semantics built on an anyio task group for the
watcher and a cancel scope around the body, where a task group per response is cheap. The
clocks, events, checkpoints and timeouts the responses use come from the same choice
(:func:`now`, :func:`new_event`, :func:`timeout`, ``Watch.clock``, ``Watch.sleep``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Protocol

import anyio
import anyio.abc

from ._types import Receive

__all__ = ["Schedule", "TaskGroupWatch", "Watch", "new_event", "now", "timeout", "watch"]

logger = logging.getLogger("asgistream")


class Schedule(Protocol):
    """Periodic work done beside the body: a stream's heartbeats and timeouts."""

    def due(self) -> float:
        """Seconds until :meth:`beat` must run (``<= 0``: now, ``math.inf``: never).

        Called when the delay it last returned has passed; may :meth:`Watch.stop` the watch.
        """
        ...

    async def beat(self) -> None:
        """The work that fell due; it must not raise."""
        ...


def watch(receive: Receive, schedule: Schedule | None = None) -> Watch:
    """The watcher for the running event loop: :class:`Watch` on asyncio, else (trio)
    :class:`TaskGroupWatch`."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return TaskGroupWatch(receive, schedule)
    return Watch(receive, schedule)


def now() -> float:
    """The running loop's clock, the one :meth:`Watch.deadline` takes."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return anyio.current_time()


def new_event() -> asyncio.Event | anyio.Event:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return anyio.Event()
    return asyncio.Event()


def timeout(delay: float | None) -> AbstractAsyncContextManager[Any]:
    """``asyncio.timeout(delay)``, or anyio's equivalent off asyncio; both raise
    ``TimeoutError``."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _fail_after(delay)
    return asyncio.timeout(delay)


@contextlib.asynccontextmanager
async def _fail_after(delay: float | None) -> AsyncIterator[None]:
    with anyio.fail_after(delay):
        yield


class Watch:
    """Cancels the body of ``async with Watch(receive):`` when the client disconnects.

    Watching begins the first time the body waits for anything. ``stop(reason)`` cancels the
    body from anywhere; ``deadline(when)`` stops it with reason ``"timeout"`` at loop time
    ``when``. After the block, ``reason`` says why it was stopped (``"disconnect"``,
    ``"timeout"``, ``"shutdown"``, ...) or is ``None``; the block's own cancellation is not
    raised. ``schedule``, if given, is run beside the body (stream heartbeats and timeouts).
    ``sleep(0)`` is the loop's checkpoint, where a ``stop`` reaches the body; ``clock()`` is
    the monotonic clock a schedule measures its delays with.
    """

    sleep: Callable[[float], Awaitable[None]] = staticmethod(asyncio.sleep)
    clock: Callable[[], float] = staticmethod(time.monotonic)

    __slots__ = (
        "_baseline",
        "_beat",
        "_deadline",
        "_receive",
        "_schedule",
        "_task",
        "_timer",
        "_watcher",
        "reason",
    )

    def __init__(self, receive: Receive, schedule: Schedule | None = None) -> None:
        self._receive = receive
        self._schedule = schedule
        self._task: asyncio.Task[object] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._beat: asyncio.Task[None] | None = None
        # Starts the watcher, then keeps the schedule: one handle at a time.
        self._timer: asyncio.Handle | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._baseline = 0
        self.reason: str | None = None

    @property
    def disconnected(self) -> bool:
        return self.reason == "disconnect"

    async def __aenter__(self) -> Watch:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("asgistream responses run in an asyncio task")
        self._task = task
        self._baseline = task.cancelling()
        if self.reason is not None:  # stopped before it began
            task.cancel()
        # Runs only if the body lets the loop run before it ends.
        self._timer = asyncio.get_running_loop().call_soon(self._start)
        return self

    def _start(self) -> None:
        self._timer = None
        self._watcher = asyncio.get_running_loop().create_task(self._watch())
        if self._schedule is not None:
            self._run_schedule()

    def _run_schedule(self, beat: asyncio.Task[None] | None = None) -> None:
        """Do what the schedule says is due, and arm the timer for what comes next."""
        self._timer = None
        if beat is not None:
            self._beat = None
            if beat.cancelled():
                return  # the watch is over
            if beat.exception() is not None:
                logger.error("stream heartbeat failed", exc_info=beat.exception())
        schedule = self._schedule
        if schedule is None or self.reason is not None:
            return
        delay = schedule.due()
        loop = asyncio.get_running_loop()
        if delay <= 0:
            self._beat = loop.create_task(schedule.beat())
            self._beat.add_done_callback(self._run_schedule)
        elif delay != math.inf:
            self._timer = loop.call_later(delay, self._run_schedule)

    def stop(self, reason: str) -> None:
        """Cancel the body; the first reason given is the one kept."""
        if self.reason is None:
            self.reason = reason
            if self._task is not None:
                self._task.cancel()

    def deadline(self, when: float | None) -> None:
        """Stop with reason ``"timeout"`` at loop time ``when`` (``None``: no deadline)."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if when is not None and when != math.inf:
            self._deadline = asyncio.get_running_loop().call_at(when, self.stop, "timeout")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        task = self._task
        assert task is not None
        self._schedule = None  # a beat that ends from now on arms nothing
        self.deadline(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        cancelled = exc_type is not None and issubclass(exc_type, asyncio.CancelledError)
        helpers = [t for t in (self._watcher, self._beat) if t is not None]
        if helpers:
            for helper in helpers:
                helper.cancel()
            try:
                # wait() raises only this task's own cancellation, never the helpers'.
                await asyncio.wait(helpers)
            except asyncio.CancelledError:
                cancelled = True
            watcher = self._watcher
            if (
                watcher is not None
                and watcher.done()
                and not watcher.cancelled()
                and watcher.exception() is not None
            ):
                logger.error("disconnect watcher failed", exc_info=watcher.exception())
        if self.reason is not None:
            if not cancelled:
                # The body ended before our cancellation reached it: take it here.
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError:
                    cancelled = True
            others = task.uncancel() > self._baseline
        else:
            others = task.cancelling() > self._baseline
        # A stop() from now on (while the response sends its last message) cancels nothing.
        self._task = None
        if others:  # someone else cancelled this task too: that goes on
            if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
                return False
            raise asyncio.CancelledError
        return (
            self.reason is not None
            and exc_type is not None
            and issubclass(exc_type, asyncio.CancelledError)
        )

    async def _watch(self) -> None:
        receive = self._receive
        while (await receive())["type"] != "http.disconnect":
            pass
        self.stop("disconnect")


class TaskGroupWatch(Watch):
    """:class:`Watch` off asyncio (trio): the watcher runs in an anyio task group, and the
    body in a cancel scope that :meth:`stop` and :meth:`deadline` cancel."""

    __slots__ = ("_body", "_tasks")

    sleep = staticmethod(anyio.sleep)
    clock = staticmethod(anyio.current_time)

    def __init__(self, receive: Receive, schedule: Schedule | None = None) -> None:
        super().__init__(receive, schedule)
        self._body = anyio.CancelScope()
        self._tasks: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> Watch:
        self._tasks = tasks = anyio.create_task_group()
        await tasks.__aenter__()
        tasks.start_soon(self._watch_anyio)
        self._body.__enter__()
        if self.reason is not None:  # stopped before it began
            self._body.cancel()
        return self

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            self._body.cancel()

    def deadline(self, when: float | None) -> None:
        self._body.deadline = math.inf if when is None else when

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        tasks = self._tasks
        assert tasks is not None
        body = self._body
        swallowed = body.__exit__(exc_type, exc, traceback)
        if self.reason is None and body.cancel_called:
            self.reason = "timeout"  # the deadline passed
        tasks.cancel_scope.cancel()
        # The body's exception, if any, goes on from here: the group only waits for the watcher.
        await tasks.__aexit__(None, None, None)
        return bool(swallowed)

    async def _watch_anyio(self) -> None:
        try:
            await self._watch_and_schedule()
        except Exception:
            logger.exception("disconnect watcher failed")

    async def _watch_and_schedule(self) -> None:
        schedule = self._schedule
        if schedule is None:
            await self._watch()
            return
        receive = self._receive
        while self.reason is None:
            delay = schedule.due()
            if delay <= 0:
                await schedule.beat()
                continue
            # Cancelling a pending receive() loses nothing: a disconnect is reported again
            # on the next call.
            with anyio.move_on_after(delay):
                if (await receive())["type"] == "http.disconnect":
                    self.stop("disconnect")
                    return
