"""Broadcasts across processes, over real sockets: two demo processes on one redis-server.

A broadcast posted on either process reaches the SSE subscribers of both, in one order; when
Redis goes away every open stream ends with ``event: error`` (``unavailable``) and requests
answer 503 with ``Retry-After``; when it is back, both processes recover by themselves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import httpx_sse
import pytest

from tests.cluster import Cluster, cluster
from tests.redis_server import RedisServer, redis_server

pytestmark = pytest.mark.e2e

SSE = {"Accept": "text/event-stream"}


@pytest.fixture(scope="module")
def two(redis_server: RedisServer) -> Iterator[Cluster]:
    with cluster(redis_server.url) as deployment:
        yield deployment


def listen(url: str, ready: threading.Event, retry_for: float = 0.0) -> list[tuple[str, Any]]:
    """A ``/broadcast`` subscriber's events until ``end`` or ``error``; for ``retry_for``
    seconds, a 503 is retried after its ``Retry-After``, as a client would."""
    deadline = time.monotonic() + retry_for
    got: list[tuple[str, Any]] = []
    with httpx.Client(base_url=url, timeout=30) as client:
        while True:
            with httpx_sse.connect_sse(client, "GET", "/broadcast?queue=1000", headers=SSE) as s:
                if s.response.status_code == 503 and time.monotonic() < deadline:
                    time.sleep(min(0.1, float(s.response.headers["retry-after"])))
                    continue
                assert s.response.status_code == 200
                ready.set()
                for event in s.iter_sse():
                    if not event.data:
                        continue
                    got.append((event.event, event.json()))
                    if event.event in ("end", "error"):
                        return got
            return got


def subscribers(url: str) -> int:
    count: int = httpx.get(f"{url}/broadcast/stats", timeout=10).json()["subscribers"]
    return count


def subscribe_all(
    pool: ThreadPoolExecutor, urls: list[str], retry_for: float = 0.0
) -> list[Future[Any]]:
    """Two subscribers on each process, subscribed before this returns."""
    futures = []
    for url in urls:
        for _ in range(2):
            ready = threading.Event()
            futures.append(pool.submit(listen, url, ready, retry_for))
            assert ready.wait(10 + retry_for)
    deadline = time.monotonic() + 5
    while [subscribers(url) for url in urls] != [2] * len(urls):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return futures


def test_a_broadcast_on_either_process_reaches_the_subscribers_of_both(two: Cluster) -> None:
    a, b = two.urls
    with ThreadPoolExecutor(4) as pool:
        futures = subscribe_all(pool, [a, b])
        sent = []
        for i, url in enumerate([a, b, a, b]):
            body = [{"event": "tick", "data": {"n": i * 10 + k}} for k in range(10)]
            response = httpx.post(f"{url}/broadcast", json=body, timeout=10)
            assert response.status_code == 200
            assert response.json() == {"subscribers": 2}  # on the process that was posted to
            sent += [("tick", e["data"]) for e in body]
        httpx.post(f"{a}/broadcast", json={"event": "end", "data": None}, timeout=10)
        results = [f.result(timeout=10) for f in futures]
    for got in results:
        assert got == [*sent, ("end", None)]  # all of them, once, in the order posted


def test_redis_stopped_ends_the_streams_then_everything_recovers() -> None:
    with redis_server() as server, cluster(server.url) as deployment:
        a, b = deployment.urls
        with ThreadPoolExecutor(4) as pool:
            futures = subscribe_all(pool, [a, b])
            server.stop()
            stopped = time.monotonic()
            results = [f.result(timeout=10) for f in futures]
            ended = time.monotonic() - stopped
        for got in results:
            assert got[-1][0] == "error" and got[-1][1]["error"]["type"] == "unavailable"
        assert ended < 2.0  # the readers saw the connection close
        for url in (a, b):
            started = time.monotonic()
            posted = httpx.post(f"{url}/broadcast", json={"data": "lost"}, timeout=10)
            assert posted.status_code == 503 and posted.headers["retry-after"] == "1"
            assert posted.json()["error"]["type"] == "unavailable"
            refused = httpx.get(f"{url}/broadcast", headers=SSE, timeout=10)
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert time.monotonic() - started < 5.0

        server.start()
        restarted = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            futures = subscribe_all(pool, [a, b], retry_for=10.0)
            recovered = time.monotonic() - restarted
            httpx.post(f"{b}/broadcast", json={"event": "end", "data": {"back": 1}}, timeout=10)
            results = [f.result(timeout=10) for f in futures]
        assert all(got == [("end", {"back": 1})] for got in results)
        assert recovered < 5.0  # reconnected by itself: backoff capped at 2 s
