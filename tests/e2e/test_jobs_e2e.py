"""Job progress over real sockets: 202, dual-mode watching, several watchers, errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import httpx_sse
import pytest

from tests.server import Server, serve

JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def jobs_server() -> Iterator[Server]:
    with serve("examples.jobs:app") as server:
        yield server


def start(client: httpx.Client, **options: Any) -> str:
    response = client.post("/jobs", json=options)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    assert response.headers["location"] == f"/jobs/{job_id}"
    return job_id


def watch(url: str, job_id: str) -> list[httpx_sse.ServerSentEvent]:
    with (
        httpx.Client(base_url=url, timeout=10) as client,
        httpx_sse.connect_sse(
            client, "GET", f"/jobs/{job_id}", headers={"Accept": "text/event-stream"}
        ) as source,
    ):
        assert source.response.status_code == 200
        return list(source.iter_sse())


def test_several_watchers_see_progress_then_the_result(jobs_server: Server) -> None:
    with httpx.Client(base_url=jobs_server.url, timeout=10) as client:
        job_id = start(client, steps=8, delay=0.05)
        state = client.get(f"/jobs/{job_id}", headers=JSON)
        assert state.status_code == 200
        assert state.json()["status"] in ("pending", "running")
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(watch, jobs_server.url, job_id) for _ in range(4)]
            results = [f.result(timeout=20) for f in futures]
        for events in results:
            assert events[-1].event == "result"
            final = events[-1].json()
            assert final["status"] == "succeeded" and final["result"] == {"steps": 8, "answer": 42}
            progress = [e.json()["progress"] for e in events]
            assert progress == sorted(progress) and progress[-1] == 1.0
            assert all(e.event == "progress" for e in events[:-1])
            assert len(events) >= 3  # watchers started early see intermediate states
        # A late watcher gets the final state at once; batch mode answers the same state.
        late = watch(jobs_server.url, job_id)
        assert [e.event for e in late] == ["result"]
        assert client.get(f"/jobs/{job_id}").json() == late[0].json()


def test_batch_mode_answers_at_once_while_the_job_runs(jobs_server: Server) -> None:
    with httpx.Client(base_url=jobs_server.url, timeout=10) as client:
        job_id = start(client, steps=3, delay=1.0)
        started = time.monotonic()
        state = client.get(f"/jobs/{job_id}").json()
        assert time.monotonic() - started < 0.8
        assert state["status"] == "running" and state["progress"] < 1
        cancelled = client.delete(f"/jobs/{job_id}")
        assert cancelled.status_code == 202
        time.sleep(0.1)
        assert client.get(f"/jobs/{job_id}").json()["status"] == "cancelled"


def test_unknown_job_is_a_404_before_any_streaming(jobs_server: Server) -> None:
    with httpx.Client(base_url=jobs_server.url, timeout=10) as client:
        for headers in ({"Accept": "text/event-stream"}, JSON):
            response = client.get("/jobs/nope", headers=headers)
            assert response.status_code == 404
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"]["type"] == "job_not_found"
        assert client.post("/jobs", json={"steps": 0}).status_code == 400
        assert client.post("/jobs", json=[1]).status_code == 400


def test_a_failing_job_gives_an_error_event_or_a_5xx(jobs_server: Server) -> None:
    with httpx.Client(base_url=jobs_server.url, timeout=10) as client:
        job_id = start(client, steps=4, delay=0.05, fail_at=2)
        events = watch(jobs_server.url, job_id)
        assert events[-1].event == "error"
        error = events[-1].json()["error"]
        assert error["type"] == "step_failed" and error["job"] == job_id
        assert all(e.event == "progress" for e in events[:-1])
        # Watching a job that has failed already: a 500 before any streaming.
        late = client.get(f"/jobs/{job_id}", headers={"Accept": "text/event-stream"})
        assert late.status_code == 500
        assert late.json()["error"]["type"] == "step_failed"
        state = client.get(f"/jobs/{job_id}", headers=JSON).json()
        assert state["status"] == "failed"
        assert state["error"] == {"type": "step_failed", "message": "Step 2 failed on purpose"}


def test_demo_jobs(demo_server: Server) -> None:
    with httpx.Client(base_url=demo_server.url, timeout=10) as client:
        job_id = start(client, steps=2, delay=0.01)
        events = watch(demo_server.url, job_id)
        assert events[-1].event == "result"
