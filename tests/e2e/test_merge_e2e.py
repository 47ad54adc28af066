"""merge() over real sockets: every source is cancelled when the client leaves or one fails."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import httpx_sse
import pytest

from tests.server import Server, serve


@pytest.fixture(scope="module")
def merge_server() -> Iterator[Server]:
    with serve("tests.apps.merge_app:app") as server:
        yield server


def settled(client: httpx.Client, started: int, timeout: float = 5.0) -> dict[str, int]:
    """The stats once ``started`` sources have started and all of them finished."""
    deadline = time.monotonic() + timeout
    while True:
        stats: dict[str, int] = client.get("/_stats").json()
        if stats["started"] >= started and stats["started"] == stats["finished"]:
            return stats
        if time.monotonic() > deadline:
            return stats
        time.sleep(0.02)


def test_client_leaving_cancels_every_source(merge_server: Server) -> None:
    with httpx.Client(base_url=merge_server.url, timeout=10) as client:
        before = client.get("/_stats").json()["started"]
        for round_ in range(3):
            with httpx_sse.connect_sse(client, "GET", "/endless", headers={}) as source:
                seen = set()
                for event in source.iter_sse():
                    seen.add(event.json()["source"])
                    if len(seen) == 3:
                        break
            stats = settled(client, before + 3 * (round_ + 1))
            assert stats["started"] == before + 3 * (round_ + 1)
            assert stats["finished"] == stats["started"], stats


def test_one_failing_source_ends_the_stream_with_an_error_and_stops_the_rest(
    merge_server: Server,
) -> None:
    with httpx.Client(base_url=merge_server.url, timeout=10) as client:
        before = client.get("/_stats").json()["started"]
        with httpx_sse.connect_sse(client, "GET", "/endless?fail=3", headers={}) as source:
            events = list(source.iter_sse())
        assert events[-1].event == "error"
        assert events[-1].json()["error"]["type"] == "upstream_failed"
        assert [e.json()["seq"] for e in events[:-1] if e.json()["source"] == "c"] == [0, 1, 2]
        stats = settled(client, before + 3)
        assert stats["finished"] == stats["started"] == before + 3
        batch = client.get("/endless?fail=0", headers={"Accept": "application/json"})
        assert batch.status_code == 502
        assert settled(client, before + 6)["finished"] == before + 6


def test_demo_merge(demo_server: Server) -> None:
    with httpx.Client(base_url=demo_server.url, timeout=10) as client:
        batch = client.get("/merge?n=3").json()["items"]
        assert sorted((i["source"], i["seq"]) for i in batch) == sorted(
            (s, n) for s in ("clock", "prices", "news") for n in range(3)
        )
        with httpx_sse.connect_sse(client, "GET", "/merge?n=4&fail=prices", headers={}) as source:
            events = list(source.iter_sse())
        assert {e.event for e in events[:-1]} <= {"clock", "prices", "news"}
        assert events[-1].event == "error"
        assert events[-1].json()["error"]["type"] == "upstream_failed"
        assert client.get("/merge?n=0").status_code == 400
