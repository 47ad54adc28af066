"""Micro-benchmarks of the hot paths, against the equivalent in sse-starlette, Starlette and
FastAPI. Run by ``make bench`` (``python -m benchmarks``) with ``--benchmark-json``; the
smoke test runs them once each with ``--benchmark-disable``.

Every async body here completes without suspending, so it is driven by hand (``_drive``)
instead of by an event loop whose overhead would blur the differences.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

import orjson
import pytest
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse as FastAPIJSONResponse
from fastapi.sse import ServerSentEvent as FastAPIEvent
from fastapi.sse import format_sse_event
from sse_starlette import ServerSentEvent as SSEStarletteEvent
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse as StarletteJSONResponse

from asgistream import App, Event, Mode, Request, as_list, negotiate
from asgistream.batch import collect
from asgistream.middleware.metrics import MetricsMiddleware
from asgistream.middleware.prometheus import PrometheusSink
from asgistream.negotiation import negotiate_scope
from asgistream.sse import encode_id_data
from benchmarks.apps.common import BATCH_SIZE, item

ITEM = item(7)
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"


def _drive(coroutine: Coroutine[Any, Any, Any]) -> Any:
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("the benchmarked coroutine suspended")


async def _items() -> AsyncIterator[Any]:
    for i in range(BATCH_SIZE):
        yield item(i)


# -- SSE encoding: one event with an id and JSON data --------------------------------------

sse = pytest.mark.benchmark(group="SSE encoding (id + JSON data)")


@sse
def test_sse_asgistream(benchmark: Any) -> None:
    """What asgistream's stream does for a plain item (ids on)."""
    assert benchmark(encode_id_data, 7, ITEM).startswith(b"id: 7\ndata: {")


@sse
def test_sse_asgistream_event(benchmark: Any) -> None:
    """asgistream's public ``Event(...).encode()``."""
    assert benchmark(lambda: Event(ITEM, id=7).encode()).startswith(b"id: 7\ndata: {")


@sse
def test_sse_starlette(benchmark: Any) -> None:
    """sse-starlette: the data serialised by the caller, then ``ServerSentEvent.encode``."""
    result = benchmark(lambda: SSEStarletteEvent(orjson.dumps(ITEM).decode(), id="7").encode())
    assert result.startswith(b"id: 7")


@sse
def test_sse_fastapi(benchmark: Any) -> None:
    """fastapi.sse: the model, ``jsonable_encoder`` + ``json.dumps``, ``format_sse_event``."""

    def encode() -> bytes:
        event = FastAPIEvent(data=ITEM, id="7")
        data = json.dumps(jsonable_encoder(event.data))
        return format_sse_event(data_str=data, id=event.id)

    assert b"data: {" in benchmark(encode)


@sse
def test_sse_raw(benchmark: Any) -> None:
    """The floor: one %-format around orjson."""
    assert benchmark(lambda: b"id: %d\ndata: %b\n\n" % (7, orjson.dumps(ITEM))).startswith(b"id")


# -- Accept parsing: deciding stream or batch for one request -------------------------------

accept = pytest.mark.benchmark(group="Accept: choose stream or batch")


def _scope(value: str) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1"), (b"user-agent", b"bench"), (b"accept", value.encode())]
    return {"type": "http", "query_string": b"", "headers": headers}


@accept
def test_accept_asgistream_sse(benchmark: Any) -> None:
    """RFC 9110 weighing of ``Accept: text/event-stream`` from the ASGI scope."""
    assert benchmark(lambda: negotiate_scope(_scope("text/event-stream"))) is Mode.STREAM


@accept
def test_accept_asgistream_browser(benchmark: Any) -> None:
    """RFC 9110 weighing of a browser's long ``Accept`` header."""
    assert benchmark(negotiate, b"", BROWSER_ACCEPT) is Mode.BATCH


@accept
def test_accept_starlette_substring(benchmark: Any) -> None:
    """The seeds' way on Starlette/FastAPI: a substring test on ``request.headers`` (it
    ignores q-values, so ``text/event-stream;q=0`` still streams)."""

    def wants_stream() -> bool:
        return "text/event-stream" in StarletteRequest(_scope("text/event-stream")).headers.get(
            "accept", ""
        )

    assert benchmark(wants_stream)


# -- Batch collection: 100 items from an async generator into one JSON body ---------------

batch = pytest.mark.benchmark(group="Batch: 100 items to a JSON body")


@batch
def test_batch_asgistream(benchmark: Any) -> None:
    """asgistream's ``collect`` with the default reducer (``{"items": [...]}``)."""
    body = benchmark(lambda: _drive(collect(_items(), as_list()())))
    assert len(orjson.loads(body)["items"]) == BATCH_SIZE


async def _events() -> AsyncIterator[Any]:
    for i in range(BATCH_SIZE):
        yield Event(item(i), id=i)


@batch
def test_batch_asgistream_events(benchmark: Any) -> None:
    """The same with ``Event(item, id=i)`` items, as the demo's ``/items`` yields them
    (building the events included)."""
    body = benchmark(lambda: _drive(collect(_events(), as_list()())))
    assert orjson.loads(body)["items"][1] == item(1)


async def _orjson_body() -> bytes:
    return orjson.dumps({"items": [i async for i in _items()]})


@batch
def test_batch_raw_orjson(benchmark: Any) -> None:
    """The floor, and what FastAPI with an orjson response does: a list, then orjson."""
    assert len(orjson.loads(benchmark(lambda: _drive(_orjson_body())))["items"]) == BATCH_SIZE


async def _starlette_body() -> bytes | memoryview:
    return StarletteJSONResponse({"items": [i async for i in _items()]}).body


@batch
def test_batch_starlette(benchmark: Any) -> None:
    """Starlette's ``JSONResponse`` (stdlib ``json``)."""
    assert len(orjson.loads(benchmark(lambda: _drive(_starlette_body())))["items"]) == BATCH_SIZE


async def _fastapi_body() -> bytes | memoryview:
    return FastAPIJSONResponse(jsonable_encoder({"items": [i async for i in _items()]})).body


@batch
def test_batch_fastapi_default(benchmark: Any) -> None:
    """FastAPI's default for a returned dict: ``jsonable_encoder``, then ``JSONResponse``."""
    assert len(orjson.loads(benchmark(lambda: _drive(_fastapi_body())))["items"]) == BATCH_SIZE


# -- Metrics: what MetricsMiddleware adds to a response ------------------------------------

metrics = pytest.mark.benchmark(group="Metrics: one 100-event stream, in process")


def _stream_app() -> App:
    app = App()

    @app.dual("/s", default=Mode.STREAM)
    async def stream(request: Request) -> AsyncIterator[Any]:
        for i in range(BATCH_SIZE):
            yield item(i)

    return app


STREAM_APP = _stream_app()


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _serve(loop: asyncio.AbstractEventLoop, app: Any) -> int:
    """One request through ``app`` on a persistent loop; returns the bytes sent."""
    sent: list[int] = []
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/s",
        "query_string": b"",
        "headers": [(b"accept", b"text/event-stream")],
        "root_path": "",
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(len(message.get("body", b"")))

    loop.run_until_complete(app(scope, receive, send))
    return sum(sent)


@metrics
def test_metrics_off(benchmark: Any, loop: asyncio.AbstractEventLoop) -> None:
    """The stream alone (the loop's own cost per request included, as in the next one)."""
    assert benchmark(_serve, loop, STREAM_APP) > 0


@metrics
def test_metrics_on(benchmark: Any, loop: asyncio.AbstractEventLoop) -> None:
    """The same stream through ``MetricsMiddleware`` with a ``PrometheusSink``."""
    app = MetricsMiddleware(STREAM_APP, sink=PrometheusSink())
    assert benchmark(_serve, loop, app) > 0
