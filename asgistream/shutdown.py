"""Ending open streams promptly when the server shuts down, however it is stopped.

Servers wait for every open response before they finish shutting down (uvicorn before its
lifespan shutdown, hypercorn up to its graceful timeout), so a stream that never ends would
hold the server up, or be cut off without a word. While the app's lifespan runs,
:meth:`Shutdown.handle_signals` therefore chains a handler in front of the process's
SIGINT/SIGTERM handlers: on the signal, every open stream ends its producer and tells its
client with a final ``event: error`` of type ``shutdown``; then the signal does what it did
before:

- a handler the server installed runs at once, as before (uvicorn, granian, daphne, hypercorn
  with ``-w 0``);
- the default action (a hypercorn worker's SIGTERM, any SIGTERM under trio) waits until the
  streams have told their clients, at most ``grace`` seconds, then ends the process as it
  would have;
- a signal the process ignores (a hypercorn worker's SIGINT: its main process stops it) still
  ends the streams.

Where no signal reaches the app (hypercorn's workers when only its main process is
signalled), the server cancels the open responses itself, and each stream tells its client
then (:mod:`asgistream.streaming`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import math
import signal
from collections.abc import Callable
from typing import Any, Protocol

import anyio
import anyio.abc

__all__ = ["DEFAULT_GRACE", "SCOPE_KEY", "Shutdown"]

SCOPE_KEY = "asgistream.shutdown"
"""Where an app puts its :class:`Shutdown` in each request's scope."""

DEFAULT_GRACE = 2.0
"""How long a signal whose default action ends the process waits for the open streams to tell
their clients (each final message may itself wait up to a second for a slow client)."""

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Stoppable(Protocol):
    def shutdown(self) -> None: ...


class Shutdown:
    """The open streams of one app, ended together when the server shuts down."""

    def __init__(self) -> None:
        self.triggered = False
        self._streams: set[_Stoppable] = set()

    def register(self, stream: _Stoppable) -> None:
        """Track ``stream``; if shutdown has begun, end it at once."""
        self._streams.add(stream)
        if self.triggered:
            stream.shutdown()

    def unregister(self, stream: _Stoppable) -> None:
        self._streams.discard(stream)

    def __len__(self) -> int:
        return len(self._streams)

    def trigger(self) -> None:
        """End every open stream, and every stream registered from now on."""
        self.triggered = True
        for stream in list(self._streams):
            stream.shutdown()

    async def handle_signals(
        self,
        *,
        grace: float = DEFAULT_GRACE,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Until cancelled, :meth:`trigger` on SIGINT/SIGTERM, then let the signal do what it
        did before (see the module's documentation); the previous handlers come back at the
        end.

        Does nothing outside the main thread, where signals cannot be handled.
        """
        call_soon = _call_soon()
        to_default, defaults = anyio.create_memory_object_stream[int](math.inf)
        previous: dict[int, Any] = {}
        active = True

        def handler(signum: int, frame: Any) -> None:
            chained = previous[signum]
            if active:
                call_soon(self.trigger)
                if chained == signal.SIG_DFL:
                    call_soon(to_default.send_nowait, signum)  # after the streams: below
                    return
            # As before; also what a handler still called once this task has ended (another
            # handler chained in front of it) does.
            if callable(chained):
                chained(signum, frame)
            elif chained == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                signal.raise_signal(signum)

        try:
            with to_default, defaults:
                try:
                    for sig in _SIGNALS:
                        previous[sig] = signal.signal(sig, handler)
                finally:
                    task_status.started()
                async for signum in defaults:
                    await self._wait_told(grace)
                    signal.signal(signum, signal.SIG_DFL)
                    signal.raise_signal(signum)
        except ValueError:  # not the main thread: signals are not ours to handle
            return
        finally:
            active = False
            for signum, old in previous.items():
                with contextlib.suppress(ValueError, TypeError):
                    if signal.getsignal(signum) is handler:
                        signal.signal(signum, old)

    async def _wait_told(self, limit: float) -> None:
        """Wait until every open stream has ended (it unregisters once its client was told),
        at most ``limit`` seconds."""
        with anyio.move_on_after(limit):
            while self._streams:  # noqa: ASYNC110 (streams leave the set; none signals it)
                await anyio.sleep(0.01)


def _call_soon() -> Callable[..., object]:
    """Schedules a callback on the running event loop, safely from a signal handler."""
    try:
        return asyncio.get_running_loop().call_soon_threadsafe
    except RuntimeError:  # trio, the other backend anyio runs on
        trio = importlib.import_module("trio")
        run_sync_soon: Callable[..., object] = trio.lowlevel.current_trio_token().run_sync_soon
        return run_sync_soon
