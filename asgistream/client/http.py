"""The clients: read a stream of events and resume it across failures, or fetch it whole.

:class:`Client` and :class:`AsyncClient` do the same over httpx, blocking or with ``await``;
the decisions they share (what to send, which events to deliver, when to retry and how long
to wait) live in one place, :class:`_Session`, which does no I/O.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import anyio
import httpx
import orjson

from .errors import ClientError, ResumeError, RetryError, StatusError, StreamError, error_event
from .events import EventParser, ServerSentEvent
from .retry import DEFAULT_RETRY, RetryPolicy, parse_retry_after

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_READ_TIMEOUT",
    "DONE",
    "AsyncClient",
    "Client",
]

DEFAULT_READ_TIMEOUT = 60.0
"""Seconds one read may wait for more bytes: keep it above the server's heartbeat interval."""

DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds to connect (and to write the request)."""

DONE = "[DONE]"
"""The data of the OpenAI-style event that ends a stream."""

logger = logging.getLogger("asgistream.client")

# What a lost connection looks like: reset, refused, timed out, or a body cut short (an
# incomplete chunked body raises RemoteProtocolError, so it is never taken for a clean end).
_DROPPED = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)

_Failure = httpx.HTTPError | ClientError

_INTERRUPTIONS = frozenset({"shutdown", "unavailable"})
"""The types of ``error`` events that end a stream for now, not for good: a server shutting
down, or a 503 (its shared store unreachable) after the stream started."""


@dataclass(frozen=True, slots=True)
class _Options:
    headers: httpx.Headers
    retry: RetryPolicy | None
    timeout: httpx.Timeout
    follow: bool
    replay: bool
    done: str | None


class _Session:
    """One stream (or one batch fetch) across its connections; does no I/O."""

    def __init__(
        self,
        options: _Options,
        headers: Mapping[str, str] | None = None,
        last_event_id: str | None = None,
    ) -> None:
        self.options = options
        self.headers = httpx.Headers(options.headers)
        self.headers.update(headers or {})
        if last_event_id is None:
            last_event_id = self.headers.get("last-event-id", "")
        self.last_event_id = last_event_id
        self.retry_ms: int | None = None
        self.failures = 0
        self.delivered = 0
        self.fresh = 0
        self.stopped = False
        self.done = False
        self.interruption: StreamError | None = None
        self.parser = EventParser(last_event_id)

    def stream_headers(self) -> httpx.Headers:
        headers = self.headers.copy()
        headers["Accept"] = "text/event-stream"
        headers["Cache-Control"] = "no-cache"
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        elif "last-event-id" in headers:
            del headers["last-event-id"]
        return headers

    def batch_headers(self) -> httpx.Headers:
        headers = self.headers.copy()
        headers["Accept"] = "application/json"
        return headers

    def start(self, response: httpx.Response) -> bool:
        """Whether to read this successful response as the stream (a 204 says: no more)."""
        if response.status_code == 204:
            return False
        content_type = response.headers.get("content-type", "")
        if content_type.partition(";")[0].strip().lower() != "text/event-stream":
            raise ClientError(
                f"expected an event stream, got {content_type or 'no content type'!r} "
                f"from {response.request.url}"
            )
        self.parser = EventParser(self.last_event_id)
        self.stopped = False
        return True

    def feed(self, chunk: bytes) -> Iterator[ServerSentEvent]:
        """The events to deliver from ``chunk``; raises :class:`StreamError` in their order."""
        for event in self.parser.feed(chunk):
            self.last_event_id = event.id
            if event.event == "message":
                if event.data == self.options.done:
                    self.stopped = self.done = True
                    return
            elif event.event == "error":
                error = error_event(event.data)
                if error is not None:
                    if error["type"] in _INTERRUPTIONS:
                        # The server is going away, or its store is briefly unreachable:
                        # come back (by the retry policy), from here.
                        self.stopped = True
                        self.interruption = StreamError(error)
                        return
                    raise StreamError(error)
            self.delivered += 1
            self.fresh += 1
            yield event

    def rejected(self, response: httpx.Response) -> StatusError:
        """The error of an error status if it is worth another try; raises it otherwise."""
        error = StatusError(
            response.status_code,
            _body(response),
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
        policy = self.options.retry
        if policy is None or response.status_code not in policy.statuses:
            raise error
        return error

    def fetched(self, response: httpx.Response) -> Any:
        """The JSON body of a successful batch response."""
        if response.status_code == 204 or not response.content:
            return None
        content_type = response.headers.get("content-type", "")
        if "json" not in content_type.partition(";")[0].lower():
            raise ClientError(
                f"expected a JSON body, got {content_type or 'no content type'!r} from "
                f"{response.request.url} (does the URL ask for a stream with ?format or ?stream?)"
            )
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise ClientError(f"the body from {response.request.url} is not JSON: {exc}") from None

    def next_delay(self, failure: _Failure | None) -> float | None:
        """Seconds to wait before connecting again, or ``None`` when the stream is over.

        Raises :class:`RetryError` or :class:`ResumeError` when it must not go on.
        """
        if self.done:
            return None
        if self.interruption is not None:
            failure, self.interruption = self.interruption, None
        elif not self.stopped:
            # The connection ended (cleanly or not) after every complete event was delivered:
            # the id of the last complete block is where to resume.
            self.last_event_id = self.parser.last_event_id
        if self.parser.retry is not None:
            self.retry_ms = self.parser.retry
        if self.fresh:
            self.failures = 0
        self.fresh = 0
        policy = self.options.retry
        base = None if self.retry_ms is None else self.retry_ms / 1000
        if failure is None:
            if not self.options.follow:
                return None
            # A clean end, and the caller follows the stream as a browser does.
            self._check_resumable(None)
            return (policy or DEFAULT_RETRY).delay(1, base=base)
        self.failures += 1
        if policy is None:
            raise failure
        self._check_resumable(failure)
        if policy.gives_up(self.failures):
            raise RetryError(self.failures, failure) from failure
        at_least = failure.retry_after if isinstance(failure, StatusError) else None
        delay = policy.delay(self.failures, base=base, at_least=at_least or 0.0)
        logger.info(
            "reconnecting in %.2f s (failure %d in a row, Last-Event-ID %r): %r",
            delay,
            self.failures,
            self.last_event_id,
            failure,
        )
        return delay

    def _check_resumable(self, failure: _Failure | None) -> None:
        if self.delivered and not self.last_event_id and not self.options.replay:
            raise ResumeError(
                f"the connection ended after {self.delivered} events that carried no id to "
                "resume from; reconnecting would repeat them (pass replay=True to allow it)"
            ) from failure

    def batch_delay(self, failure: _Failure) -> float:
        """Seconds to wait before fetching again; raises :class:`RetryError` to give up."""
        delay = self.next_delay(failure)
        assert delay is not None
        return delay


class _Base:
    def __init__(
        self,
        *,
        headers: Mapping[str, str] | None,
        retry: RetryPolicy | None,
        read_timeout: float | None,
        connect_timeout: float,
        follow: bool,
        replay: bool,
        done: str | None,
    ) -> None:
        timeout = httpx.Timeout(connect_timeout, read=read_timeout)
        self._options = _Options(httpx.Headers(headers), retry, timeout, follow, replay, done)


class Client(_Base):
    """Read dual-mode endpoints as events, items or one batch body, blocking.

    ``base_url`` and ``headers`` apply to every request (``http``: use this httpx client
    instead of making one; it is not closed). ``retry`` says when to reconnect after a lost
    connection or a retryable status (``None``: never; failures are raised as they come).
    ``read_timeout`` bounds each read, never the whole stream: silence longer than that
    counts as a lost connection. ``follow``: after a stream ends cleanly, reconnect (as a
    browser does) instead of ending. ``replay``: allow reconnecting without a
    ``Last-Event-ID`` after events arrived, which starts the stream over. ``done``: the data
    of the event that ends a stream (``None``: no event does).
    """

    def __init__(
        self,
        base_url: str = "",
        *,
        headers: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        read_timeout: float | None = DEFAULT_READ_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        follow: bool = False,
        replay: bool = False,
        done: str | None = DONE,
        http: httpx.Client | None = None,
    ) -> None:
        super().__init__(
            headers=headers,
            retry=retry,
            read_timeout=read_timeout,
            connect_timeout=connect_timeout,
            follow=follow,
            replay=replay,
            done=done,
        )
        if http is not None and base_url:
            raise ValueError("give base_url to the httpx client you pass, not to both")
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(base_url=base_url)

    def events(
        self,
        url: str,
        *,
        method: str = "GET",
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        last_event_id: str | None = None,
    ) -> Iterator[ServerSentEvent]:
        """The events of the stream at ``url``, each exactly once, reconnecting as needed.

        Ends after a clean end of the stream, a ``data: [DONE]`` event or a 204; raises
        :class:`StatusError` for a final error status, :class:`StreamError` for an ``error``
        event (but ``shutdown`` and ``unavailable``, after which it resumes), :class:`RetryError`
        when retries run out.
        """
        session = _Session(self._options, headers, last_event_id)
        while True:
            failure: _Failure | None = None
            try:
                with self._http.stream(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers=session.stream_headers(),
                    timeout=self._options.timeout,
                    follow_redirects=True,
                ) as response:
                    if response.is_success:
                        if not session.start(response):
                            return
                        for chunk in response.iter_bytes():
                            yield from session.feed(chunk)
                            if session.stopped:
                                break
                    else:
                        response.read()
                        failure = session.rejected(response)
            except _DROPPED as exc:
                failure = exc
            delay = session.next_delay(failure)
            if delay is None:
                return
            time.sleep(delay)

    def fetch(
        self,
        url: str,
        *,
        method: str = "GET",
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """The endpoint's batch answer: its JSON body, decoded (``None`` for a 204).

        Retries lost connections and retryable statuses like :meth:`events`.
        """
        session = _Session(self._options, headers)
        while True:
            failure: _Failure
            try:
                response = self._http.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers=session.batch_headers(),
                    timeout=self._options.timeout,
                    follow_redirects=True,
                )
            except _DROPPED as exc:
                failure = exc
            else:
                if response.is_success:
                    return session.fetched(response)
                failure = session.rejected(response)
            time.sleep(session.batch_delay(failure))

    def items(
        self,
        url: str,
        *,
        batch: bool = False,
        key: str | None = "items",
        decode: bool = True,
        method: str = "GET",
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[Any]:
        """The endpoint's items, streamed (``batch=False``) or fetched in one response.

        A stream gives each event's data, decoded as JSON unless ``decode`` is false; a batch
        gives the list under ``key`` of the body (``None``: the body is the list), as
        asgistream's ``as_list(key)`` builds it. JSON items are the same either way.
        """
        if batch:
            body = self.fetch(url, method=method, params=params, json=json, headers=headers)
            yield from _batch_items(body, key)
            return
        for event in self.events(url, method=method, params=params, json=json, headers=headers):
            yield event.json() if decode else event.data

    def close(self) -> None:
        """Close the connections (of the httpx client this client made)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient(_Base):
    """:class:`Client` with ``await``, on any anyio backend.

    An iteration left early keeps its connection until the iterator is closed: wrap it in
    ``contextlib.aclosing`` to close it at once.
    """

    def __init__(
        self,
        base_url: str = "",
        *,
        headers: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        read_timeout: float | None = DEFAULT_READ_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        follow: bool = False,
        replay: bool = False,
        done: str | None = DONE,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(
            headers=headers,
            retry=retry,
            read_timeout=read_timeout,
            connect_timeout=connect_timeout,
            follow=follow,
            replay=replay,
            done=done,
        )
        if http is not None and base_url:
            raise ValueError("give base_url to the httpx client you pass, not to both")
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(base_url=base_url)

    async def events(
        self,
        url: str,
        *,
        method: str = "GET",
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        last_event_id: str | None = None,
    ) -> AsyncGenerator[ServerSentEvent, None]:
        """As :meth:`Client.events`."""
        session = _Session(self._options, headers, last_event_id)
        while True:
            failure: _Failure | None = None
            try:
                async with self._http.stream(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers=session.stream_headers(),
                    timeout=self._options.timeout,
                    follow_redirects=True,
                ) as response:
                    if response.is_success:
                        if not session.start(response):
                            return
                        async for chunk in response.aiter_bytes():
                            for event in session.feed(chunk):
                                yield event
                            if session.stopped:
                                break
                    else:
                        await response.aread()
                        failure = session.rejected(response)
            except _DROPPED as exc:
                failure = exc
            delay = session.next_delay(failure)
            if delay is None:
                return
            await anyio.sleep(delay)

    async def fetch(
        self,
        url: str,
        *,
        method: str = "GET",
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """As :meth:`Client.fetch`."""
        session = _Session(self._options, headers)
        while True:
            failure: _Failure
            try:
                response = await self._http.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers=session.batch_headers(),
                    timeout=self._options.timeout,
                    follow_redirects=True,
                )
            except _DROPPED as exc:
                failure = exc
            else:
                if response.is_success:
                    return session.fetched(response)
                failure = session.rejected(response)
            await anyio.sleep(session.batch_delay(failure))

    async def items(
        self,
        url: str,
        *,
        batch: bool = False,
        key: str | None = "items",
        decode: bool = True,
        method: str = "GET",
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncGenerator[Any, None]:
        """As :meth:`Client.items`."""
        if batch:
            body = await self.fetch(url, method=method, params=params, json=json, headers=headers)
            for item in _batch_items(body, key):
                yield item
            return
        events = self.events(url, method=method, params=params, json=json, headers=headers)
        try:
            async for event in events:
                yield event.json() if decode else event.data
        finally:
            await events.aclose()

    async def aclose(self) -> None:
        """Close the connections (of the httpx client this client made)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _batch_items(body: Any, key: str | None) -> list[Any]:
    items = body.get(key) if key is not None and isinstance(body, dict) else body
    if not isinstance(items, list):
        where = "the body" if key is None else f"the body's {key!r}"
        raise ClientError(f"expected a list of items in {where}, got {type(items).__name__}")
    return items


def _body(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.text
