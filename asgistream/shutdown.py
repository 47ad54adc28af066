"""Ending open streams promptly when the server shuts down.

uvicorn waits for every open response before it runs the lifespan shutdown, so a stream that
never ends would hold the server up. The :class:`~asgistream.App` therefore chains its own
handler in front of the server's SIGINT/SIGTERM handlers: on the signal, every open stream
ends its producer and tells its client with a final ``event: error`` of type ``shutdown``,
then the server's own handler runs as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["SCOPE_KEY", "Shutdown"]

SCOPE_KEY = "asgistream.shutdown"
"""Where an app puts its :class:`Shutdown` in each request's scope."""

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

    def install_signal_handlers(self) -> Callable[[], None]:
        """Chain :meth:`trigger` in front of the current SIGINT/SIGTERM handlers.

        Returns a function that restores the previous handlers. Does nothing (and returns a
        no-op) outside the main thread or without a running asyncio loop.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return _nothing
        previous: dict[signal.Signals, Any] = {}

        def handler(signum: int, frame: Any) -> None:
            loop.call_soon_threadsafe(self.trigger)
            chained = previous.get(signal.Signals(signum))
            if callable(chained):
                chained(signum, frame)
            elif chained == signal.SIG_DFL and signum == signal.SIGINT:
                raise KeyboardInterrupt

        try:
            for sig in _SIGNALS:
                previous[sig] = signal.getsignal(sig)
                signal.signal(sig, handler)
        except ValueError:  # not the main thread
            return _nothing

        def restore() -> None:
            for sig, old in previous.items():
                with contextlib.suppress(ValueError, TypeError):
                    if signal.getsignal(sig) is handler:
                        signal.signal(sig, old)

        return restore


def _nothing() -> None:
    return None
