"""A global concurrency limit over real sockets: two uvicorn processes, one redis-server.

Each process serves ``tests/apps/limiter_cluster_app.py``: a ``LimiterMiddleware`` on
``RedisSlots`` of the same name and capacity. The streams count themselves in Redis while
they hold their unit, so the test sees how many ran at once across both processes.
"""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import orjson
import pytest
from redis.asyncio import Redis

from tests.e2e import sockets
from tests.redis_server import RedisServer
from tests.server import Server, serve

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

SSE = {"Accept": "text/event-stream"}
LIMIT = 3


@contextlib.contextmanager
def cluster(redis_url: str, *, lease: float = 10.0) -> Iterator[tuple[str, list[Server]]]:
    """Two processes of one deployment under a new key prefix: (prefix, servers)."""
    prefix = f"e2e-{uuid.uuid4().hex[:12]}"
    env = {
        "ASGISTREAM_REDIS_URL": redis_url,
        "ASGISTREAM_REDIS_PREFIX": prefix,
        "LIMIT": str(LIMIT),
        "LEASE": str(lease),
        "QUEUE_TIMEOUT": "0.4",
    }
    with (
        serve("tests.apps.limiter_cluster_app:app", env=env) as one,
        serve("tests.apps.limiter_cluster_app:app", env=env) as two,
    ):
        yield prefix, [one, two]


async def hold(client: httpx.AsyncClient, server: Server, seconds: float) -> httpx.Response:
    """One ``/hold`` stream read to its end (or the rejection)."""
    async with client.stream("GET", f"{server.url}/hold?seconds={seconds}", headers=SSE) as r:
        await r.aread()
        return r


def first_event(response: httpx.Response) -> dict[str, Any]:
    line = next(x for x in response.text.splitlines() if x.startswith("data:"))
    event: dict[str, Any] = orjson.loads(line.removeprefix("data:"))
    return event


def assert_rejected(response: httpx.Response) -> None:
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    error = response.json()["error"]
    assert error["type"] == "overloaded" and error["reason"] == "timeout"


async def test_the_limit_holds_across_two_processes_under_load(
    redis_server: RedisServer,
) -> None:
    with cluster(redis_server.url) as (prefix, servers):
        responses: list[httpx.Response] = []

        async def one(server: Server) -> None:
            responses.append(await hold(client, server, 0.25))

        async with httpx.AsyncClient(timeout=10) as client:
            with anyio.fail_after(20):
                for _ in range(2):  # two waves of 12 streams through each process
                    async with anyio.create_task_group() as group:
                        for i in range(24):
                            group.start_soon(one, servers[i % 2])
            for server in servers:
                state = (await client.get(f"{server.url}/state")).json()
                assert state["held"] == 0 and state["waiting"] == 0
        served = [r for r in responses if r.status_code == 200]
        rejected = [r for r in responses if r.status_code != 200]
        for response in rejected:
            assert_rejected(response)
        assert len(served) >= 2 * LIMIT and rejected
        # Both processes served streams, and never more than LIMIT ran at once in all.
        assert {first_event(r)["pid"] for r in served} == {s.pid for s in servers}
        async with Redis.from_url(redis_server.url) as store:
            assert int(await store.get(f"{prefix}:{{test:limit}}:peak") or 0) == LIMIT
            assert int(await store.get(f"{prefix}:{{test:limit}}:active") or 0) == 0


async def test_a_killed_process_units_come_back_after_its_lease(
    redis_server: RedisServer,
) -> None:
    with cluster(redis_server.url, lease=1.0) as (_, (doomed, survivor)):
        # The doomed process holds every unit with streams that stay open.
        opened = []
        for _ in range(LIMIT):
            reader, writer = await sockets.open_stream(doomed.port, "/hold")
            assert b" 200 " in await sockets.read_headers(reader)
            await reader.readuntil(b"\n\n")  # the first event: the unit is held
            opened.append(writer)
        async with httpx.AsyncClient(timeout=10) as client:
            assert_rejected(await hold(client, survivor, 0))
            doomed.process.send_signal(signal.SIGKILL)
            doomed.process.wait(5)
            killed = time.monotonic()
            # Within the lease and a check of the queue, the survivor gets every unit.
            with anyio.fail_after(5):
                while (await hold(client, survivor, 0)).status_code != 200:
                    pass
            assert time.monotonic() - killed < 1.0 + 2.5
            async with anyio.create_task_group() as group:
                for _ in range(LIMIT):
                    group.start_soon(hold, client, survivor, 1.0)
                await anyio.sleep(0.1)
                assert_rejected(await hold(client, survivor, 0))
        for writer in opened:
            await sockets.close(writer)
