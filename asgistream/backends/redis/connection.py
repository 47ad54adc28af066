"""The Redis connection that every Redis store of a process shares.

A :class:`RedisBackend` holds one redis-py asyncio client (a pool of connections), names the
keys of every store under one prefix, checks names that come from requests, runs the
background readers of the stores in a task group of its own, and turns an unreachable Redis
into a JSON 503 with ``Retry-After`` (:class:`RedisUnavailable`) instead of a hang or a
traceback. Enter it for the app's lifetime (``App(lifespan=backend.lifespan)`` or
``async with backend:``); the stores made from it work while it is open.

Keys have the form ``PREFIX:{KIND:NAME}:PART``. The part in braces is a Redis Cluster hash
tag: every key of one topic, one job or one limiter lands in the same slot, so the scripts
and transactions that touch several of them work on a cluster too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from anyio.abc import TaskGroup
from redis import exceptions as _errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from ...errors import HTTPError

if TYPE_CHECKING:
    from ...app import App

__all__ = [
    "DEFAULT_PREFIX",
    "MAX_NAME_LENGTH",
    "RedisBackend",
    "RedisUnavailable",
    "check_name",
    "is_unavailable",
]

logger = logging.getLogger("asgistream")

DEFAULT_PREFIX = "asgistream"
"""The first part of every key, so that several apps can share one Redis."""

MAX_NAME_LENGTH = 128
"""The longest topic, channel, job or limiter name."""

_NAME = re.compile(r"[A-Za-z0-9._~-]+")
_PREFIX = re.compile(r"[A-Za-z0-9._~:-]{1,64}")

UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    _errors.ConnectionError,
    _errors.TimeoutError,
    _errors.BusyLoadingError,
    _errors.ReadOnlyError,
    _errors.MasterDownError,
    _errors.TryAgainError,
    _errors.ClusterDownError,
    OSError,
    TimeoutError,
)
"""What redis-py raises when Redis cannot be reached or cannot serve right now."""

T = TypeVar("T")
S = TypeVar("S")


class RedisUnavailable(HTTPError):
    """Redis cannot be reached: a 503 with ``Retry-After``; the client should try again."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            503,
            "The service's store is unreachable; try again shortly",
            type="unavailable",
            detail={"retry_after": retry_after},
            headers={"retry-after": str(retry_after)},
        )


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` says that Redis cannot be reached or cannot serve right now."""
    return isinstance(error, UNAVAILABLE_ERRORS)


def check_name(kind: str, name: str) -> str:
    """``name`` if it can name a ``kind`` (topic, channel, job, limiter); a 400 otherwise.

    Names are 1 to :data:`MAX_NAME_LENGTH` characters of ``A-Z a-z 0-9 . _ ~ -``: no ``:``,
    braces or spaces, so that no name can reach another's keys or hash tag.
    """
    if not (0 < len(name) <= MAX_NAME_LENGTH and _NAME.fullmatch(name)):
        raise HTTPError(
            400,
            f"A {kind} name is 1 to {MAX_NAME_LENGTH} characters of A-Z, a-z, 0-9, '.', '_', "
            "'~' and '-'",
            type=f"invalid_{kind}",
            detail={"max_length": MAX_NAME_LENGTH},
        )
    return name


class RedisBackend:
    """One Redis shared by many processes, and the background work of this process's stores.

    ``url``: ``redis://host:port/db`` (``rediss://`` for TLS). ``prefix``: the first part of
    every key. ``socket_timeout``: seconds one command may take before Redis counts as
    unreachable (blocking reads stay well below it). ``connect_timeout``: seconds to open a
    connection. ``retry_after``: the ``Retry-After`` of a 503 while Redis is unreachable.
    ``max_connections``: the pool's size; the stores' readers take one connection each per
    process, requests share the rest.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        socket_timeout: float = 5.0,
        connect_timeout: float = 1.0,
        retry_after: int = 1,
        max_connections: int = 200,
    ) -> None:
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(f"prefix must be 1 to 64 of A-Z a-z 0-9 . _ ~ : -, not {prefix!r}")
        if not socket_timeout > 0 or not connect_timeout > 0:
            raise ValueError("socket_timeout and connect_timeout must be > 0 seconds")
        if type(retry_after) is not int or retry_after < 0:
            raise ValueError(f"retry_after must be a non-negative int, not {retry_after!r}")
        self.url = url
        self.prefix = prefix
        self.socket_timeout = socket_timeout
        self.retry_after = retry_after
        self._connect_timeout = connect_timeout
        self.process_id = uuid.uuid4().hex
        """Names this process in leases, so that its holdings expire if it dies."""
        self.block_ms = max(1, int(socket_timeout * 1000 / 2))
        """How long a blocking read waits at most: half the socket timeout, so that a quiet
        Redis is never mistaken for an unreachable one."""
        self._client_options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout,
            "max_connections": max_connections,
            # One quick retry on a dropped connection; past that a request gets its 503.
            "retry": Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
            "health_check_interval": 0,
        }
        self._client: Redis | None = None
        self._shared: dict[Callable[[RedisBackend], Any], Any] = {}
        self._tasks: TaskGroup | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    # -- lifetime ------------------------------------------------------------------------

    async def __aenter__(self) -> RedisBackend:
        if self._stack is not None:
            raise RuntimeError("this RedisBackend is open already")
        async with contextlib.AsyncExitStack() as stack:
            # A blocking pool: past max_connections a request waits (up to the connect
            # timeout) for a connection to come back, then gets its 503, instead of an error
            # at once.
            pool = BlockingConnectionPool.from_url(
                self.url, timeout=self._connect_timeout, **self._client_options
            )
            client = Redis.from_pool(pool)
            stack.push_async_callback(client.aclose)
            self._tasks = await stack.enter_async_context(anyio.create_task_group())
            # Readers end before the client closes (the stack unwinds in reverse).
            stack.callback(self._tasks.cancel_scope.cancel)
            self._client = client
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        self._client = None
        self._tasks = None
        if stack is not None:
            await stack.aclose()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: App) -> AsyncIterator[None]:
        """For ``App(lifespan=backend.lifespan)``: open while the app runs."""
        async with self:
            yield

    @property
    def client(self) -> Redis:
        """The shared client; only while the backend is open."""
        if self._client is None:
            raise RuntimeError("the RedisBackend is not open: enter it in the app's lifespan")
        return self._client

    def start_soon(self, function: Callable[[], Coroutine[Any, Any, Any]], name: str) -> None:
        """Run a store's background work (a reader) until the backend closes."""
        if self._tasks is None:
            raise RuntimeError("the RedisBackend is not open: enter it in the app's lifespan")
        self._tasks.start_soon(function, name=name)

    def shared(self, make: Callable[[RedisBackend], S]) -> S:
        """The one object that ``make(backend)`` makes for this backend (a reader and what
        the stores on this backend share), made on first use and kept as long as the backend."""
        made = self._shared.get(make)
        if made is None:
            made = self._shared[make] = make(self)
        result: S = made
        return result

    # -- naming --------------------------------------------------------------------------

    def key(self, kind: str, name: str, part: str) -> str:
        """The key of one ``part`` of the ``kind`` called ``name``: ``PREFIX:{KIND:NAME}:PART``."""
        return f"{self.prefix}:{{{kind}:{name}}}:{part}"

    def channel(self, kind: str, name: str) -> str:
        """A pub/sub channel name under the prefix."""
        return f"{self.prefix}:{kind}:{name}"

    # -- failures ------------------------------------------------------------------------

    def unavailable(self) -> RedisUnavailable:
        """The 503 a request gets while Redis is unreachable."""
        return RedisUnavailable(self.retry_after)

    async def call(self, command: Awaitable[T]) -> T:
        """Await one Redis command; an unreachable Redis becomes :class:`RedisUnavailable`.

        A cancellation that arrives as the command completes is raised, never lost: on
        Python 3.11, redis-py sends through ``asyncio.wait_for``, which then returns the
        result and drops the cancellation (a stream whose client left would wait forever).
        It is raised as the scope that cancelled expects, so that scope still catches it.
        """
        task = asyncio.current_task()
        cancelling = task.cancelling() if task is not None else 0
        try:
            result = await command
        except UNAVAILABLE_ERRORS as exc:
            logger.warning("redis unavailable: %s", exc)
            raise self.unavailable() from None
        if task is not None and task.cancelling() > cancelling:
            # A cancelled anyio scope (a task group, a timeout) catches only its own
            # cancellation: let it deliver that again. A bare task.cancel() gets a bare one.
            await anyio.lowlevel.checkpoint_if_cancelled()
            raise asyncio.CancelledError
        return result
