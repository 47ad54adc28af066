"""The core package end to end: uvicorn on a real socket, real clients."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import httpx_sse

from tests.e2e import sockets
from tests.helpers import wait_for
from tests.server import Server, serve

SSE = {"Accept": "text/event-stream"}
JSON = {"Accept": "application/json"}


def events(
    client: httpx.Client, url: str, headers: dict[str, str] | None = None
) -> list[httpx_sse.ServerSentEvent]:
    # connect_sse writes Accept into the dict it is given: never hand it a shared one.
    with httpx_sse.connect_sse(client, "GET", url, headers=dict(headers or {})) as source:
        assert source.response.status_code == 200
        return list(source.iter_sse())


def stats(client: httpx.Client) -> dict[str, int]:
    result: dict[str, int] = client.get("/_stats").json()
    return result


def all_finished(client: httpx.Client) -> bool:
    s = stats(client)
    return s["started"] == s["finished"] and s["open_streams"] == 0


# -- the demo, as the README shows it ---------------------------------------------------


def test_demo_items_batch_and_stream(demo_server: Server) -> None:
    with httpx.Client(base_url=demo_server.url, timeout=10) as client:
        batch = client.get("/items?n=3", headers=JSON)
        assert batch.status_code == 200
        assert batch.headers["content-type"] == "application/json"
        assert batch.headers["vary"] == "Accept"
        assert batch.json() == {"items": [{"id": i, "value": f"item-{i}"} for i in range(3)]}
        for url, headers in (
            ("/items?n=3", SSE),
            ("/items?n=3&stream=true", {}),
            ("/items?n=3&format=stream", {}),
            ("/items?n=3&format=stream", JSON),
        ):
            got = events(client, url, headers=headers)
            assert [(e.id, e.json()) for e in got] == [
                (str(i), {"id": i, "value": f"item-{i}"}) for i in range(3)
            ], url


def test_demo_resumes_after_last_event_id(demo_server: Server) -> None:
    with httpx.Client(base_url=demo_server.url, timeout=10) as client:
        got = events(client, "/items?n=6", headers={**SSE, "Last-Event-ID": "3"})
        assert [e.id for e in got] == ["4", "5"]
        bad = client.get("/items?n=6", headers={**SSE, "Last-Event-ID": b"x\xff"})
        assert bad.status_code == 400
        assert bad.json()["error"]["type"] == "invalid_last_event_id"


def test_demo_ticker(demo_server: Server) -> None:
    with httpx.Client(base_url=demo_server.url, timeout=10) as client:
        endless = client.get("/ticker", headers=JSON)
        assert endless.status_code == 400
        assert "stream" in endless.json()["error"]["message"]
        assert client.get("/ticker?n=3&interval=0").json() == {
            "items": [{"seq": 0}, {"seq": 1}, {"seq": 2}]
        }
        with httpx_sse.connect_sse(
            client, "GET", "/ticker?interval=0.01", headers=dict(SSE)
        ) as source:
            seqs = []
            for event in source.iter_sse():
                seqs.append(event.json()["seq"])
                if len(seqs) == 5:
                    break
        assert seqs == [0, 1, 2, 3, 4]


def test_negotiation_errors_are_json(demo_server: Server) -> None:
    with httpx.Client(base_url=demo_server.url, timeout=10) as client:
        r = client.get("/items?stream=maybe")
        assert r.status_code == 400 and r.json()["error"]["param"] == "stream"
        r = client.get("/items?format=xml")
        assert r.status_code == 400 and "stream" in r.json()["error"]["accepted"]
        r = client.get("/items", headers={"Accept": "text/html"})
        assert r.status_code == 406
        assert set(r.json()["error"]["available"]) == {"application/json", "text/event-stream"}
        assert r.headers["vary"] == "Accept"


def test_routing_errors_are_json(client: httpx.Client) -> None:
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    r = client.get("/echo/x")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


# -- encoding over the wire ---------------------------------------------------------------


def test_hostile_payloads_arrive_intact_and_inject_nothing(client: httpx.Client) -> None:
    got = events(client, "/hostile", headers=SSE)
    assert [(e.event, e.data, e.id) for e in got] == [
        ("message", "a\nb\nc\nd", "0"),
        ("message", "x\n\nevent: evil\ndata: injected", "1"),
        ("custom", "typed", "abc"),
        ("message", '{"nested":"new\\nline","unicode":"✓"}', "3"),
        ("message", "raw\nbytes", "4"),
        ("message", "", "5"),
    ]


def test_batch_reducers(client: httpx.Client) -> None:
    assert client.get("/tokens").json() == {"text": "Hello, world!"}
    assert client.get("/last").json() == {"progress": 4}
    assert client.get("/hostile").json()["items"][2] == "typed"


def test_batch_limits_give_clear_errors(client: httpx.Client) -> None:
    assert client.get("/limited?n=10").json() == {"items": ["y"] * 10}
    for query in ("n=11", "n=3&size=1000"):
        r = client.get(f"/limited?{query}")
        assert r.status_code == 400
        assert r.json()["error"]["type"] == "batch_too_large"
        assert "stream" in r.json()["error"]["message"]
    r = client.get("/limited?n=5&delay=0.2")
    assert r.status_code == 504 and r.json()["error"]["type"] == "timeout"


def test_stream_only_endpoint_with_done_sentinel(client: httpx.Client) -> None:
    got = events(client, "/stream-only")
    assert [(e.data, e.id) for e in got] == [("0", ""), ("1", ""), ("2", ""), ("[DONE]", "")]
    r = client.get("/stream-only?format=batch")
    assert r.status_code == 400
    r = client.get("/stream-only", headers=JSON)
    assert r.status_code == 406


# -- errors ---------------------------------------------------------------------------------


def test_error_before_first_event_is_an_http_error(client: httpx.Client) -> None:
    r = client.get("/fail?at=0", headers=SSE)
    assert r.status_code == 500
    assert r.json() == {"error": {"type": "internal_error", "message": "Internal server error"}}
    r = client.get("/fail?at=0&kind=http", headers=SSE)
    assert r.status_code == 409
    assert r.json()["error"] == {
        "type": "http_error",
        "message": "conflict on purpose",
        "hint": "none",
    }


def test_error_after_first_event_is_an_error_event(client: httpx.Client) -> None:
    got = events(client, "/fail?at=2", headers=SSE)
    assert [e.event for e in got] == ["message", "message", "error"]
    error = got[-1].json()["error"]
    assert error == {"type": "internal_error", "message": "Internal server error"}
    assert "secret" not in got[-1].data and "Traceback" not in got[-1].data
    got = events(client, "/fail?at=1&kind=http", headers=SSE)
    assert got[-1].event == "error" and got[-1].json()["error"]["status"] == 409


def test_batch_errors(client: httpx.Client) -> None:
    r = client.get("/fail?at=3")
    assert r.status_code == 500 and "secret" not in r.text
    assert client.get("/fail?at=1&kind=http").status_code == 409


def test_invalid_event_id_from_producer_ends_with_error_event(client: httpx.Client) -> None:
    got = events(client, "/bad-id", headers=SSE)
    assert [e.event for e in got] == ["message", "error"]


def test_idle_timeout_ends_with_timeout_event(client: httpx.Client) -> None:
    started = time.monotonic()
    got = events(client, "/stall", headers=SSE)
    assert time.monotonic() - started < 5
    assert [e.event for e in got] == ["message", "error"]
    assert got[-1].json()["error"]["type"] == "timeout"
    assert wait_for(lambda: all_finished(client))


def test_heartbeats_only_while_idle(core_server: Server) -> None:
    async def main() -> bytes:
        reader, writer = await sockets.open_stream(core_server.port, "/silent?wait=0.7")
        data = b""
        while b"late" not in data:
            data += await asyncio.wait_for(reader.read(65536), 5)
        await sockets.close(writer)
        return data

    raw = asyncio.run(main())
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"200 OK" in head
    # Chunked framing aside, heartbeats (':') came before the late event and only while idle.
    assert body.count(b":\n\n") >= 2
    assert body.index(b":\n\n") < body.index(b"late")


# -- the request --------------------------------------------------------------------------


def test_request_body_json_params_headers(client: httpx.Client) -> None:
    r = client.post("/echo/bob?q=1&q=2", json={"a": [1]}, headers={"x-agent": "t"})
    assert r.json() == {"name": "bob", "json": {"a": [1]}, "agent": "t", "q": ["1", "2"]}
    r = client.post("/echo/bob", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_json"
    r = client.post("/echo/bob", content=b"x" * (1024 * 1024 + 1))
    assert r.status_code == 413
    assert client.get("/state").json() == {"greeting": "hi"}


# -- disconnects, flow control, scale -------------------------------------------------------


def test_disconnect_of_blocked_producer_runs_finally_promptly(client: httpx.Client) -> None:
    before = stats(client)["finished"]
    with httpx_sse.connect_sse(client, "GET", "/blocked", headers=dict(SSE)) as source:
        first = next(source.iter_sse())
        assert first.json() == {"hello": "world"}
    started = time.monotonic()
    assert wait_for(lambda: stats(client)["finished"] == before + 1, timeout=2, every=0.005)
    assert time.monotonic() - started < 1.0
    assert wait_for(lambda: all_finished(client))


def test_random_disconnects_leave_no_producer_running(core_server: Server) -> None:
    rng = random.Random(1234)

    async def one(path: str) -> None:
        reader, writer = await sockets.open_stream(core_server.port, path)
        try:
            mode = rng.choice(["before-headers", "after-headers", "mid-body"])
            if mode != "before-headers":
                await asyncio.wait_for(sockets.read_headers(reader), 5)
            if mode == "mid-body":
                await asyncio.wait_for(reader.read(rng.randint(1, 20000)), 5)
            await asyncio.sleep(rng.random() * 0.05)
        finally:
            await sockets.close(writer)

    async def main() -> None:
        paths = ["/hot", "/paced?delay=0.001", "/blocked", "/paced?delay=0.2", "/hot?size=5000"]
        for _ in range(4):
            await asyncio.gather(*(one(rng.choice(paths)) for _ in range(50)))

    asyncio.run(main())
    with httpx.Client(base_url=core_server.url, timeout=10) as client:
        assert wait_for(lambda: all_finished(client), timeout=10), stats(client)
        assert stats(client)["started"] >= 200


def test_non_reading_client_keeps_server_memory_flat(core_server: Server) -> None:
    async def main() -> list[int]:
        reader, writer = await sockets.open_stream(core_server.port, "/hot?size=1000")
        await sockets.read_headers(reader)
        samples = []
        for _ in range(12):  # about 6 s with a client that reads nothing more
            await asyncio.sleep(0.5)
            samples.append(core_server.rss_kib())
        await sockets.close(writer)
        return samples

    samples = asyncio.run(main())
    settled = samples[2:]
    # Socket buffers fill within the first second; after that the producer is paused.
    assert max(settled) - min(settled) < 3 * 1024, samples
    with httpx.Client(base_url=core_server.url, timeout=10) as client:
        assert wait_for(lambda: all_finished(client), timeout=10), stats(client)


def test_thousand_concurrent_streams_on_one_worker(core_server: Server) -> None:
    async def main() -> int:
        writers = []
        got = 0
        try:
            for _chunk in range(10):
                opened = await asyncio.gather(
                    *(sockets.open_stream(core_server.port, "/blocked") for _ in range(100))
                )
                writers.extend(w for _, w in opened)
                for reader, _ in opened:
                    data = await asyncio.wait_for(reader.readuntil(b'world"}\n\n'), 10)
                    got += b"200 OK" in data
            async with httpx.AsyncClient(base_url=core_server.url) as client:
                assert (await client.get("/_stats")).json()["open_streams"] == 1000
        finally:
            await asyncio.gather(*(sockets.close(w) for w in writers))
        return got

    assert asyncio.run(main()) == 1000
    with httpx.Client(base_url=core_server.url, timeout=10) as client:
        assert wait_for(lambda: all_finished(client), timeout=15), stats(client)


def test_shutdown_ends_open_streams_promptly_and_tells_clients() -> None:
    with serve("tests.apps.core_app:app") as server:

        async def main() -> tuple[list[bytes], float]:
            opened = await asyncio.gather(
                *(sockets.open_stream(server.port, "/blocked") for _ in range(50))
            )
            for reader, _ in opened:
                await asyncio.wait_for(reader.readuntil(b'world"}\n\n'), 10)
            took = await asyncio.to_thread(server.stop)
            tails = [await asyncio.wait_for(r.read(), 5) for r, _ in opened]
            await asyncio.gather(*(sockets.close(w) for _, w in opened))
            return tails, took

        tails, took = asyncio.run(main())
    assert took < 3, took
    for tail in tails:
        assert b"event: error" in tail and b'"shutdown"' in tail
        assert tail.endswith(b"0\r\n\r\n")  # the chunked body ended cleanly


def test_stream_endpoint_reads_a_slowly_sent_body(core_server: Server) -> None:
    async def main() -> bytes:
        body = b'{"words": ["a", "b", "c"]}'
        reader, writer = await asyncio.open_connection("127.0.0.1", core_server.port)
        writer.write(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        for i in range(0, len(body), 5):
            writer.write(body[i : i + 5])
            await writer.drain()
            await asyncio.sleep(0.02)
        data = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
        await sockets.close(writer)
        return data

    data = asyncio.run(main())
    assert b"200 OK" in data
    assert b"data: a\n\n" in data and b"data: c\n\n" in data


def test_stream_endpoint_body_limit_is_an_http_error(client: httpx.Client) -> None:
    r = client.post("/upload", content=b"x" * (1024 * 1024 + 10), headers=SSE)
    assert r.status_code == 413
    assert r.json()["error"]["type"] == "payload_too_large"


def test_a_body_that_stalls_half_way_gets_408(core_server: Server) -> None:
    async def main() -> tuple[bytes, float]:
        reader, writer = await asyncio.open_connection("127.0.0.1", core_server.port)
        writer.write(b'POST /stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"half')
        await writer.drain()
        started = time.monotonic()
        data = await asyncio.wait_for(reader.readuntil(b"}}"), 5)
        took = time.monotonic() - started
        await sockets.close(writer)
        return data, took

    data, took = asyncio.run(main())
    assert data.startswith(b"HTTP/1.1 408 ")
    assert b'"type":"timeout"' in data
    assert 0.4 < took < 3
