"""Topics shared by several demo processes on one redis-server, over real sockets.

A client cannot tell one process from many: events published on any process have one
sequence of ids, a subscriber resumes on any process from where it was, through cuts,
``--workers``, a process killed with SIGKILL, every process restarted, and Redis flushed
(a ``reset``) or stopped (503, then recovery without restarting anything).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Sequence

import anyio
import httpx
import httpx_sse
import pytest

from asgistream.client import AsyncClient, RetryPolicy, ServerSentEvent
from tests.cluster import cluster
from tests.e2e.sockets import balancer
from tests.helpers import until
from tests.redis_server import RedisServer, redis_server

pytestmark = pytest.mark.anyio

QUICK = RetryPolicy(initial=0.02, cap=0.1, max_attempts=100)
"""Reconnect at once (the demo's ``retry: 1000`` hint is capped), and keep at it."""

JSON = {"Accept": "application/json"}


async def publish(
    urls: Sequence[str], topic: str, total: int, *, seed: int = 7, pause: float = 0.003
) -> list[int]:
    """Post ``total`` events ``{"n": i}`` in small batches, each batch to a random one of
    ``urls`` on a new connection; the ids the processes answered."""
    rng = random.Random(seed)
    ids: list[int] = []
    limits = httpx.Limits(max_keepalive_connections=0)  # a new connection: any worker
    async with httpx.AsyncClient(timeout=10, limits=limits) as http:
        sent = 0
        while sent < total:
            batch = min(total - sent, rng.randint(1, 6))
            body = [{"data": {"n": sent + i}, "event": f"k{(sent + i) % 3}"} for i in range(batch)]
            response = await http.post(f"{rng.choice(urls)}/events/{topic}", json=body)
            assert response.status_code == 200, response.text
            # Ids read EPOCH:ID, as the stream gives them: the numbers are what is compared.
            ids.extend(int(str(id).rpartition(":")[2]) for id in response.json()["ids"])
            sent += batch
            await anyio.sleep(rng.uniform(0, pause))
    return ids


async def follow(
    url: str,
    topic: str,
    total: int,
    last_event_id: str = "0",
    got: list[ServerSentEvent] | None = None,
) -> list[ServerSentEvent]:
    """The first ``total`` events of ``topic`` after ``last_event_id`` (appended to ``got``
    as they come), read by the client through whatever cuts and failures come, resuming by
    itself."""
    got = [] if got is None else got
    with anyio.fail_after(30):
        async with (
            AsyncClient(url, retry=QUICK, read_timeout=10) as client,
            contextlib.aclosing(
                client.events(f"/events/{topic}", last_event_id=last_event_id)
            ) as events,
        ):
            async for event in events:
                got.append(event)
                if len(got) == total:
                    break
    return got


def check_exactly_once(events: Sequence[ServerSentEvent], total: int) -> str:
    """Every event ``0..total-1`` once, in order, with ids ``EPOCH:1..EPOCH:total``; the epoch."""
    epoch = events[0].id.rpartition(":")[0]
    assert len(epoch) >= 8
    assert [e.event for e in events] == [f"k{i % 3}" for i in range(total)]
    assert [e.id for e in events] == [f"{epoch}:{i}" for i in range(1, total + 1)]
    assert [e.json() for e in events] == [{"n": i} for i in range(total)]
    return epoch


# -- several processes, one topic ----------------------------------------------------------------


async def test_cut_at_random_points_each_reconnect_on_the_other_process(
    redis_server: RedisServer,
) -> None:
    total = 300
    with cluster(redis_server.url) as deployment:
        ports = [server.port for server in deployment.servers]
        async with (
            balancer(ports, rng=random.Random(11), max_bytes=1500) as front,
            anyio.create_task_group() as group,
        ):
            published: list[int] = []

            async def publisher() -> None:
                published.extend(await publish(deployment.urls, "cuts", total))

            group.start_soon(publisher)
            got = await follow(f"http://127.0.0.1:{front.port}", "cuts", total)
    check_exactly_once(got, total)
    assert published == list(range(1, total + 1))  # one sequence of ids for both processes
    assert front.cuts >= 5 and len(front.served) > front.cuts, (front.cuts, front.served)
    assert all(a != b for a, b in zip(front.served, front.served[1:], strict=False))
    print(f"{len(front.served)} connections alternating, {front.cuts} cut")


async def test_uvicorn_workers_share_one_log_through_one_port(redis_server: RedisServer) -> None:
    total = 200
    with cluster(redis_server.url, workers=2) as deployment:
        port = deployment.servers[0].port
        async with (
            balancer([port], rng=random.Random(12), max_bytes=1500) as front,
            anyio.create_task_group() as group,
        ):
            published: list[int] = []

            async def publisher() -> None:
                published.extend(await publish(deployment.urls, "workers", total))

            group.start_soon(publisher)
            got = await follow(f"http://127.0.0.1:{front.port}", "workers", total)
    check_exactly_once(got, total)
    assert published == list(range(1, total + 1))
    assert front.cuts >= 3


async def test_a_process_killed_mid_stream_loses_nothing(redis_server: RedisServer) -> None:
    total = 200
    with cluster(redis_server.url) as deployment:
        a, b = deployment.servers
        got: list[ServerSentEvent] = []
        async with (
            balancer([a.port, b.port]) as front,  # the first connection goes to a
            anyio.create_task_group() as group,
        ):
            group.start_soon(follow, f"http://127.0.0.1:{front.port}", "kill", total, "0", got)
            await publish([b.url], "kill", 60, pause=0.01)
            await until(lambda: len(got) == 60, limit=10)
            deployment.kill(0)  # SIGKILL mid-stream: no shutdown, the stream is cut
            killed = time.monotonic()
            async with httpx.AsyncClient(base_url=b.url, timeout=10) as http:
                for n in range(60, total):
                    body = {"data": {"n": n}, "event": f"k{n % 3}"}
                    assert (await http.post("/events/kill", json=body)).status_code == 200
                    if n == 60:
                        await until(lambda: len(got) == 61, limit=10)
                        resumed = time.monotonic() - killed
                    await anyio.sleep(0.002)
        assert front.served == [a.port, b.port]
    check_exactly_once(got, total)
    print(f"the client had the next event from the other process {resumed * 1000:.0f} ms later")


async def test_every_process_restarted_resumes_a_last_event_id_from_before(
    redis_server: RedisServer,
) -> None:
    with cluster(redis_server.url) as deployment:
        assert await publish(deployment.urls, "restart", 10) == list(range(1, 11))
        first = await follow(deployment.urls[1], "restart", 5)
        last = first[-1].id
        for index in range(len(deployment.servers)):
            deployment.restart(index)
        async with httpx.AsyncClient(base_url=deployment.urls[0], timeout=10) as http:
            body = [{"data": {"n": n}, "event": f"k{n % 3}"} for n in range(10, 15)]
            epoch = last.partition(":")[0]
            assert (await http.post("/events/restart", json=body)).json() == {
                "ids": [f"{epoch}:{i}" for i in range(11, 16)]
            }
            batch = await http.get("/events/restart", headers={**JSON, "Last-Event-ID": last})
        rest = await follow(deployment.urls[0], "restart", 10, last_event_id=last)
    check_exactly_once([*first, *rest], 15)
    assert [item["id"] for item in batch.json()["items"]] == [f"{epoch}:{i}" for i in range(6, 16)]


# -- Redis flushed, Redis stopped ----------------------------------------------------------------


async def test_redis_flushed_an_old_id_gets_a_reset() -> None:
    with redis_server() as server, cluster(server.url) as deployment:
        a, b = deployment.urls
        await publish([a], "flush", 5)
        old = (await follow(b, "flush", 5))[-1].id.rpartition(":")[0]
        server.flush()
        await publish([b], "flush", 2)
        with httpx.Client(base_url=a, timeout=10) as http:
            headers = {"Accept": "text/event-stream", "Last-Event-ID": f"{old}:3"}
            with httpx_sse.connect_sse(http, "GET", "/events/flush", headers=headers) as source:
                events = source.iter_sse()
                got = [next(e for e in events if e.data) for _ in range(3)]
    new = got[1].id.rpartition(":")[0]
    assert new != old
    assert (got[0].event, got[0].id) == ("reset", f"{new}:0")
    assert got[0].json() == {
        "reason": "unknown",
        "last_event_id": 3,
        "oldest": 1,
        "newest": 2,
        "missed": None,
    }
    assert [(e.id, e.json()) for e in got[1:]] == [(f"{new}:1", {"n": 0}), (f"{new}:2", {"n": 1})]


async def test_redis_stopped_503_then_recovery_without_a_restart() -> None:
    with redis_server() as server, cluster(server.url) as deployment:
        a, b = deployment.urls
        await publish([a], "outage", 3)
        got: list[ServerSentEvent] = []
        async with httpx.AsyncClient(timeout=10) as http, anyio.create_task_group() as group:
            # A client that follows the topic on b through the outage, resuming by itself.
            group.start_soon(follow, b, "outage", 7, "0", got)
            await until(lambda: len(got) == 3, limit=10)
            # A plain stream on b ends with an error event when Redis goes away.
            headers = {"Accept": "text/event-stream", "Last-Event-ID": "0"}
            async with http.stream("GET", f"{b}/events/outage", headers=headers) as stream:
                lines = stream.aiter_lines()
                with anyio.fail_after(5):
                    while (await lines.__anext__()) != 'data: {"n":2}':
                        pass
                stopped = time.monotonic()
                server.stop()
                with anyio.fail_after(5):
                    tail = [line async for line in lines]
            ended = time.monotonic() - stopped
            assert "event: error" in tail, tail
            assert '"type":"unavailable"' in tail[tail.index("event: error") + 1]
            # Requests that need Redis: a JSON 503 with Retry-After, quickly.
            for request in (
                http.build_request("POST", f"{a}/events/outage", json={"data": 1}),
                http.build_request("GET", f"{b}/events/outage", headers=JSON),
            ):
                started = time.monotonic()
                response = await http.send(request)
                assert time.monotonic() - started < 3
                assert response.status_code == 503 and response.headers["retry-after"] == "1"
                assert response.json()["error"]["type"] == "unavailable"
            server.start()  # empty: what the topic had is gone
            started = time.monotonic()
            with anyio.fail_after(10):
                while (await http.post(f"{a}/events/outage", json={"data": "x"})).is_error:  # noqa: ASYNC110
                    await anyio.sleep(0.05)  # Redis is coming back
            recovered = time.monotonic() - started
            await http.post(f"{a}/events/outage", json=[{"data": "y"}, {"data": "z"}])
    old, new = got[0].id.rpartition(":")[0], got[-1].id.rpartition(":")[0]
    assert [e.data for e in got[:3]] == ['{"n":0}', '{"n":1}', '{"n":2}']
    assert got[3].event == "reset" and got[3].json()["reason"] == "unknown" and new != old
    assert [(e.id, e.data) for e in got[4:]] == [(f"{new}:{i}", d) for i, d in enumerate("xyz", 1)]
    print(f"stream ended {ended * 1000:.0f} ms after Redis stopped; recovered in {recovered:.2f} s")
