"""Resumable topics and the broker over real sockets, and a real browser's EventSource."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import httpx_sse
import pytest

from tests.browser import chromium, open_page
from tests.e2e import sockets
from tests.server import Server, serve

SSE = {"Accept": "text/event-stream"}


@pytest.fixture(scope="module")
def events_server() -> Iterator[Server]:
    with serve("tests.apps.events_app:app") as server:
        yield server


def parse(text: str) -> list[dict[str, str]]:
    """The complete events in ``text``, as a browser would dispatch them (data only)."""
    events = []
    for block in text.split("\n\n")[:-1]:  # the last piece is incomplete
        event: dict[str, str] = {}
        data = []
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            if name == "data":
                data.append(value)
            elif name in ("id", "event"):
                event[name] = value
        if data:
            event["data"] = "\n".join(data)
            events.append(event)
    return events


def publish_slowly(url: str, topic: str, total: int, done: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        sent = 0
        rng = random.Random(7)
        while sent < total:
            batch = min(total - sent, rng.randint(1, 6))
            body = [
                {"data": {"n": sent + i}, "event": f"kind{(sent + i) % 3}"} for i in range(batch)
            ]
            assert client.post(f"/events/{topic}", json=body).status_code == 200
            sent += batch
            time.sleep(rng.uniform(0, 0.004))
    done.set()


def test_a_client_dropping_at_random_points_sees_every_event_exactly_once(
    events_server: Server,
) -> None:
    total = 400
    topic = "random-drops"
    rng = random.Random(2024)
    done = threading.Event()
    publisher = threading.Thread(
        target=publish_slowly, args=(events_server.url, topic, total, done)
    )
    seen: list[dict[str, str]] = []
    last_id = "0"
    connections = mid_event = 0
    deadline = time.monotonic() + 30
    publisher.start()
    try:
        timeout = httpx.Timeout(10, read=0.5)
        with httpx.Client(base_url=events_server.url, timeout=timeout) as client:
            while (not seen or seen[-1]["id"] != str(total)) and time.monotonic() < deadline:
                connections += 1
                cut = rng.randint(0, 600)  # bytes read before dropping, often mid-event
                received = b""
                headers = {**SSE, "Last-Event-ID": last_id}
                with client.stream("GET", f"/events/{topic}", headers=headers) as response:
                    assert response.status_code == 200
                    # Nothing new for a while (the publisher is done) is a drop point too.
                    with contextlib.suppress(httpx.ReadTimeout):
                        for chunk in response.iter_bytes():
                            received += chunk
                            if len(received) >= cut:
                                break
                kept = received[:cut]
                mid_event += bool(kept) and not kept.endswith(b"\n\n")
                events = parse(kept.decode("utf-8", "replace"))
                assert not any(e.get("event") == "reset" for e in events), events
                seen.extend(events)
                if events:
                    last_id = events[-1]["id"]
    finally:
        publisher.join(30)
    assert done.is_set()
    assert [int(e["id"]) for e in seen] == list(range(1, total + 1))
    assert [e["event"] for e in seen] == [f"kind{i % 3}" for i in range(total)]
    assert [e["data"] for e in seen] == [f'{{"n":{i}}}' for i in range(total)]
    assert connections >= 10 and mid_event >= 3, (connections, mid_event)


def test_evicted_and_unknown_ids_get_a_reset_event(events_server: Server) -> None:
    with httpx.Client(base_url=events_server.url, timeout=10) as client:
        body = [{"data": i} for i in range(1010)]  # the log keeps 1000: ids 11..1010
        assert client.post("/events/evict", json=body).json()["ids"][-1] == 1010
        with httpx_sse.connect_sse(
            client, "GET", "/events/evict", headers={"Last-Event-ID": "5"}
        ) as source:
            assert source.response.status_code == 200
            it = (event for event in source.iter_sse() if event.data)  # skip the retry hint
            reset = next(it)
            assert reset.event == "reset" and reset.id == "10"
            assert reset.json() == {
                "reason": "evicted",
                "last_event_id": 5,
                "oldest": 11,
                "newest": 1010,
                "missed": 5,
            }
            assert [next(it).id for _ in range(3)] == ["11", "12", "13"]
        with httpx_sse.connect_sse(
            client, "GET", "/events/evict", headers={"Last-Event-ID": "5000"}
        ) as source:
            reset = next(event for event in source.iter_sse() if event.data)
            assert reset.event == "reset" and reset.json()["reason"] == "unknown"
        # An id of another epoch (from a store that lost its history) is not resumed either.
        with httpx_sse.connect_sse(
            client, "GET", "/events/evict", headers={"Last-Event-ID": "lost:1008"}
        ) as source:
            reset = next(event for event in source.iter_sse() if event.data)
            assert reset.event == "reset" and reset.json()["reason"] == "unknown"
            assert reset.id == "10"
        batch = client.get("/events/evict?after=1007", headers={"Accept": "application/json"})
        assert batch.json() == {
            "items": [{"id": i, "event": None, "data": i - 1} for i in (1008, 1009, 1010)]
        }
        bad = client.get("/events/evict", headers={**SSE, "Last-Event-ID": "abc"})
        assert bad.status_code == 400
        assert bad.json()["error"]["type"] == "invalid_last_event_id"
        # The stream starts with the retry hint.
        with client.stream("GET", "/events/evict", headers=SSE) as response:
            first = next(response.iter_bytes())
            assert first.startswith(b"retry: 1000\n\n")


# -- the broker ----------------------------------------------------------------------------


def subscribers(client: httpx.Client) -> int:
    count: int = client.get("/broadcast/stats").json()["subscribers"]
    return count


def wait_subscribers(client: httpx.Client, n: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while subscribers(client) != n and time.monotonic() < deadline:
        time.sleep(0.02)
    return subscribers(client)


def fast_reader(url: str, ready: threading.Barrier) -> tuple[list[Any], float]:
    got: list[Any] = []
    with (
        httpx.Client(base_url=url, timeout=20) as client,
        httpx_sse.connect_sse(client, "GET", "/broadcast?queue=10000", headers={}) as source,
    ):
        ready.wait(10)
        for event in source.iter_sse():
            if not event.data:
                continue
            got.append((event.event, event.json()))
            if event.event == "end":
                return got, time.time()
    return got, time.time()


def test_one_slow_subscriber_neither_grows_memory_nor_slows_the_others(
    events_server: Server,
) -> None:
    payload = "x" * 2048
    batches, per_batch = 100, 100  # 10,000 events of about 2 KiB: 20 MB through the broker
    loop = asyncio.new_event_loop()
    try:
        # Two clients that never read: one drops the oldest, one is disconnected.
        slow_drop = loop.run_until_complete(
            sockets.open_stream(events_server.port, "/broadcast?queue=10&policy=drop_oldest")
        )
        slow_cut = loop.run_until_complete(
            sockets.open_stream(events_server.port, "/broadcast?queue=10&policy=disconnect")
        )
        with httpx.Client(base_url=events_server.url, timeout=20) as client:
            assert wait_subscribers(client, 2) == 2
            ready = threading.Barrier(4)
            with ThreadPoolExecutor(3) as pool:
                futures = [pool.submit(fast_reader, events_server.url, ready) for _ in range(3)]
                ready.wait(10)
                assert wait_subscribers(client, 5) == 5
                rss_before = events_server.rss_kib()
                started = time.monotonic()
                for b in range(batches):
                    body = [
                        {"event": "tick", "data": {"n": b * per_batch + i, "p": payload}}
                        for i in range(per_batch)
                    ]
                    assert client.post("/broadcast", json=body).status_code == 200
                publish_time = time.monotonic() - started
                rss_after = events_server.rss_kib()
                sent_end = time.time()
                client.post("/broadcast", json={"event": "end", "data": None})
                results = [f.result(timeout=30) for f in futures]
            # The disconnected one left the broker; the other slow one is still subscribed.
            assert wait_subscribers(client, 1) == 1
        for got, finished in results:
            ticks = [data["n"] for name, data in got if name == "tick"]
            assert ticks == list(range(batches * per_batch))  # fast readers lost nothing
            assert finished - sent_end < 5.0
        grown_mib = (rss_after - rss_before) / 1024
        assert grown_mib < 16, f"server grew {grown_mib:.1f} MiB while publishing 20 MB"
        assert publish_time < 30

        # Now the slow clients read: one learns what it lost, the other why it was cut.
        drop_text = loop.run_until_complete(_read_until(slow_drop[0], b"event: dropped"))
        assert b"event: dropped" in drop_text
        cut_text = loop.run_until_complete(_read_until(slow_cut[0], b"slow_subscriber"))
        assert b"event: error" in cut_text and b"slow_subscriber" in cut_text
    finally:
        for reader_writer in (locals().get("slow_drop"), locals().get("slow_cut")):
            if reader_writer is not None:
                loop.run_until_complete(sockets.close(reader_writer[1]))
        loop.close()


async def _read_until(reader: asyncio.StreamReader, marker: bytes, limit: int = 64 << 20) -> bytes:
    data = b""
    async with asyncio.timeout(20):
        while marker not in data[-(1 << 20) :] and len(data) < limit:
            chunk = await reader.read(1 << 16)
            if not chunk:
                break
            data += chunk
    return data


# -- a real browser (last: its sync Playwright runs this thread's event loop to the end) -----


def test_headless_chromium_reconnects_with_last_event_id(events_server: Server) -> None:
    total = 60
    # Not the module-scoped ``browser`` fixture: a running playwright keeps an event loop
    # running in this thread, and the tests after this one need asyncio.run.
    with chromium() as browser, open_page(browser) as page:
        # The server ends the stream after every 4 events: the browser reconnects.
        page.goto(f"{events_server.url}/page?topic=browser&max=4")
        page.wait_for_function("window.opens >= 1", timeout=10_000)
        with httpx.Client(base_url=events_server.url, timeout=10) as client:
            for i in range(total):
                event = {"data": {"n": i}, "event": "alert" if i % 2 else None}
                client.post("/events/browser", json=event)
                if i % 5 == 0:
                    time.sleep(0.02)
        page.wait_for_function(f"window.got.length >= {total}", timeout=20_000)
        time.sleep(0.3)  # a duplicate, if any, would arrive now
        got: list[dict[str, Any]] = page.evaluate("window.got")
        opens: int = page.evaluate("window.opens")
    assert [g["id"] for g in got] == [str(i) for i in range(1, total + 1)]
    assert [g["type"] for g in got] == ["alert" if i % 2 else "message" for i in range(total)]
    assert [g["data"] for g in got] == [f'{{"n":{i}}}' for i in range(total)]
    assert opens >= total // 4
