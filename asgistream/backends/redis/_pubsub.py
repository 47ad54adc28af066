"""One pub/sub reader per process: a connection that every pub/sub store of a backend shares.

A :class:`PubSubReader` belongs to one :class:`~.connection.RedisBackend` (:func:`reader_of`)
and runs in the backend's task group. It holds a connection of its own, outside the pool,
with no socket timeout (it waits for messages as long as there are none) and no automatic
reconnection: redis-py's ``PubSub`` reconnects and subscribes again by itself, which would
hide the messages published meanwhile. Here a broken connection is reported to every
listener at once (:meth:`Listener.outage`), then the reader reconnects with backoff,
subscribes again, and tells each listener when its channel receives again.

Listeners are called from the reader task, in the order Redis sent the messages, and must
not wait. Other tasks only ever *write* to the reader's connection (``SUBSCRIBE``, and the
``PING`` of :meth:`PubSubReader.flush`); the reader task alone reads from it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import anyio
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from ...errors import HTTPError
from .connection import UNAVAILABLE_ERRORS, RedisBackend

__all__ = ["RECONNECT_DELAY", "RECONNECT_MAX_DELAY", "Listener", "PubSubReader", "reader_of"]

logger = logging.getLogger("asgistream")

RECONNECT_DELAY = 0.05
"""Seconds before the first attempt to reconnect; doubled after each failure."""

RECONNECT_MAX_DELAY = 2.0
"""The longest wait between two attempts to reconnect."""

_READER_ERRORS: tuple[type[BaseException], ...] = (*UNAVAILABLE_ERRORS, ResponseError)


class Listener(Protocol):
    """What a store gives the reader for one channel; called from the reader task."""

    def message(self, data: bytes) -> None:
        """One message published on the channel; never waits."""
        ...

    def outage(self, error: HTTPError | None) -> None:
        """The reader lost its connection (``error``: messages may be missed from now on),
        or the channel receives again (``None``); never waits."""
        ...


def reader_of(backend: RedisBackend) -> PubSubReader:
    """The pub/sub reader of ``backend``: one per backend, made on first use."""
    return backend.shared(PubSubReader)


class PubSubReader:
    """Subscribes to the channels its listeners ask for, on one connection, and hands each
    message to the channel's listeners."""

    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend
        self._listeners: dict[bytes, list[Listener]] = {}
        self._confirmed: set[bytes] = set()
        """Channels subscribed on the current connection (Redis confirmed)."""
        self._connection: AbstractConnection | None = None
        self._running = False
        self._down = False
        """The last attempt to connect failed, or the connection broke; until reconnected."""
        self._changed = anyio.Event()
        self._pings = 0
        self._pongs = 0
        # Idle this long, the reader sends a PING; as long again without an answer, it
        # counts the connection as lost.
        self._ping_interval = backend.block_ms / 1000

    @property
    def connected(self) -> bool:
        """Whether the reader has a connection now."""
        return self._connection is not None

    def receiving(self, channel: str) -> bool:
        """Whether ``channel`` is subscribed on the current connection."""
        return channel.encode() in self._confirmed

    # -- for the stores --------------------------------------------------------------------

    async def subscribe(self, channel: str, listener: Listener) -> bool:
        """Hand ``listener`` the messages of ``channel`` from now on; whether Redis confirmed
        the subscription (``False``: Redis is unreachable now; ``listener.outage(None)``
        comes once it is subscribed)."""
        key = channel.encode()
        listeners = self._listeners.setdefault(key, [])
        if listener not in listeners:
            listeners.append(listener)
        self._start()
        if key not in self._confirmed:
            await self._send("SUBSCRIBE", key)
        return await self._wait(lambda: key in self._confirmed)

    async def unsubscribe(self, channel: str, listener: Listener) -> None:
        """Stop handing ``listener`` the messages of ``channel``."""
        key = channel.encode()
        listeners = self._listeners.get(key, [])
        if listener in listeners:
            listeners.remove(listener)
        if not listeners:
            self._listeners.pop(key, None)
            self._confirmed.discard(key)
            await self._send("UNSUBSCRIBE", key)

    async def flush(self) -> None:
        """Return once the reader has handed out every message Redis had sent it before
        this call (at once if it has no connection; after the socket timeout at most)."""
        connection = self._connection
        if connection is None:
            return
        self._pings += 1
        token = self._pings
        if not await self._send("PING", str(token)):
            return
        with anyio.move_on_after(self.backend.socket_timeout):
            while self._pongs < token and self._connection is connection:
                await self._changed.wait()

    # -- the reader task -------------------------------------------------------------------

    def _start(self) -> None:
        if not self._running:
            self.backend.start_soon(self._run, name="asgistream redis pub/sub reader")
            self._running = True

    async def _run(self) -> None:
        delay = RECONNECT_DELAY
        try:
            while True:
                connection = self._new_connection()
                try:
                    with anyio.fail_after(self.backend.socket_timeout):
                        await connection.connect()  # type: ignore[no-untyped-call]
                    self._connection = connection
                    self._down = False
                    delay = RECONNECT_DELAY
                    channels = list(self._listeners)
                    if channels:
                        await connection.send_command("SUBSCRIBE", *channels, check_health=False)
                    await self._read(connection)
                except _READER_ERRORS as exc:
                    if not self._down:
                        logger.warning("redis pub/sub reader: connection lost: %s", exc)
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._lose(connection)
                await anyio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY)
        finally:
            self._running = False

    async def _read(self, connection: AbstractConnection) -> None:
        """Hand out what arrives on ``connection`` until it breaks (then raise)."""
        pinged = False
        while True:
            response = await connection.read_response(timeout=self._ping_interval)
            if response is None:
                if pinged:
                    raise TimeoutError(f"no answer to PING within {self._ping_interval}s")
                await connection.send_command("PING", check_health=False)
                pinged = True
                continue
            pinged = False
            self._handle(response)

    def _handle(self, response: Any) -> None:
        kind = response[0]
        if kind == b"message":
            for listener in self._listeners.get(response[1], ()):
                _call(listener.message, response[2])
        elif kind == b"subscribe":
            channel = response[1]
            listeners = self._listeners.get(channel)
            if listeners is not None:
                self._confirmed.add(channel)
                for listener in listeners:
                    _call(listener.outage, None)
            self._notify()
        elif kind == b"pong":
            token = response[1]
            if token.isdigit():
                self._pongs = max(self._pongs, int(token))
                self._notify()

    async def _lose(self, connection: AbstractConnection) -> None:
        """Forget ``connection``; tell every listener, once per outage."""
        was_up = not self._down
        self._connection = None
        self._confirmed.clear()
        self._down = True
        self._notify()
        await connection.disconnect(nowait=True)
        if was_up:
            error = self.backend.unavailable()
            for listeners in list(self._listeners.values()):
                for listener in list(listeners):
                    _call(listener.outage, error)

    # -- helpers ---------------------------------------------------------------------------

    def _new_connection(self) -> AbstractConnection:
        """A connection like the pool's, but without socket timeout or retries."""
        pool = self.backend.client.connection_pool
        options = {
            name: value
            for name, value in pool.connection_kwargs.items()
            if not name.startswith(("maint_notifications", "orig_"))
        }
        options.update(
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            decode_responses=False,
            protocol=2,
        )
        connection: AbstractConnection = pool.connection_class(**options)
        return connection

    async def _send(self, *args: Any) -> bool:
        """Write one command on the reader's connection; whether it was written."""
        connection = self._connection
        if connection is None or not connection.is_connected:
            return False  # the reader subscribes to every channel when it reconnects
        try:
            await connection.send_command(*args, check_health=False)
        except UNAVAILABLE_ERRORS:
            return False  # the reader notices the broken connection by itself
        return True

    async def _wait(self, done: Callable[[], bool]) -> bool:
        """Wait until ``done()`` (``True``), Redis is known unreachable or the socket
        timeout passed (``False``)."""
        with anyio.move_on_after(self.backend.socket_timeout):
            while not done():
                if self._down:
                    return False
                await self._changed.wait()
        return done()

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()


def _call(function: Callable[[Any], None], argument: Any) -> None:
    """Call a listener; one listener's bug must not stop the reader."""
    try:
        function(argument)
    except Exception:
        logger.exception("redis pub/sub reader: a listener failed")
