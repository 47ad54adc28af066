"""Streaming metrics: an ASGI middleware that observes responses and reports to a sink.

:class:`MetricsMiddleware` watches the messages an app sends, so it needs nothing from the
endpoints. Per endpoint (the route template, never the raw path) and mode it reports: active
streams, time to first event, duration, events and bytes sent, errors by type, client
disconnects; a limiter given the same sink adds its waits and rejections. A :class:`Sink`
is the hook for any metrics system; ``asgistream.middleware.prometheus.PrometheusSink``
keeps them in a ``prometheus_client`` registry of its own (the ``metrics`` extra) and the
middleware serves them at ``/metrics``.

What counts as what:

- a response is a *stream* when its content type is ``text/event-stream``; its mode is the
  negotiated one (``stream``/``batch``) or, for plain endpoints, ``batch`` or ``stream`` by
  content type;
- an *event* is an SSE block (it ends with a blank line) other than a heartbeat comment or
  the ``retry:`` block that opens a stream; a batch body counts as one event;
- *time to first event* runs from the request to the first body bytes that carry an event;
- an *error* is an ``event: error`` that ends a stream (typed by its JSON ``error.type``),
  or an error status (typed by its JSON body, else ``http_<status>``), or an exception out
  of the app (typed by its class name);
- a *disconnect* is a client that left before the response was complete.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import orjson

from .._headers import encode_headers
from .._types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "DURATION_BUCKETS",
    "FIRST_EVENT_BUCKETS",
    "Exposition",
    "MetricsMiddleware",
    "ResponseRecord",
    "Sink",
    "endpoint_label",
]

FIRST_EVENT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Histogram buckets (seconds) for the time to first event."""

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
"""Histogram buckets (seconds) for response durations: streams can last an hour."""

UNMATCHED = "<unmatched>"
"""The endpoint label of a request that matched no route (404s, mounted apps)."""

_HEARTBEAT = b":\n\n"
_ERROR_EVENT = b"event: error\ndata: "
_MAX_ERROR_BODY = 64 * 1024  # error bodies larger than this are not parsed for their type


@dataclass(slots=True, frozen=True)
class ResponseRecord:
    """What one finished response did."""

    endpoint: str
    mode: str
    status: int
    """The status sent, or 0 if the app sent none."""
    stream: bool
    duration: float
    """Seconds from the request to the app's return."""
    events: int
    bytes: int
    error: str | None
    """The error's type, or ``None``."""
    disconnected: bool


class Sink(Protocol):
    """Receives what :class:`MetricsMiddleware` and a
    :class:`~asgistream.middleware.limiter.Limiter` observe.

    Called on the event loop, on the request's path: implementations must not block.
    """

    def response_started(self, endpoint: str, mode: str, stream: bool) -> None:
        """A response sent its status line and headers."""

    def first_event(self, endpoint: str, mode: str, seconds: float) -> None:
        """A response sent its first event ``seconds`` after the request arrived."""

    def response_finished(self, record: ResponseRecord) -> None:
        """A response ended (completely, with an error or by a disconnect)."""

    def limiter_waited(self, limiter: str, endpoint: str, mode: str, seconds: float) -> None:
        """A request waited ``seconds`` in ``limiter``'s queue (whatever the outcome)."""

    def limiter_rejected(self, limiter: str, endpoint: str, mode: str, reason: str) -> None:
        """A request was answered 503 by ``limiter`` (``reason``: timeout or queue_full)."""


@runtime_checkable
class Exposition(Protocol):
    """A sink that can render its metrics for scraping."""

    def expose(self) -> tuple[bytes, str]:
        """The body and content type of a scrape."""
        ...


def endpoint_label(scope: Scope) -> str:
    """The route template that matched (``/jobs/{id}``), never the raw path.

    Reads ``scope["route"]`` as asgistream sets it (a ``str``) or as Starlette does (an
    object with ``path``).
    """
    route = scope.get("route")
    if type(route) is str:
        return route
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class MetricsMiddleware:
    """Observe every HTTP response of ``app`` and report it to ``sink``.

    Built like every asgistream middleware, ``MetricsMiddleware(app, **options)`` (so
    ``app.add_middleware(MetricsMiddleware, sink=sink)`` works in Starlette and FastAPI):

    - ``sink`` (required): where the observations go, any :class:`Sink`;
    - ``path`` (default ``/metrics``): where the sink's metrics are served when the sink is
      an :class:`Exposition` (``None``: not served);
    - ``endpoint``: names a request's endpoint for the labels (default
      :func:`endpoint_label`).

    Other scopes (lifespan, websocket) pass through untouched.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        sink: Sink,
        path: str | None = "/metrics",
        endpoint: Callable[[Scope], str] = endpoint_label,
    ) -> None:
        self.app = app
        self.sink = sink
        self.path = path if isinstance(sink, Exposition) else None
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.path is not None and scope["path"] == self.path:
            await self._expose(send)
            return
        observer = _Observer(self, scope, send)
        try:
            await self.app(scope, observer.receive_from(receive), observer.send)
        except Exception as exc:
            observer.finish(type(exc).__name__)
            raise
        except BaseException:
            observer.finish(None, cancelled=True)
            raise
        observer.finish(None)

    async def _expose(self, send: Send) -> None:
        assert isinstance(self.sink, Exposition)
        body, content_type = self.sink.expose()
        headers = [
            *encode_headers({"content-type": content_type, "cache-control": "no-store"}),
            (b"content-length", b"%d" % len(body)),
        ]
        with contextlib.suppress(OSError):
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})


class _Observer:
    """The counters of one response, updated as its messages pass."""

    __slots__ = (
        "bytes",
        "complete",
        "disconnected",
        "endpoint",
        "error",
        "error_body",
        "events",
        "first",
        "middleware",
        "mode",
        "scope",
        "send_to",
        "started",
        "status",
        "stream",
    )

    def __init__(self, middleware: MetricsMiddleware, scope: Scope, send: Send) -> None:
        self.middleware = middleware
        self.scope = scope
        self.send_to = send
        self.started = time.perf_counter()
        self.status = 0
        self.stream = False
        self.mode = ""
        self.endpoint = ""
        self.first: float | None = None
        self.events = 0
        self.bytes = 0
        self.complete = False
        self.disconnected = False
        self.error: str | None = None
        self.error_body: list[bytes] | None = None

    def receive_from(self, receive: Receive) -> Receive:
        async def observed() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and not self.complete:
                self.disconnected = True
            return message

        return observed

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body":
            body: bytes = message.get("body", b"")
            if body:
                self.bytes += len(body)
                if self.stream:
                    self._count_events(body)
                elif self.error_body is not None:
                    self._keep_error_body(body)
            if not message.get("more_body", False):
                self._complete(body)
        elif message["type"] == "http.response.start":
            self._start(message)
        try:
            await self.send_to(message)
        except OSError:
            # ASGI 2.4 servers report a client that left this way.
            self.disconnected = True
            raise

    def _count_events(self, body: bytes) -> None:
        if body == _HEARTBEAT:
            return
        events = body.count(b"\n\n")
        if self.first is None:
            if body.startswith(b"retry: "):
                end = body.find(b"\n\n")
                if b"\n" not in body[:end]:
                    events -= 1  # the retry block that opens a stream is not an event
            if events:
                self._first_event()
        self.events += events

    def _first_event(self) -> None:
        seconds = time.perf_counter() - self.started
        self.first = seconds
        self.middleware.sink.first_event(self.endpoint, self.mode, seconds)

    def _start(self, message: Message) -> None:
        self.status = status = int(message["status"])
        stream = False
        for name, value in message.get("headers", ()):
            if name.lower() == b"content-type":
                stream = value.startswith(b"text/event-stream")
                break
        self.stream = stream
        mode = self.scope.get("asgistream.mode")
        self.mode = str(mode) if mode is not None else ("stream" if stream else "batch")
        self.endpoint = self.middleware.endpoint(self.scope)
        if status >= 400 and not stream:
            self.error_body = []
        self.middleware.sink.response_started(self.endpoint, self.mode, stream)

    def _keep_error_body(self, body: bytes) -> None:
        assert self.error_body is not None
        if sum(map(len, self.error_body)) + len(body) > _MAX_ERROR_BODY:
            self.error_body = None
            self.error = f"http_{self.status}"
        else:
            self.error_body.append(body)

    def _complete(self, last: bytes) -> None:
        self.complete = True
        if self.stream:
            at = last.rfind(_ERROR_EVENT)
            if at >= 0:
                start = at + len(_ERROR_EVENT)
                self.error = _error_type(last[start : last.find(b"\n", start)]) or "error"
            return
        if self.first is None and self.status < 400:
            self.events = 1
            self._first_event()
        if self.error_body is not None:
            self.error = _error_type(b"".join(self.error_body)) or f"http_{self.status}"
        elif self.status >= 400 and self.error is None:
            self.error = f"http_{self.status}"

    def finish(self, exception: str | None, *, cancelled: bool = False) -> None:
        if not self.complete and exception is None and not cancelled:
            # The app returned without completing the response: the client was gone.
            self.disconnected = True
        if not self.status:
            self.endpoint = self.middleware.endpoint(self.scope)
            mode = self.scope.get("asgistream.mode")
            self.mode = "" if mode is None else str(mode)
        self.middleware.sink.response_finished(
            ResponseRecord(
                endpoint=self.endpoint,
                mode=self.mode,
                status=self.status,
                stream=self.stream,
                duration=time.perf_counter() - self.started,
                events=self.events,
                bytes=self.bytes,
                error=exception or self.error,
                disconnected=self.disconnected,
            )
        )


def _error_type(data: bytes) -> str | None:
    """The ``error.type`` of an asgistream error body, if it has a short one."""
    try:
        value = orjson.loads(data)
        kind = value["error"]["type"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    # A label value: bounded, so an odd body cannot blow up the metric's cardinality.
    return kind if isinstance(kind, str) and 0 < len(kind) <= 64 else None
