"""Forwarding requests to an upstream server that streams Server-Sent Events.

:class:`Upstream` holds one shared ``httpx.AsyncClient`` for an upstream (an
OpenAI-compatible API or any SSE server); open it in the app's lifespan and let a route
return ``upstream.forward(request, path)``. Each forwarded request, in order:

1. waits for one of ``max_streams`` slots, held until the response is complete (the whole
   stream); after ``queue_timeout`` seconds it is answered ``503`` with ``Retry-After``;
2. sends the request upstream; connection failures, retryable statuses (5xx by default) and a
   connection that breaks before the first chunk are retried by a
   :class:`~asgistream.client.RetryPolicy`, the client's own backoff (``Retry-After`` a lower
   bound). Nothing is retried once a chunk has arrived, nor after a timeout (the upstream may
   still be working on it);
3. relays an SSE answer event by event, with ``read_timeout`` as the longest silence between
   two chunks (never a limit on the whole stream); any other answer is forwarded whole,
   status included.

A client that disconnects, at any of these steps, cancels the work at once and closes the
upstream connection. Errors before the answer starts are OpenAI-shaped JSON (``502``
unreachable or broken upstream, ``504`` upstream timeout); errors after it end the stream with
a ``data:`` chunk holding an ``error`` object, which the OpenAI SDK raises as ``APIError``.
The upstream's lines are read by the client's parser (:class:`~asgistream.client.BlockParser`).
Comments (upstream heartbeats) are not relayed: the stream sends its own heartbeats.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import anyio

try:
    import httpx
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ModuleNotFoundError(
        "asgistream.patterns.proxy needs httpx: pip install 'asgistream[proxy]'", name="httpx"
    ) from exc

from .._types import ASGIApp, Receive, Scope, Send
from ..client.events import BlockParser
from ..client.retry import RetryPolicy, parse_retry_after
from ..disconnect import Watch
from ..errors import HTTPError, send_error
from ..middleware.limiter import Limiter, LimiterFull, Slots
from ..options import StreamOptions
from ..producer import aclose
from ..request import Request
from ..responses import Response
from ..sse import Event
from ..streaming import EventStreamResponse
from ._openai import as_openai, error_chunk, openai_error

__all__ = ["DEFAULT_UPSTREAM_RETRY", "MAX_BODY_BYTES", "Upstream"]

logger = logging.getLogger("asgistream")

MAX_BODY_BYTES = 16 * 1024 * 1024
"""The largest non-streaming upstream answer forwarded, in bytes."""

DEFAULT_UPSTREAM_RETRY = RetryPolicy(
    initial=0.25, cap=4.0, max_attempts=3, statuses=frozenset(range(500, 600))
)
"""Three attempts, 0.25 s then 0.5 s apart (jittered, at most 4 s); every 5xx is retried."""

_NO_RETRY = RetryPolicy(max_attempts=1)
_STREAM = StreamOptions()

# Hop-by-hop headers (RFC 9110 §7.6.1) and those httpx recomputes are never forwarded.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_NOT_FORWARDED_UP = _HOP_BY_HOP | {"host", "content-length", "accept-encoding"}
# Set by the response that relays the answer; the body arrives decoded.
_NOT_FORWARDED_DOWN = _HOP_BY_HOP | {
    "content-length",
    "content-encoding",
    "content-type",
    "cache-control",
    "x-accel-buffering",
    "date",
    "server",
}

# Nothing reached the upstream, or it broke before answering: safe to send again.
_RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError)

_T = TypeVar("_T")


class Upstream:
    """One upstream server, reached through one shared ``httpx.AsyncClient``.

    ``base_url``: where requests go (``forward``'s path is appended).
    ``max_streams``: requests forwarded at once; a slot is held for the whole stream.
    ``slots``: where those slots are counted: this process by default, or a store shared by
    every process (``RedisSlots(backend, "upstream", N)``), so that an upstream's limit holds
    for the whole deployment; its capacity then replaces ``max_streams``.
    ``queue_timeout``: seconds to wait for a slot before answering 503 with ``Retry-After``
    (``retry_after`` seconds, by default ``queue_timeout`` rounded up).
    ``connect_timeout``, ``write_timeout``: seconds to connect and to send the request.
    ``read_timeout``: the longest wait for each chunk of the answer, in seconds.
    ``retry``: when to send a request again and how long to wait first
    (:data:`DEFAULT_UPSTREAM_RETRY`; ``None``: never). Its ``max_attempts`` counts every
    attempt, the first included, and its ``statuses`` are the upstream answers worth another
    try; the last attempt's answer is forwarded whatever its status.
    ``headers``: sent with every request, over the client's own (an API key, say).
    ``stream``: the relayed stream's heartbeat, timeouts and ``retry`` hint; the upstream's
    events keep their own ids (``ids`` is turned off) and its ``[DONE]``, if it sends one
    (``done`` is refused).
    ``max_body_bytes``: the largest answer that is not a stream forwarded, in bytes.

    Use it as an async context manager, or call :meth:`open` and :meth:`aclose`, in the app's
    lifespan.
    """

    def __init__(
        self,
        base_url: str,
        *,
        max_streams: int = 64,
        slots: Slots | None = None,
        queue_timeout: float = 5.0,
        retry_after: int | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        write_timeout: float = 10.0,
        retry: RetryPolicy | None = DEFAULT_UPSTREAM_RETRY,
        headers: Mapping[str, str] | None = None,
        stream: StreamOptions = _STREAM,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if max_streams < 1:
            raise ValueError(f"max_streams must be at least 1, not {max_streams}")
        for name, value in (
            ("queue_timeout", queue_timeout),
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
            ("write_timeout", write_timeout),
        ):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0 seconds, not {value!r}")
        if stream.done:
            raise ValueError("a relayed stream ends as the upstream's does: done must be False")
        self.base_url = base_url.rstrip("/")
        self.max_streams = slots.capacity if slots is not None else max_streams
        self._store = slots
        self.queue_timeout = queue_timeout
        self.retry_after = retry_after if retry_after is not None else math.ceil(queue_timeout)
        self.timeout = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=write_timeout, pool=connect_timeout
        )
        self.retry = retry if retry is not None else _NO_RETRY
        self.headers = dict(headers or {})
        self.stream = dataclasses.replace(stream, ids=False)
        self.max_body_bytes = max_body_bytes
        self._client: httpx.AsyncClient | None = None
        self._slots: Limiter | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Create the shared client and the slots; call it in the app's start-up."""
        if self._client is not None:
            raise RuntimeError("this Upstream is already open")
        self._slots = Limiter(
            None if self._store is not None else self.max_streams,
            slots=self._store,
            queue_timeout=self.queue_timeout,
            retry_after=self.retry_after,
            name="upstream",
        )
        self._client = httpx.AsyncClient(
            timeout=self.timeout,
            # Every slot may hold a connection, so a forwarded request never waits for one.
            limits=httpx.Limits(
                max_connections=self.max_streams, max_keepalive_connections=self.max_streams
            ),
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        """Close the shared client; call it in the app's shutdown."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> Upstream:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def in_use(self) -> int:
        """How many slots forwarded requests hold right now."""
        if self._slots is None:
            return 0
        return self._slots.in_use

    # -- forwarding ----------------------------------------------------------------------

    def forward(self, request: Request, path: str) -> ASGIApp:
        """The response to ``request`` forwarded to ``base_url + path`` (query string kept).

        Return it from a route handler; the work starts when it is sent.
        """
        if self._client is None or self._slots is None:
            raise RuntimeError("open the Upstream in the app's lifespan before forwarding")
        query = request.scope.get("query_string", b"")
        url = self.base_url + path + ("?" + query.decode("latin-1") if query else "")
        headers = [
            (name, value)
            for name, value in request.scope["headers"]
            if name.decode("latin-1").lower() not in _NOT_FORWARDED_UP
        ]
        return _Forward(self, self._client, self._slots, request, url, headers)

    async def _send(self, client: httpx.AsyncClient, request: httpx.Request) -> _Answer:
        """Send ``request`` until it gets an answer, retrying what may be retried."""
        policy = self.retry
        failures = 0
        while True:
            final = policy.gives_up(failures + 1)
            at_least = 0.0
            try:
                response = await client.send(request, stream=True)
            except _RETRYABLE as exc:
                if final:
                    raise _upstream_error(exc) from None
                logger.info("upstream attempt %d failed: %r", failures + 1, exc)
            except httpx.HTTPError as exc:
                raise _upstream_error(exc) from None
            else:
                try:
                    if final or response.status_code not in policy.statuses:
                        return await self._first(response)
                    at_least = parse_retry_after(response.headers.get("retry-after")) or 0.0
                    logger.info(
                        "upstream attempt %d answered %d", failures + 1, response.status_code
                    )
                except _RETRYABLE as exc:
                    if final:
                        await _close(response)
                        raise _upstream_error(exc) from None
                    logger.info("upstream attempt %d broke: %r", failures + 1, exc)
                except httpx.HTTPError as exc:
                    await _close(response)
                    raise _upstream_error(exc) from None
                except BaseException:
                    await _close(response)
                    raise
                await _close(response)
            failures += 1
            await anyio.sleep(policy.delay(failures, at_least=at_least))

    async def _first(self, response: httpx.Response) -> _Answer:
        """Read up to the first chunk of an SSE answer, or the whole body of any other."""
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            chunks = response.aiter_bytes()
            try:
                first = await chunks.__anext__()
            except StopAsyncIteration:
                first = None
            return _Answer(response, chunks=chunks, first=first)
        body: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise openai_error(
                    502,
                    f"The upstream answer is larger than {self.max_body_bytes} bytes",
                    code="upstream_too_large",
                )
            body.append(chunk)
        return _Answer(response, body=b"".join(body))


@dataclass(slots=True)
class _Answer:
    """An upstream response, read up to its first chunk.

    An SSE answer has ``chunks`` (the rest of the stream) and ``first`` (``None`` if the
    stream was empty); any other answer has its whole ``body``.
    """

    response: httpx.Response
    chunks: AsyncIterator[bytes] | None = None
    first: bytes | None = None
    body: bytes = b""


class _Forward:
    """The ASGI response of one forwarded request."""

    def __init__(
        self,
        upstream: Upstream,
        client: httpx.AsyncClient,
        slots: Limiter,
        request: Request,
        url: str,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        self.upstream = upstream
        self.client = client
        self.slots = slots
        self.request = request
        self.url = url
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await self.request.body()
        except HTTPError as exc:
            await send_error(send, as_openai(exc))
            return
        async with contextlib.AsyncExitStack() as stack:
            # The body is read, so the watcher only sees the disconnect, which ends the wait.
            outcome = await _unless_disconnected(receive, self._open, stack, body)
            if outcome is None:
                return
            if isinstance(outcome, HTTPError):
                await send_error(send, outcome)
                return
            await self._respond(outcome)(scope, receive, send)

    async def _open(self, stack: contextlib.AsyncExitStack, body: bytes) -> _Answer | HTTPError:
        upstream = self.upstream
        try:
            await self.slots.acquire()
        except HTTPError as exc:  # a shared store that cannot be reached: a 503
            return as_openai(exc)
        except LimiterFull:
            return openai_error(
                503,
                f"All {upstream.max_streams} upstream streams are busy; "
                f"retry after {upstream.retry_after} s",
                code="queue_timeout",
                headers={"retry-after": str(upstream.retry_after)},
            )
        stack.push_async_callback(self.slots.release)
        request = self.client.build_request(
            self.request.method, self.url, content=body, headers=self.headers
        )
        request.headers.update(upstream.headers)
        try:
            answer = await upstream._send(self.client, request)
        except HTTPError as exc:
            return exc
        stack.push_async_callback(_close, answer.response)
        return answer

    def _respond(self, answer: _Answer) -> ASGIApp:
        response = answer.response
        headers = {
            name: value
            for name, value in response.headers.items()
            if name.lower() not in _NOT_FORWARDED_DOWN
        }
        if answer.chunks is None:
            return Response(
                answer.body,
                status=response.status_code,
                media_type=response.headers.get("content-type"),
                headers=headers,
            )
        return EventStreamResponse(
            _relay(answer.first, answer.chunks, self.upstream.timeout.read),
            self.upstream.stream,
            status=response.status_code,
            headers=headers,
        )


async def _unless_disconnected(
    receive: Receive, work: Callable[..., Awaitable[_T]], *args: Any
) -> _T | None:
    """``await work(*args)``, or ``None`` as soon as the client disconnects."""
    result: _T | None = None
    watch = Watch(receive)
    async with watch:
        result = await work(*args)
    return None if watch.disconnected else result


async def _relay(
    first: bytes | None, chunks: AsyncIterator[bytes], read_timeout: float | None
) -> AsyncIterator[Any]:
    """The upstream's events, then an error chunk if the upstream fails mid-stream."""
    relay = _Relay()
    try:
        if first is None:
            return
        for event in relay.feed(first):
            yield event
        async for chunk in chunks:
            for event in relay.feed(chunk):
                yield event
    except httpx.TimeoutException:
        yield error_chunk(
            openai_error(
                504,
                f"The upstream sent nothing for {read_timeout} s",
                code="upstream_timeout",
            )
        )
    except httpx.HTTPError as exc:
        yield error_chunk(_upstream_error(exc))
    finally:
        await aclose(chunks)


class _Relay:
    """Turns an upstream's bytes back into the events to send on; comments are dropped.

    The lines and fields are the client's :class:`~asgistream.client.BlockParser`'s; what
    they mean for a relay is decided here. An event carries the ``event``, ``id`` and
    ``retry`` its block set; an ``id`` or ``retry`` in a block without data waits for the next
    event, which carries it, so that the client's last event id and reconnection delay end up
    as the upstream meant them. An event with nothing but data is relayed as its text.
    """

    __slots__ = ("_blocks", "_id", "_retry")

    def __init__(self) -> None:
        self._blocks = BlockParser()
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[str | Event]:
        """The events that ``chunk`` completes, in order."""
        events: list[str | Event] = []
        for block in self._blocks.feed(chunk):
            if block.id is not None:
                self._id = block.id
            if block.retry is not None:
                self._retry = block.retry
            if not block.data:
                continue
            text = "\n".join(block.data)
            if not block.event and self._id is None and self._retry is None:
                events.append(text)
                continue
            events.append(Event(text, event=block.event or None, id=self._id, retry=self._retry))
            self._id = self._retry = None
        return events


async def _close(response: httpx.Response) -> None:
    # Runs while the request unwinds, possibly cancelled: the connection must close anyway.
    with anyio.CancelScope(shield=True):
        await response.aclose()


def _upstream_error(exc: httpx.HTTPError) -> HTTPError:
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return openai_error(504, f"The upstream timed out: {exc!r}", code="upstream_timeout")
    return openai_error(502, f"The upstream failed: {exc!r}", code="upstream_unavailable")
