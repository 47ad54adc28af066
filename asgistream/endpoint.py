"""Endpoints: the step after routing, where a request meets the code that answers it.

:class:`Endpoint` (``@app.route``) runs a handler that answers once. :class:`DualEndpoint`
(``@app.dual``) negotiates the mode (:mod:`asgistream.negotiation`), reads the request body if
there is one, calls the producer function, and hands its producer to the next step:
:class:`~asgistream.EventStreamResponse` (:mod:`asgistream.streaming`) for a stream or
:class:`~asgistream.BatchResponse` (:mod:`asgistream.batch`) for one JSON body. Both endpoints
are plain ASGI apps, which can be mounted in any other framework.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, Awaitable, Callable, Collection
from types import AsyncGeneratorType, CoroutineType
from typing import Any

from ._headers import ResponseHeaders, encode_headers, with_vary_accept
from ._types import ASGIApp, Receive, Scope, Send
from .batch import respond as respond_batch
from .errors import as_http_error, send_error
from .negotiation import Mode, Negotiator
from .options import BatchOptions, StreamOptions
from .request import DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY_SIZE, Request
from .responses import JSONResponse, Response
from .streaming import EventStreamResponse

__all__ = ["DualEndpoint", "Endpoint", "Handler", "ProducerFunction"]

Handler = Callable[[Request], Awaitable[Any]]
"""``async def handler(request)`` returning a dict/list (JSON), ``None`` (204) or an ASGI app."""

ProducerFunction = Callable[[Request], AsyncIterable[Any] | Awaitable[AsyncIterable[Any]]]
"""An async generator function of a request, or an async function returning a producer."""


class Endpoint:
    """An ASGI app that runs ``handler(request)`` and sends what it returns."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
    ) -> None:
        self.handler = handler
        self.max_body_size = max_body_size
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(
            scope, receive, max_body_size=self.max_body_size, body_timeout=self.body_timeout
        )
        try:
            result = await self.handler(request)
        except Exception as exc:
            await send_error(send, as_http_error(exc, "handler failed"))
            return
        await _as_app(result)(scope, receive, send)


def _as_app(result: Any) -> ASGIApp:
    if result is None:
        return Response(status=204)
    if callable(result):
        app: ASGIApp = result
        return app
    return JSONResponse(result)


class DualEndpoint:
    """An ASGI app that answers with a producer's items as a stream or a batch.

    The mode is negotiated per request (see :mod:`asgistream.negotiation`); ``modes`` are
    the ones offered and ``default`` is used when the client states no preference. ``stream``
    shapes the answer as an :class:`~asgistream.EventStreamResponse`, ``batch`` as a
    :class:`~asgistream.BatchResponse`; ``headers`` go on every answer, errors included.
    ``max_body_size`` and ``body_timeout`` bound the request body (see
    :meth:`Request.body <asgistream.Request.body>`).
    """

    def __init__(
        self,
        producer: ProducerFunction,
        *,
        default: Mode = Mode.BATCH,
        modes: Collection[Mode] = (Mode.BATCH, Mode.STREAM),
        headers: ResponseHeaders | None = None,
        stream: StreamOptions = StreamOptions(),
        batch: BatchOptions = BatchOptions(),
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
    ) -> None:
        if default not in modes:
            raise ValueError(f"default mode {default} is not among the modes {list(modes)}")
        if not isinstance(stream, StreamOptions) or not isinstance(batch, BatchOptions):
            raise TypeError("stream= takes a StreamOptions and batch= a BatchOptions")
        self.producer = producer
        self.default = Mode(default)
        self.modes = tuple(Mode(m) for m in modes)
        self.stream = stream
        self.batch = batch
        self.max_body_size = max_body_size
        self.body_timeout = body_timeout
        own = encode_headers(headers)
        # Which answer a request gets depends on its Accept header when there is a choice;
        # an error of negotiation always does.
        self.headers = with_vary_accept(own) if len(self.modes) > 1 else own
        self.error_headers = with_vary_accept(own)
        self.negotiator = Negotiator(default=self.default, available=self.modes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            mode = self.negotiator(scope)
            request = Request(
                scope, receive, max_body_size=self.max_body_size, body_timeout=self.body_timeout
            )
            if _has_body(scope):
                # Read it now: once the response runs, its disconnect watcher owns receive().
                await request.body()
            producer = self.producer(request)
            # The two usual kinds (an async generator, or the coroutine of an async function
            # that returns one) are told apart without calling inspect.isawaitable().
            if isinstance(producer, CoroutineType) or (
                type(producer) is not AsyncGeneratorType and inspect.isawaitable(producer)
            ):
                producer = await producer
        except Exception as exc:
            error = as_http_error(exc, "producer function failed")
            await send_error(send, error, self.error_headers)
            return
        if mode is Mode.STREAM:
            await EventStreamResponse(producer, self.stream, headers=self.headers)(
                scope, receive, send
            )
        else:
            # What BatchResponse(producer, ...) would do, without building one per request:
            # the headers are encoded once, here.
            await respond_batch(producer, self.batch, 200, self.headers, receive, send)


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        # Only two names matter: their lengths rule out nearly every header unread.
        if len(name) == 14 or len(name) == 17:
            name = name.lower()
            if (name == b"content-length" and value.strip() not in (b"0", b"")) or (
                name == b"transfer-encoding"
            ):
                return True
    return False
