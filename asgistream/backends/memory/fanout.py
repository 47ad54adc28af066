"""A :class:`~asgistream.patterns.fanout.FanoutBackend` within this process."""

from __future__ import annotations

from ...patterns.fanout import Deliver, Outage

__all__ = ["MemoryFanout"]


class MemoryFanout:
    """Hands each published message to every open backend of its channel, at once.

    A new ``MemoryFanout`` is a channel of its own; :meth:`peer` gives another backend on
    the same channel, as a second process would have (tests use it to stand for one).
    """

    __slots__ = ("_channel", "_deliver")

    def __init__(self) -> None:
        self._channel: dict[MemoryFanout, Deliver] = {}
        self._deliver: Deliver | None = None

    def peer(self) -> MemoryFanout:
        """Another backend on this channel."""
        other = MemoryFanout()
        other._channel = self._channel
        return other

    async def open(self, deliver: Deliver, outage: Outage) -> None:
        # One process cannot lose the others: ``outage`` is never called.
        if self._deliver is not None:
            raise RuntimeError("this backend is open already")
        self._deliver = deliver
        self._channel[self] = deliver

    async def publish(self, message: bytes) -> None:
        for deliver in list(self._channel.values()):
            deliver(message)

    async def aclose(self) -> None:
        self._channel.pop(self, None)
        self._deliver = None
