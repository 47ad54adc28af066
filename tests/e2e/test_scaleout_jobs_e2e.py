"""Jobs across processes, over real sockets: two demo processes on one redis-server.

A job started on one process is watched (a stream), read (batch) and cancelled on the other;
a job whose process is killed with SIGKILL ends ``failed`` (``owner_lost``) within the job
store's lease, as its watchers on the other process see.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import httpx_sse
import pytest

from asgistream.backends.redis.jobs import DEFAULT_LEASE
from tests.cluster import Cluster, cluster
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

JSON = {"Accept": "application/json"}
SSE = {"Accept": "text/event-stream"}


@pytest.fixture(scope="module")
def two(redis_server: RedisServer) -> Iterator[Cluster]:
    with cluster(redis_server.url) as deployment:
        yield deployment


def start(url: str, **options: Any) -> str:
    response = httpx.post(f"{url}/jobs", json=options, timeout=10)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def watch(
    url: str, job_id: str, seen: threading.Event | None = None
) -> list[httpx_sse.ServerSentEvent]:
    """The job's events streamed from ``url`` to the end; ``seen`` is set at the first."""
    events = []
    with (
        httpx.Client(base_url=url, timeout=30) as client,
        httpx_sse.connect_sse(client, "GET", f"/jobs/{job_id}", headers=SSE) as source,
    ):
        assert source.response.status_code == 200
        for event in source.iter_sse():
            if event.event in ("progress", "result", "error"):
                events.append(event)
                if seen is not None:
                    seen.set()
    return events


def test_a_job_is_known_everywhere_at_once(two: Cluster) -> None:
    a, b = two.urls
    with httpx.Client(timeout=10) as client:
        for _ in range(8):  # once a 404 in 4 of 8 tries: each process had its own jobs
            job_id = start(a, steps=1, delay=0.0)
            state = client.get(f"{b}/jobs/{job_id}", headers=JSON)
            assert state.status_code == 200, state.text
            assert state.json()["id"] == job_id
        assert client.get(f"{b}/jobs/{'0' * 32}").status_code == 404
        assert client.get(f"{b}/jobs/not:a:job").status_code == 400


def test_a_job_started_here_is_watched_and_read_there(two: Cluster) -> None:
    a, b = two.urls
    job_id = start(a, steps=6, delay=0.05)
    with ThreadPoolExecutor(2) as pool:
        watchers = [pool.submit(watch, url, job_id) for url in (a, b)]
        results = [w.result(timeout=20) for w in watchers]
    for events in results:
        assert events[-1].event == "result"
        assert events[-1].json()["result"] == {"steps": 6, "answer": 42}
        progress = [e.json()["progress"] for e in events]
        assert progress == sorted(progress) and progress[-1] == 1.0
        assert len(events) >= 3  # the other process saw intermediate states too
    state = httpx.get(f"{b}/jobs/{job_id}", headers=JSON, timeout=10).json()
    assert state == results[1][-1].json()


def test_a_job_started_here_is_cancelled_there(two: Cluster) -> None:
    a, b = two.urls
    job_id = start(a, steps=100, delay=0.1)
    seen = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        near = pool.submit(watch, a, job_id)
        far = pool.submit(watch, b, job_id, seen)
        assert seen.wait(10)
        running = httpx.get(f"{b}/jobs/{job_id}", headers=JSON, timeout=10).json()
        assert running["status"] == "running" and running["progress"] < 1
        started = time.monotonic()
        cancelled = httpx.delete(f"{b}/jobs/{job_id}", timeout=10)
        assert cancelled.status_code == 202
        ends = [near.result(timeout=10), far.result(timeout=10)]
        took = time.monotonic() - started
    for events in ends:
        assert events[-1].event == "error"
        assert events[-1].json()["error"]["type"] == "cancelled"
    assert took < 2.0  # through pub/sub, not the next lease renewal
    for url in (a, b):
        assert httpx.get(f"{url}/jobs/{job_id}", timeout=10).json()["status"] == "cancelled"


def test_a_job_whose_process_was_killed_ends_failed_within_the_lease(
    redis_server: RedisServer,
) -> None:
    with cluster(redis_server.url) as deployment:
        a, b = deployment.urls
        job_id = start(a, steps=1000, delay=0.5)
        seen = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            watcher = pool.submit(watch, b, job_id, seen)
            assert seen.wait(10)
            deployment.kill(0)
            killed = time.monotonic()
            events = watcher.result(timeout=DEFAULT_LEASE + 10)
            took = time.monotonic() - killed
        assert events[-1].event == "error"
        assert events[-1].json()["error"]["type"] == "owner_lost"
        assert took < DEFAULT_LEASE + 1.0, took  # renewed every lease/3: fails within a lease
        state = httpx.get(f"{b}/jobs/{job_id}", timeout=10).json()
        assert state["status"] == "failed" and state["error"]["type"] == "owner_lost"
        late = httpx.get(f"{b}/jobs/{job_id}", headers=SSE, timeout=10)
        assert late.status_code == 500  # a late watcher: the failure before any event
        assert late.json()["error"]["type"] == "owner_lost"
