"""The metrics middleware in process: what it counts, and the Prometheus sink it feeds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgistream import App, HTTPError, Request, StreamOptions
from asgistream._types import Message, Receive, Scope, Send
from asgistream.middleware.metrics import MetricsMiddleware, endpoint_label
from asgistream.middleware.prometheus import PrometheusSink
from examples import demo
from tests.helpers import FakeClient, RecordingSink

app = App()


@app.dual("/items/{kind}", stream=StreamOptions(retry=1000, heartbeat=0.03))
async def items(request: Request) -> AsyncIterator[Any]:
    await anyio.sleep(float(request.query.get("wait", "0")))
    for i in range(3):
        yield {"i": i}


@app.dual("/fail")
async def fail(request: Request) -> AsyncIterator[Any]:
    yield 1
    raise RuntimeError("secret")


@app.dual("/forever")
async def forever(request: Request) -> AsyncIterator[Any]:
    yield "hello"
    await anyio.sleep_forever()


@app.route("/conflict")
async def conflict(request: Request) -> None:
    raise HTTPError(409, "no", type="conflict")


async def call(
    asgi: Any,
    path: str,
    *,
    query: bytes = b"",
    accept: bytes = b"",
    leave_after: float | None = None,
) -> list[Message]:
    """One GET through ``asgi``; with ``leave_after``, the client disconnects after that long."""
    client = FakeClient()
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": query,
        "headers": [(b"accept", accept)] if accept else [],
    }
    with anyio.fail_after(5):
        if leave_after is None:
            await asgi(scope, client.receive, client.send)
            return client.messages
        async with anyio.create_task_group() as group:
            group.start_soon(asgi, scope, client.receive, client.send)
            await anyio.sleep(leave_after)
            client.disconnect()
    return client.messages


def body_of(sent: list[Message]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_stream_events_bytes_first_event_and_heartbeats() -> None:
    sink = RecordingSink()
    asgi = MetricsMiddleware(app, sink=sink)
    sent = anyio.run(lambda: call(asgi, "/items/a", query=b"wait=0.1", accept=b"text/event-stream"))
    body = body_of(sent)
    assert body.startswith(b"retry: 1000\n\n") and b":\n\n" in body  # a heartbeat went first
    (record,) = sink.records
    assert record.endpoint == "/items/{kind}" and record.mode == "stream" and record.stream
    assert record.events == 3  # neither the retry block nor the heartbeat counts
    assert record.bytes == len(body)
    assert record.status == 200 and record.error is None and not record.disconnected
    assert sink.started == [("/items/{kind}", "stream", True)]
    ((_, _, first),) = sink.first
    assert 0.1 <= first <= record.duration


def test_batch_counts_one_event_and_its_bytes() -> None:
    sink = RecordingSink()
    sent = anyio.run(lambda: call(MetricsMiddleware(app, sink=sink), "/items/b"))
    (record,) = sink.records
    assert (record.mode, record.stream, record.events) == ("batch", False, 1)
    assert record.bytes == len(body_of(sent)) and record.error is None
    assert len(sink.first) == 1


def test_errors_are_typed() -> None:
    sink = RecordingSink()
    asgi = MetricsMiddleware(app, sink=sink)

    async def main() -> None:
        await call(asgi, "/fail", accept=b"text/event-stream")
        await call(asgi, "/fail")
        await call(asgi, "/conflict")
        await call(asgi, "/nowhere")
        await call(asgi, "/items/x", query=b"format=xml")

    anyio.run(main)
    got = [(r.endpoint, r.mode, r.status, r.error, r.events) for r in sink.records]
    assert got == [
        ("/fail", "stream", 200, "internal_error", 2),  # one item, then the error event
        ("/fail", "batch", 500, "internal_error", 0),
        ("/conflict", "batch", 409, "conflict", 0),
        ("<unmatched>", "batch", 404, "not_found", 0),
        ("/items/{kind}", "batch", 400, "invalid_parameter", 0),
    ]


def test_client_disconnect_is_counted_and_exceptions_are_typed() -> None:
    sink = RecordingSink()

    async def main() -> None:
        await call(
            MetricsMiddleware(app, sink=sink),
            "/forever",
            accept=b"text/event-stream",
            leave_after=0.05,
        )

        async def broken(scope: Scope, receive: Receive, send: Send) -> None:
            raise KeyError("x")

        with pytest.raises(KeyError):
            await call(MetricsMiddleware(broken, sink=sink), "/")

    anyio.run(main)
    gone, broken = sink.records
    assert gone.disconnected and gone.events == 1 and gone.error is None
    assert broken.error == "KeyError" and broken.status == 0 and not broken.disconnected


def test_prometheus_sink_exposes_every_metric_at_metrics() -> None:
    sink = PrometheusSink()
    asgi = MetricsMiddleware(app, sink=sink)

    async def main() -> list[Message]:
        await call(asgi, "/items/a", accept=b"text/event-stream")
        await call(asgi, "/items/a")
        await call(asgi, "/fail", accept=b"text/event-stream")
        await call(asgi, "/forever", accept=b"text/event-stream", leave_after=0.05)
        return await call(asgi, "/metrics")

    sent = anyio.run(main)
    assert sent[0]["status"] == 200
    assert dict(sent[0]["headers"])[b"content-type"].startswith(b"text/plain; version=")
    text = body_of(sent).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}

    def value(name: str, **labels: str) -> float:
        for sample in families[name].samples:
            counted = sample.name.endswith(("_total", "_count")) or sample.name == name
            if counted and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
        raise KeyError((name, labels))

    stream = {"endpoint": "/items/{kind}", "mode": "stream"}
    assert value("asgistream_events", **stream) == 3
    assert value("asgistream_events", endpoint="/items/{kind}", mode="batch") == 1
    assert value("asgistream_time_to_first_event_seconds", **stream) == 1
    assert value("asgistream_duration_seconds", **stream) == 1
    assert value("asgistream_active_streams", **stream) == 0
    assert value("asgistream_errors", endpoint="/fail", type="internal_error") == 1
    assert value("asgistream_client_disconnects", endpoint="/forever") == 1
    assert value("asgistream_responses", status="200", **stream) == 1
    assert value("asgistream_sent_bytes", **stream) > 0
    # The scrape itself is not a response of the app.
    assert "/metrics" not in text


def test_each_sink_has_its_own_registry() -> None:
    first, second = PrometheusSink(), PrometheusSink()
    first.events.labels("/a", "stream").inc(5)
    assert (
        second.registry.get_sample_value(
            "asgistream_events_total", {"endpoint": "/a", "mode": "stream"}
        )
        is None
    )
    assert (
        first.registry.get_sample_value(
            "asgistream_events_total", {"endpoint": "/a", "mode": "stream"}
        )
        == 5
    )


def test_endpoint_label_never_uses_the_raw_path() -> None:
    class StarletteRoute:
        path = "/users/{id}"

    assert endpoint_label({"route": "/jobs/{id}", "path": "/jobs/1"}) == "/jobs/{id}"
    assert endpoint_label({"route": StarletteRoute(), "path": "/users/1"}) == "/users/{id}"
    assert endpoint_label({"path": "/random/123"}) == "<unmatched>"


def test_active_streams_gauge_while_streaming() -> None:
    sink = PrometheusSink()
    asgi = MetricsMiddleware(app, sink=sink)
    labels = {"endpoint": "/forever", "mode": "stream"}
    seen: list[float | None] = []

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(
                lambda: call(asgi, "/forever", accept=b"text/event-stream", leave_after=0.1)
            )
            await anyio.sleep(0.05)
            seen.append(sink.registry.get_sample_value("asgistream_active_streams", labels))

    anyio.run(main)
    seen.append(sink.registry.get_sample_value("asgistream_active_streams", labels))
    assert seen == [1.0, 0.0]


def test_the_demo_serves_its_metrics() -> None:
    async def main() -> list[Message]:
        await call(demo.app, "/items", query=b"n=2")
        return await call(demo.app, "/metrics")

    sent = anyio.run(main)
    assert sent[0]["status"] == 200
    samples = body_of(sent).decode().splitlines()
    assert 'asgistream_responses_total{endpoint="/items",mode="batch",status="200"} 1.0' in samples


def test_starlette_adds_it_like_any_of_its_middleware() -> None:
    async def hello(request: StarletteRequest) -> PlainTextResponse:
        return PlainTextResponse("hi")

    sink = RecordingSink()
    starlette = Starlette(routes=[Route("/users/{id}", hello)])
    starlette.add_middleware(MetricsMiddleware, sink=sink)
    sent = anyio.run(lambda: call(starlette, "/users/1"))
    assert body_of(sent) == b"hi"
    (record,) = sink.records
    assert (record.endpoint, record.status, record.events) == ("/users/{id}", 200, 1)
