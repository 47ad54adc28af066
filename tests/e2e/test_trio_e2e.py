"""The core under trio, over real sockets: ``hypercorn --worker-class trio`` serving
``tests.apps.core_app``. Both modes answer, a client that leaves stops its producer, heartbeats
flow while the producer is idle, and an error before the first event is a JSON HTTP error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import wait_for
from tests.server import ROOT, _wait_listening, free_port

SSE = {"accept": "text/event-stream"}
JSON = {"accept": "application/json"}


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    port = free_port()
    cmd = [sys.executable, "-m", "hypercorn", "--worker-class", "trio"]
    cmd += ["--bind", f"127.0.0.1:{port}", "tests.apps.core_app:app"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        _wait_listening(port, process, 20)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            yield c
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _stats(client: httpx.Client) -> dict[str, int]:
    stats: dict[str, int] = client.get("/_stats").json()
    return stats


def test_batch_and_stream_both_answer(client: httpx.Client) -> None:
    batch = client.get("/paced?n=3&delay=0.01", headers=JSON)
    assert batch.status_code == 200
    assert batch.json() == {"items": [{"i": 0}, {"i": 1}, {"i": 2}]}
    stream = client.get("/paced?n=3&delay=0.01", headers=SSE)
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.text.count("data: ") == 3
    hot = client.get("/hot?n=500", headers=SSE)  # never waits: the checkpoints run
    assert hot.text.count("data: ") == 500


def test_a_client_that_leaves_stops_the_producer(client: httpx.Client) -> None:
    before = _stats(client)
    with client.stream("GET", "/blocked", headers=SSE) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                break
        assert _stats(client)["started"] == before["started"] + 1
    # The producer waits forever after its first event: only the disconnect stops it.
    stats = wait_for(lambda: (s := _stats(client))["finished"] == s["started"] and s, 2.0)
    assert stats and stats["finished"] == before["finished"] + 1


def test_heartbeats_arrive_while_the_producer_is_idle(client: httpx.Client) -> None:
    with client.stream("GET", "/silent?wait=0.7", headers=SSE) as r:
        body = b"".join(r.iter_raw())
    assert body.count(b":\n\n") >= 2  # every 0.2 s for 0.7 s
    assert body.endswith(b"data: late\n\n")


def test_an_error_before_the_first_event_is_a_json_http_error(client: httpx.Client) -> None:
    r = client.get("/fail?at=0", headers=SSE)
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert "secret" not in r.text
    r = client.get("/fail?at=0&kind=http", headers=SSE)
    assert r.status_code == 409
    assert r.json()["error"]["message"] == "conflict on purpose"


def test_the_idle_timeout_and_the_batch_timeout(client: httpx.Client) -> None:
    r = client.get("/stall", headers=SSE)
    assert r.status_code == 200
    assert 'event: error\ndata: {"error":{"type":"timeout"' in r.text
    batch = client.get("/limited?delay=1", headers=JSON)
    assert batch.status_code == 504
    assert batch.json()["error"]["type"] == "timeout"
