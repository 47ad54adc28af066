"""Endpoints: plain handlers and dual-mode producers, each a plain ASGI app."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Collection, Mapping
from typing import Any

from ._types import ASGIApp, Receive, Scope, Send
from .batch import DEFAULT_MAX_BYTES, DEFAULT_MAX_ITEMS, BatchResponse, ReducerFactory
from .errors import HTTPError, send_error
from .negotiation import Mode, NegotiationError, negotiate_scope
from .request import DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY_SIZE, Request
from .responses import JSONResponse, Response
from .streaming import DEFAULT_HEARTBEAT, EventStreamResponse, check_options

__all__ = ["DualEndpoint", "Endpoint", "Handler", "ProducerFunction"]

logger = logging.getLogger("asgistream")

Handler = Callable[[Request], Awaitable[Any]]
"""``async def handler(request)`` returning a dict/list (JSON), ``None`` (204) or an ASGI app."""

ProducerFunction = Callable[[Request], AsyncIterable[Any] | Awaitable[AsyncIterable[Any]]]
"""An async generator function of a request, or an async function returning a producer."""

_VARY = {"vary": "Accept"}


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
        except HTTPError as exc:
            await send_error(send, exc)
            return
        except Exception as exc:
            logger.error("handler failed", exc_info=exc)
            await send_error(send, HTTPError(500, "Internal server error"))
            return
        await _as_app(result)(scope, receive, send)


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        name = name.lower()
        if (name == b"content-length" and value.strip() not in (b"0", b"")) or (
            name == b"transfer-encoding"
        ):
            return True
    return False


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
    the ones offered and ``default`` is used when the client states no preference. Stream
    options go to :class:`~asgistream.EventStreamResponse`, batch options to
    :class:`~asgistream.BatchResponse`.
    """

    def __init__(
        self,
        producer: ProducerFunction,
        *,
        default: Mode = Mode.BATCH,
        modes: Collection[Mode] = (Mode.BATCH, Mode.STREAM),
        headers: Mapping[str, str] | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
        heartbeat: float | None = DEFAULT_HEARTBEAT,
        idle_timeout: float | None = None,
        send_timeout: float | None = None,
        ids: bool = True,
        done: bool = False,
        retry: int | None = None,
        reduce: ReducerFactory | None = None,
        max_items: int | None = DEFAULT_MAX_ITEMS,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        timeout: float | None = None,
    ) -> None:
        if default not in modes:
            raise ValueError(f"default mode {default} is not among the modes {list(modes)}")
        self.producer = producer
        self.default = Mode(default)
        self.modes = tuple(Mode(m) for m in modes)
        self.headers = {**(headers or {}), **(_VARY if len(self.modes) > 1 else {})}
        self.max_body_size = max_body_size
        self.body_timeout = body_timeout
        self.stream_options: dict[str, Any] = dict(
            heartbeat=heartbeat,
            idle_timeout=idle_timeout,
            send_timeout=send_timeout,
            ids=ids,
            done=done,
            retry=retry,
        )
        self.batch_options: dict[str, Any] = dict(
            reduce=reduce, max_items=max_items, max_bytes=max_bytes, timeout=timeout
        )
        check_options(
            heartbeat=heartbeat, idle_timeout=idle_timeout, send_timeout=send_timeout, retry=retry
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            mode = negotiate_scope(scope, default=self.default, available=self.modes)
        except NegotiationError as exc:
            await send_error(send, exc, [(b"vary", b"Accept")])
            return
        request = Request(
            scope, receive, max_body_size=self.max_body_size, body_timeout=self.body_timeout
        )
        try:
            if _has_body(scope):
                # Read it now: once the response runs, its disconnect watcher owns receive().
                await request.body()
            producer = self.producer(request)
            if inspect.isawaitable(producer):
                producer = await producer
        except HTTPError as exc:
            await send_error(send, exc, [(b"vary", b"Accept")])
            return
        except Exception as exc:
            logger.error("producer function failed", exc_info=exc)
            await send_error(send, HTTPError(500, "Internal server error"))
            return
        response: ASGIApp
        if mode is Mode.STREAM:
            response = EventStreamResponse(producer, headers=self.headers, **self.stream_options)
        else:
            response = BatchResponse(producer, headers=self.headers, **self.batch_options)
        await response(scope, receive, send)
