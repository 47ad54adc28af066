"""Forwarding requests to an upstream server that streams Server-Sent Events.

:class:`Upstream` holds one shared ``httpx.AsyncClient`` for an upstream (an
OpenAI-compatible API or any SSE server); open it in the app's lifespan and let a route
return ``upstream.forward(request, path)``. Each forwarded request, in order:

1. waits for one of ``max_streams`` slots, held until the response is complete (the whole
   stream); after ``queue_timeout`` seconds it is answered ``503`` with ``Retry-After``;
2. sends the request upstream; connection failures, ``5xx`` answers and a connection that
   breaks before the first chunk are retried ``retries`` times with exponential backoff.
   Nothing is retried once a chunk has arrived, nor after a timeout (the upstream may still
   be working on it);
3. relays an SSE answer event by event, with ``read_timeout`` as the longest silence between
   two chunks (never a limit on the whole stream); any other answer is forwarded whole,
   status included.

A client that disconnects, at any of these steps, cancels the work at once and closes the
upstream connection. Errors before the answer starts are OpenAI-shaped JSON (``502``
unreachable or broken upstream, ``504`` upstream timeout); errors after it end the stream with
a ``data:`` chunk holding an ``error`` object, which the OpenAI SDK raises as ``APIError``.
Comments (upstream heartbeats) are not relayed: the stream sends its own ``heartbeat``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import anyio
import httpx

from .._types import ASGIApp, Receive, Scope, Send
from ..disconnect import Watch
from ..errors import HTTPError, send_error
from ..middleware.limiter import Limiter, LimiterFull
from ..producer import aclose
from ..request import Request
from ..responses import Response
from ..sse import Event
from ..streaming import DEFAULT_HEARTBEAT, EventStreamResponse
from .chat import error_chunk, openai_error

__all__ = ["Upstream"]

logger = logging.getLogger("asgistream")

MAX_BODY_BYTES = 16 * 1024 * 1024
"""The largest non-streaming upstream answer forwarded, in bytes."""

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
    ``queue_timeout``: seconds to wait for a slot before answering 503 with ``Retry-After``
    (``retry_after`` seconds, by default ``queue_timeout`` rounded up).
    ``connect_timeout``, ``write_timeout``: seconds to connect and to send the request.
    ``read_timeout``: the longest wait for each chunk of the answer, in seconds.
    ``retries``, ``backoff``, ``max_backoff``: attempts after the first, and the delays
    between them (``backoff * 2**n`` seconds, jittered, at most ``max_backoff``).
    ``headers``: sent with every request, over the client's own (an API key, say).
    ``heartbeat``, ``send_timeout``: those of the relayed stream (see
    :class:`~asgistream.EventStreamResponse`).

    Use it as an async context manager, or call :meth:`open` and :meth:`aclose`, in the app's
    lifespan.
    """

    def __init__(
        self,
        base_url: str,
        *,
        max_streams: int = 64,
        queue_timeout: float = 5.0,
        retry_after: int | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        write_timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.25,
        max_backoff: float = 4.0,
        headers: Mapping[str, str] | None = None,
        heartbeat: float | None = DEFAULT_HEARTBEAT,
        send_timeout: float | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if max_streams < 1:
            raise ValueError(f"max_streams must be at least 1, not {max_streams}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, not {retries}")
        for name, value in (
            ("queue_timeout", queue_timeout),
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
            ("write_timeout", write_timeout),
            ("backoff", backoff),
            ("max_backoff", max_backoff),
        ):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0 seconds, not {value!r}")
        self.base_url = base_url.rstrip("/")
        self.max_streams = max_streams
        self.queue_timeout = queue_timeout
        self.retry_after = retry_after if retry_after is not None else math.ceil(queue_timeout)
        self.timeout = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=write_timeout, pool=connect_timeout
        )
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.headers = dict(headers or {})
        self.heartbeat = heartbeat
        self.send_timeout = send_timeout
        self.max_body_bytes = max_body_bytes
        self._client: httpx.AsyncClient | None = None
        self._slots: Limiter | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Create the shared client and the slots; call it in the app's start-up."""
        if self._client is not None:
            raise RuntimeError("this Upstream is already open")
        self._slots = Limiter(
            self.max_streams,
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
        attempt = 0
        while True:
            delay: float | None = None
            try:
                response = await client.send(request, stream=True)
            except _RETRYABLE as exc:
                if attempt >= self.retries:
                    raise _upstream_error(exc) from None
                logger.info("upstream attempt %d failed: %r", attempt + 1, exc)
            except httpx.HTTPError as exc:
                raise _upstream_error(exc) from None
            else:
                try:
                    if response.status_code < 500 or attempt >= self.retries:
                        return await self._first(response)
                    delay = _retry_after(response)
                    logger.info(
                        "upstream attempt %d answered %d", attempt + 1, response.status_code
                    )
                except _RETRYABLE as exc:
                    if attempt >= self.retries:
                        await _close(response)
                        raise _upstream_error(exc) from None
                    logger.info("upstream attempt %d broke: %r", attempt + 1, exc)
                except httpx.HTTPError as exc:
                    await _close(response)
                    raise _upstream_error(exc) from None
                except BaseException:
                    await _close(response)
                    raise
                await _close(response)
            await anyio.sleep(self._backoff(attempt, delay))
            attempt += 1

    async def _first(self, response: httpx.Response) -> _Answer:
        """Read up to the first chunk: the first line of an SSE answer, or a whole body."""
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            lines = response.aiter_lines()
            try:
                first = await lines.__anext__()
            except StopAsyncIteration:
                first = None
            return _Answer(response, lines=lines, first=first)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise openai_error(
                    502,
                    f"The upstream answer is larger than {self.max_body_bytes} bytes",
                    code="upstream_too_large",
                )
            chunks.append(chunk)
        return _Answer(response, body=b"".join(chunks))

    def _backoff(self, attempt: int, at_least: float | None) -> float:
        delay = min(self.max_backoff, self.backoff * 2.0**attempt)
        # Jitter spreads the retries of many requests that failed together.
        delay *= 0.5 + random.random() / 2
        if at_least is not None:
            delay = max(delay, min(at_least, self.max_backoff))
        return delay


@dataclass(slots=True)
class _Answer:
    """An upstream response, read up to its first chunk.

    An SSE answer has ``lines`` (the rest of the stream) and ``first`` (``None`` if the
    stream was empty); any other answer has its whole ``body``.
    """

    response: httpx.Response
    lines: AsyncIterator[str] | None = None
    first: str | None = None
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
            await send_error(send, exc)
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
        except LimiterFull:
            return openai_error(
                503,
                f"All {upstream.max_streams} upstream streams are busy; "
                f"retry after {upstream.retry_after} s",
                code="queue_timeout",
                headers={"retry-after": str(upstream.retry_after)},
            )
        stack.callback(self.slots.release)
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
        if answer.lines is None:
            return Response(
                answer.body,
                status=response.status_code,
                media_type=response.headers.get("content-type"),
                headers=headers,
            )
        return EventStreamResponse(
            _relay(answer.first, answer.lines, self.upstream.timeout.read),
            status=response.status_code,
            headers=headers,
            heartbeat=self.upstream.heartbeat,
            send_timeout=self.upstream.send_timeout,
            ids=False,
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
    first: str | None, lines: AsyncIterator[str], read_timeout: float | None
) -> AsyncIterator[Any]:
    """The upstream's events, then an error chunk if the upstream fails mid-stream."""
    parser = _Parser()
    try:
        if first is None:
            return
        event = parser.feed(first)
        if event is not None:
            yield event
        async for line in lines:
            event = parser.feed(line)
            if event is not None:
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
        await aclose(lines)


@dataclass(slots=True)
class _Parser:
    """Turns SSE lines back into events (WHATWG rules); comments are dropped.

    An ``id`` or ``retry`` without data waits for the next event, which carries it, so the
    client's last event id and reconnection delay end up as the upstream meant them.
    """

    data: list[str] | None = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None

    def feed(self, line: str) -> Any:
        """Take one line; return the event it completes (a ``str`` of data or an
        :class:`Event`), or ``None``."""
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            if self.data is None:
                self.data = [value]
            else:
                self.data.append(value)
        elif name == "event":
            self.event = value
        elif name == "id":
            if "\0" not in value:
                self.id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> Any:
        data = self.data
        if data is None:
            # No data, no event; the event type is forgotten, id and retry wait.
            self.event = None
            return None
        text = "\n".join(data)
        self.data = None
        if self.event is None and self.id is None and self.retry is None:
            return text
        event = Event(text, event=self.event or None, id=self.id, retry=self.retry)
        self.event = self.id = self.retry = None
        return event


async def _close(response: httpx.Response) -> None:
    # Runs while the request unwinds, possibly cancelled: the connection must close anyway.
    with anyio.CancelScope(shield=True):
        await response.aclose()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isascii() and value.isdigit() else None


def _upstream_error(exc: httpx.HTTPError) -> HTTPError:
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return openai_error(504, f"The upstream timed out: {exc!r}", code="upstream_timeout")
    return openai_error(502, f"The upstream failed: {exc!r}", code="upstream_unavailable")
