"""A :class:`~asgistream.patterns.fanout.FanoutBackend` on Redis pub/sub, for many processes.

Each message is one ``PUBLISH`` on the channel ``PREFIX:fanout:NAME``. Every process reads
the channels of all its brokers on a single connection (one reader per
:class:`~.connection.RedisBackend`, shared with the job store), and its broker puts each
message in the bounded queue of each of its subscribers, applying their overflow policy.

The guarantee, stated as Centrifugo states its own default: **at most once, live only**.
A subscriber receives each message published while it is subscribed, once, in the order
Redis received the messages (the same order on every process); nothing is stored, so a
subscriber that reconnects gets what is published from then on, never what it missed.
Within that, nothing is lost *silently*:

- a slow subscriber's losses are reported (``dropped``) or end its stream, by its policy;
- when a process's reader loses Redis, every subscriber of that process ends at once with
  a 503 ``unavailable`` (a stream's final ``error`` event, so that clients reconnect), and
  new subscriptions answer that 503 until the reader has subscribed again (it reconnects
  by itself, with backoff up to :data:`~._pubsub.RECONNECT_MAX_DELAY` seconds). A reader
  that stops answering is detected within the backend's socket timeout; Redis disconnects
  a reader that falls behind its ``client-output-buffer-limit pubsub``, which is the same
  outage.

:meth:`RedisFanout.publish` returns once Redis has the message *and* this process's reader
has handed it to the local subscribers (a ``PING`` on the reader's connection, answered
after the message): a client that publishes and then reads its own process sees its
message. It never waits for a subscriber. With Redis unreachable it raises
:class:`~.connection.RedisUnavailable` (a 503 with ``Retry-After``) within the backend's
connect timeout.
"""

from __future__ import annotations

from ...errors import HTTPError
from ...patterns.fanout import Deliver, Outage
from ._pubsub import reader_of
from .connection import RedisBackend, check_name

__all__ = ["RedisFanout"]


class RedisFanout:
    """The broadcasts of the channel ``channel``, for the brokers of every process.

    One ``RedisFanout`` serves one :class:`~asgistream.patterns.fanout.Broker`; brokers on
    other processes reach it through a ``RedisFanout`` of the same channel name and key
    prefix.
    """

    __slots__ = ("_deliver", "_outage", "backend", "channel", "name")

    def __init__(self, backend: RedisBackend, channel: str = "broadcast") -> None:
        self.backend = backend
        self.name = check_name("channel", channel)
        self.channel = backend.channel("fanout", channel)
        """The pub/sub channel: ``PREFIX:fanout:NAME``."""
        self._deliver: Deliver | None = None
        self._outage: Outage | None = None

    async def open(self, deliver: Deliver, outage: Outage) -> None:
        if self._deliver is not None:
            raise RuntimeError("this backend is open already")
        self._deliver, self._outage = deliver, outage
        if not await reader_of(self.backend).subscribe(self.channel, self):
            # Redis is unreachable: the broker refuses subscribers until the reader is back.
            outage(self.backend.unavailable())

    async def publish(self, message: bytes) -> None:
        backend = self.backend
        await backend.call(backend.client.publish(self.channel, message))
        await reader_of(backend).flush()

    async def aclose(self) -> None:
        if self._deliver is not None:
            self._deliver = self._outage = None
            await reader_of(self.backend).unsubscribe(self.channel, self)

    # -- the reader's listener -------------------------------------------------------------

    def message(self, data: bytes) -> None:
        if self._deliver is not None:
            self._deliver(data)

    def outage(self, error: HTTPError | None) -> None:
        if self._outage is not None:
            self._outage(error)
