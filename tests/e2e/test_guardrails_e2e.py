"""The limiter and the metrics over real HTTP: uvicorn, httpx, raw sockets, a Prometheus scrape."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import httpx_sse
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e import sockets
from tests.helpers import wait_for
from tests.server import Server, serve

SSE = {"Accept": "text/event-stream"}


@pytest.fixture
def guard() -> Iterator[Server]:
    with serve("tests.apps.guard_app:app") as server:
        yield server


def scrape(server: Server) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = httpx.get(f"{server.url}/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def limits(server: Server) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = httpx.get(f"{server.url}/_limits", timeout=10).json()
    return result


async def until_waiting(server: Server, count: int) -> None:
    for _ in range(500):  # 5 s at most
        if limits(server)["app"]["waiting"] == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never {count} waiting: {limits(server)}")


def test_streams_hold_units_for_their_whole_life_and_overflow_gets_503(guard: Server) -> None:
    async def main() -> None:
        # Two streams of weight 2 take all 4 units and keep them while they stay open.
        opened = [await sockets.open_stream(guard.port, "/hold") for _ in range(2)]
        try:
            for reader, _ in opened:
                await asyncio.wait_for(reader.readuntil(b"held\n\n"), 5)
            assert limits(guard)["app"] == {"in_use": 4, "waiting": 0}
            samples = scrape(guard)
            assert value(samples, "asgistream_active_streams", endpoint="/hold") == 2
            async with httpx.AsyncClient(base_url=guard.url, timeout=10) as client:
                started = time.monotonic()
                batch, stream = await asyncio.gather(
                    client.get("/items"), client.get("/items", headers=SSE)
                )
                waited = time.monotonic() - started
            for r in (batch, stream):
                assert r.status_code == 503
                assert r.headers["retry-after"] == "2"
                assert r.json()["error"]["type"] == "overloaded"
                assert r.json()["error"]["reason"] == "timeout"
            assert 0.45 < waited < 3, waited
            # A queued client that leaves gives up its place at once.
            reader, writer = await sockets.open_stream(guard.port, "/items")
            await until_waiting(guard, 1)
            await sockets.close(writer)
            await asyncio.sleep(0.1)
            assert limits(guard)["app"] == {"in_use": 4, "waiting": 0}
            # One stream ends: its two units let a batch and then a stream in.
            await sockets.close(opened.pop()[1])
            async with httpx.AsyncClient(base_url=guard.url, timeout=10) as client:
                assert (await client.get("/items?n=2")).json() == {"items": [{"i": 0}, {"i": 1}]}
                async with httpx_sse.aconnect_sse(
                    client, "GET", "/items?n=2&slow=1", headers=dict(SSE)
                ) as source:
                    assert [e.json() async for e in source.aiter_sse()] == [{"i": 0}, {"i": 1}]
        finally:
            for _, writer in opened:
                await sockets.close(writer)

    asyncio.run(main())
    deadline = time.monotonic() + 5
    while limits(guard)["app"]["in_use"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert limits(guard)["app"] == {"in_use": 0, "waiting": 0}

    samples = scrape(guard)
    print(f"\nscrape after the run: {len(samples)} samples")
    assert value(samples, "asgistream_active_streams") == 0
    assert value(samples, "asgistream_client_disconnects_total", endpoint="/hold") == 2
    rejected = value(
        samples, "asgistream_limiter_rejections_total", limiter="app", reason="timeout"
    )
    assert rejected == 2
    assert value(samples, "asgistream_limiter_wait_seconds_count", limiter="app") == 3
    stream = {"endpoint": "/items", "mode": "stream"}
    assert value(samples, "asgistream_events_total", **stream) == 2
    assert value(samples, "asgistream_time_to_first_event_seconds_count", **stream) == 1
    assert value(samples, "asgistream_errors_total", type="overloaded") == 2
    assert value(samples, "asgistream_responses_total", status="503") == 2


def test_endpoint_limiter_rejects_at_once_and_labels_its_route(guard: Server) -> None:
    with httpx.Client(base_url=guard.url, timeout=10) as client:
        with httpx_sse.connect_sse(client, "GET", "/report?hold=1", headers=dict(SSE)) as source:
            events = source.iter_sse()  # kept: a dropped iterator closes the response
            assert next(events).data == "report"
            assert limits(guard)["report"] == {"in_use": 1, "waiting": 0}
            started = time.monotonic()
            r = client.get("/report")
            assert time.monotonic() - started < 0.5  # queue_timeout=0: no waiting at all
            assert r.status_code == 503 and r.headers["retry-after"] == "5"
        # The stream gives its unit back once the server has seen the client leave.
        assert wait_for(lambda: limits(guard)["report"] == {"in_use": 0, "waiting": 0})
        assert client.get("/report").json() == {"items": ["report"]}
    assert limits(guard)["report"] == {"in_use": 0, "waiting": 0}
    samples = scrape(guard)
    assert (
        value(samples, "asgistream_limiter_rejections_total", limiter="report", endpoint="/report")
        == 1
    )


def test_shutdown_refuses_queued_requests_at_once(guard: Server) -> None:
    async def main() -> tuple[list[bytes], float]:
        opened = [await sockets.open_stream(guard.port, "/hold") for _ in range(2)]
        for reader, _ in opened:
            await asyncio.wait_for(reader.readuntil(b"held\n\n"), 5)
        queued = await sockets.open_stream(guard.port, "/items")
        await until_waiting(guard, 1)
        took = await asyncio.to_thread(guard.stop)
        tails = [await asyncio.wait_for(r.read(), 5) for r, _ in [*opened, queued]]
        for _, writer in [*opened, queued]:
            await sockets.close(writer)
        return tails, took

    tails, took = asyncio.run(main())
    assert took < 3
    assert all(b'"type":"shutdown"' in t for t in tails[:2])
    assert b"503 Service Unavailable" in tails[2] and b'"reason":"shutdown"' in tails[2]
