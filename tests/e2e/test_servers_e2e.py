"""The same checks on every ASGI server of ``tests/servers.py``, over real sockets.

Each server serves ``tests/apps/servers_app.py`` (the demo, plus a counted producer) once for
the module; the last test of each stops it and reads its log.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import httpx_sse
import pytest

from tests.helpers import wait_for
from tests.servers import Running, serve_on

SSE = {"Accept": "text/event-stream"}
JSON = {"Accept": "application/json"}
MATRIX = ("daphne", "granian", "hypercorn", "hypercorn-trio", "hypercorn-w0", "uvicorn")
"""The servers of ``tests/servers.py`` checked here, as the README's table lists them."""
NO_LIFESPAN = {"daphne"}
"""Servers that run no lifespan: the app starts before its first request, and says so."""


@pytest.fixture(scope="module", params=MATRIX)
def server(request: pytest.FixtureRequest) -> Iterator[Running]:
    with serve_on(request.param, "tests.apps.servers_app:app") as running:
        yield running


@pytest.fixture
def client(server: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def events(client: httpx.Client, url: str) -> list[httpx_sse.ServerSentEvent]:
    with httpx_sse.connect_sse(client, "GET", url, headers=dict(SSE)) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        return list(source.iter_sse())


def test_items_in_both_modes(client: httpx.Client) -> None:
    expected = [{"id": i, "value": f"item-{i}"} for i in range(3)]
    batch = client.get("/items?n=3", headers=JSON)
    assert batch.status_code == 200
    assert batch.json() == {"items": expected}
    got = events(client, "/items?n=3")
    assert [(e.id, e.json()) for e in got] == [(str(i), item) for i, item in enumerate(expected)]


def test_a_client_that_leaves_stops_the_producer(client: httpx.Client) -> None:
    before = client.get("/_stats").json()["finished"]
    with httpx_sse.connect_sse(client, "GET", "/_blocked", headers=dict(SSE)) as source:
        assert next(source.iter_sse()).json() == {"hello": "world"}
    left = time.monotonic()
    assert wait_for(lambda: client.get("/_stats").json()["finished"] == before + 1, timeout=3)
    assert time.monotonic() - left < 1.5
    stats = client.get("/_stats").json()
    assert stats["started"] == stats["finished"] and stats["open_streams"] == 0


def test_jobs_need_the_start_up(client: httpx.Client) -> None:
    created = client.post("/jobs", json={"steps": 2, "delay": 0.01})
    assert created.status_code == 202, created.text
    url = created.json()["url"]
    done = wait_for(
        lambda: client.get(url, headers=JSON).json()["status"] == "succeeded", timeout=5
    )
    assert done, client.get(url, headers=JSON).text
    assert events(client, url)[-1].event == "result"


def test_events_need_the_start_up(client: httpx.Client) -> None:
    topic = f"/events/{uuid.uuid4().hex}"
    published = client.post(topic, json=[{"data": {"n": 1}}, {"data": {"n": 2}}])
    assert published.status_code == 200, published.text
    batch = client.get(f"{topic}?after=0", headers=JSON)
    assert batch.status_code == 200
    assert [item["data"] for item in batch.json()["items"]] == [{"n": 1}, {"n": 2}]
    with httpx_sse.connect_sse(client, "GET", f"{topic}?after=0", headers=dict(SSE)) as source:
        stream = (event for event in source.iter_sse() if event.data)  # past `retry:`
        assert [next(stream).json() for _ in range(2)] == [{"n": 1}, {"n": 2}]


def test_stops_on_sigterm_with_a_clean_log(server: Running, client: httpx.Client) -> None:
    """Last of each server: stops it, then reads everything it logged."""
    assert client.get("/items?n=1", headers=JSON).status_code == 200  # it has started
    took = server.stop()
    log = server.log()
    assert took < 5, (took, log)
    assert "Traceback" not in log and "KeyError" not in log, log
    assert "lifespan startup failed" not in log and "lifespan shutdown failed" not in log, log
    warned = "no lifespan reached the app" in log
    assert warned is (server.name in NO_LIFESPAN), log
