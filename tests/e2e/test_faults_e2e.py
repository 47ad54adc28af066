"""Faults over real sockets: vanishing clients, frozen readers, failing producers, shutdown
with open streams, slow request bodies. Each test prints the figures it observed (run with
``-s`` to see them)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator

import httpx
import httpx_sse
import pytest

from tests.e2e import sockets
from tests.e2e.conftest import raise_open_files
from tests.server import Server, serve

APP = "tests.apps.faults_app:app"
SSE = {"Accept": "text/event-stream"}


@pytest.fixture(scope="module")
def faults() -> Iterator[Server]:
    raise_open_files()
    with serve(APP) as server:
        yield server


def stats(server: Server) -> dict[str, int]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        result: dict[str, int] = client.get("/_stats").json()
        return result


def settled(server: Server, timeout: float = 15.0) -> dict[str, int]:
    """Wait until every producer finished, no stream is open and the limiter is idle."""
    deadline = time.monotonic() + timeout
    while True:
        s = stats(server)
        idle = s["in_use"] == 0 and s["waiting"] == 0
        if (s["started"] == s["finished"] and s["open_streams"] == 0 and idle) or (
            time.monotonic() > deadline
        ):
            return s
        time.sleep(0.05)


def metric(server: Server, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def test_thousand_clients_disconnecting_at_random_points_leave_nothing(faults: Server) -> None:
    rng = random.Random(5)
    before = settled(faults)
    points: dict[str, int] = {}

    async def one(path: str) -> None:
        point = rng.choice(["queued-or-before-headers", "after-headers", "mid-body", "late"])
        points[point] = points.get(point, 0) + 1
        reader, writer = await sockets.open_stream(faults.port, path)
        try:
            if point != "queued-or-before-headers":
                await asyncio.wait_for(sockets.read_headers(reader), 10)
            if point == "mid-body":
                await asyncio.wait_for(reader.read(rng.randint(1, 30000)), 10)
            await asyncio.sleep(rng.random() * (0.3 if point == "late" else 0.02))
        finally:
            await sockets.close(writer)

    async def main() -> None:
        paths = ["/hot", "/hot?size=4000", "/paced?delay=0.001", "/paced?delay=0.05", "/blocked"]
        for _ in range(4):  # 250 at once against 200 units: some wait in the limiter's queue
            await asyncio.gather(*(one(rng.choice(paths)) for _ in range(250)))

    started = time.monotonic()
    asyncio.run(main())
    took = time.monotonic() - started
    after = settled(faults)
    disconnects = metric(faults, "asgistream_client_disconnects_total")
    print(f"\n1000 disconnecting clients in {took:.1f} s, points {points}")
    print(f"  before {before}\n  after  {after}\n  disconnects counted {disconnects:.0f}")
    assert after["started"] - before["started"] >= 700  # the rest left while queued
    assert after["started"] == after["finished"]
    assert after["open_streams"] == 0
    assert after["in_use"] == 0 and after["waiting"] == 0
    assert after["tasks"] <= before["tasks"] + 2  # a request's own tasks may linger a moment
    assert disconnects >= 900


def test_non_reading_client_for_30_s_keeps_server_memory_flat(faults: Server) -> None:
    async def main() -> list[int]:
        reader, writer = await sockets.open_stream(faults.port, "/hot?size=1000")
        try:
            await sockets.read_headers(reader)
            samples = []
            for _ in range(30):
                await asyncio.sleep(1.0)
                samples.append(faults.rss_kib())
        finally:
            await sockets.close(writer)
        return samples

    samples = asyncio.run(main())
    tail = samples[3:]  # socket buffers fill within the first second or two
    print(f"\nRSS (KiB) each second, non-reading client: {samples}")
    print(f"  after 3 s: min {min(tail)}, max {max(tail)}, spread {max(tail) - min(tail)} KiB")
    assert max(tail) - min(tail) < 4 * 1024, samples
    after = settled(faults)
    assert after["started"] == after["finished"] and after["in_use"] == 0


def test_producers_raising_at_random_points(faults: Server) -> None:
    before = settled(faults)
    errors_before = metric(faults, "asgistream_errors_total", endpoint="/flaky")
    outcomes: dict[str, int] = {}

    async def one(client: httpx.AsyncClient, seed: int) -> None:
        at = seed % 6
        if seed % 5 == 0:  # batch
            r = await client.get(f"/flaky?seed={seed}")
            assert r.status_code == 500, (seed, r.text)
            assert r.json() == {
                "error": {"type": "internal_error", "message": "Internal server error"}
            }
            outcomes["batch 500"] = outcomes.get("batch 500", 0) + 1
            return
        async with httpx_sse.aconnect_sse(
            client, "GET", f"/flaky?seed={seed}", headers=dict(SSE)
        ) as source:
            if at == 0:
                assert source.response.status_code == 500
                body = await source.response.aread()
                assert b"secret" not in body
                outcomes["stream 500 before first event"] = (
                    outcomes.get("stream 500 before first event", 0) + 1
                )
                return
            got = [e async for e in source.aiter_sse()]
        assert [e.event for e in got] == ["message"] * at + ["error"], (seed, got)
        assert got[-1].json() == {
            "error": {"type": "internal_error", "message": "Internal server error"}
        }
        outcomes["stream error event"] = outcomes.get("stream error event", 0) + 1

    async def main() -> None:
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(base_url=faults.url, timeout=10, limits=limits) as client:
            await asyncio.gather(*(one(client, seed) for seed in range(300)))

    started = time.monotonic()
    asyncio.run(main())
    took = time.monotonic() - started
    after = settled(faults)
    errors = metric(faults, "asgistream_errors_total", endpoint="/flaky") - errors_before
    print(f"\n300 failing producers in {took:.1f} s: {outcomes}, errors counted {errors:.0f}")
    assert after["started"] - before["started"] == 300
    assert after["started"] == after["finished"] and after["in_use"] == 0
    assert errors == 300
    with httpx.Client(base_url=faults.url, timeout=10) as client:
        assert client.get("/paced?n=2&delay=0").json() == {"items": [{"i": 0}, {"i": 1}]}


def test_shutdown_with_500_open_streams_tells_every_client() -> None:
    raise_open_files()
    # 300 units for 500 streams: 300 stream, 200 wait in the limiter's queue.
    with serve(APP, env={"FAULTS_CAPACITY": "300"}) as server:

        async def main() -> tuple[list[bytes], float, dict[str, int]]:
            opened = await asyncio.gather(
                *(sockets.open_stream(server.port, "/blocked") for _ in range(500))
            )
            try:
                waited = time.monotonic() + 20
                while time.monotonic() < waited:
                    s = stats(server)
                    if s["waiting"] == 200 and s["open_streams"] == 300:
                        break
                    await asyncio.sleep(0.05)
                took = await asyncio.to_thread(server.stop)
                tails = [await asyncio.wait_for(r.read(), 5) for r, _ in opened]
            finally:
                await asyncio.gather(*(sockets.close(w) for _, w in opened))
            return tails, took, s

        tails, took, before = asyncio.run(main())
    told_stream = sum(b"event: error" in t and b'"type":"shutdown"' in t for t in tails)
    told_queued = sum(
        b"503 Service Unavailable" in t and b'"reason":"shutdown"' in t for t in tails
    )
    print(f"\nshutdown with 500 open: exit took {took:.2f} s; state before {before}")
    print(f"  {told_stream} streams ended with event: error shutdown, {told_queued} queued got 503")
    assert before["open_streams"] == 300 and before["waiting"] == 200
    assert took < 5, took
    assert told_stream == 300 and told_queued == 200
    for tail in tails:
        assert tail.endswith(b"0\r\n\r\n") or b"content-length" in tail.lower()


def test_slow_request_bodies(faults: Server) -> None:
    body = b'["a","b","c","e"]'

    async def trickle(stall_after: int | None) -> tuple[bytes, float, dict[str, int]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", faults.port)
        started = time.monotonic()
        try:
            writer.write(
                b"POST /upload HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
                b"Connection: close\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            )
            for i, byte in enumerate(body):
                if stall_after is not None and i == stall_after:
                    # Stall for 1.5 s, then give up without finishing the body.
                    await asyncio.sleep(1.5)
                    during = await asyncio.to_thread(stats, faults)
                    return b"", time.monotonic() - started, during
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)
            answer = await asyncio.wait_for(reader.read(), 10)
            return answer, time.monotonic() - started, {}
        finally:
            await sockets.close(writer)

    answer, took, _ = asyncio.run(trickle(None))
    print(f"\nbody of {len(body)} bytes at one byte per 50 ms: answered after {took:.2f} s")
    assert b"200 OK" in answer
    assert [line for line in answer.split(b"\n") if line.startswith(b"data:")] == [
        b"data: a",
        b"data: b",
        b"data: c",
        b"data: e",
    ]
    before = settled(faults)
    gone_before = metric(faults, "asgistream_client_disconnects_total", endpoint="/upload")
    # Half a body, then silence: the server waits (no body read timeout), holding a unit...
    _, took, during = asyncio.run(trickle(len(body) // 2))
    assert during["in_use"] == 1
    # ...until the client leaves: then the request ends before its producer ever ran.
    after = settled(faults, timeout=5)
    gone = metric(faults, "asgistream_client_disconnects_total", endpoint="/upload") - gone_before
    print(f"  half a body, stalled {took:.2f} s: during {during}; after leaving {after}")
    assert after["in_use"] == 0 and after["started"] == before["started"]
    assert gone == 1
