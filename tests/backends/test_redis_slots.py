"""RedisSlots beyond the shared limiter tests: several processes on one Redis, leases that
bring a dead process's units back, Redis stopped and flushed.

Two open :class:`RedisBackend` objects stand for two processes (each has its own process id,
lease and pub/sub reader); a dead process is a real child process killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import time

import anyio
import orjson
import pytest
from redis.exceptions import RedisError

from asgistream._types import Receive, Scope, Send
from asgistream.backends.redis import RedisUnavailable
from asgistream.backends.redis.slots import RedisSlots
from asgistream.middleware.limiter import Limiter, LimiterFull, LimiterMiddleware
from tests.helpers import FakeClient, until
from tests.redis_server import RedisServer, processes
from tests.redis_server import redis_server as own_redis
from tests.server import ROOT

pytestmark = pytest.mark.anyio


async def take(slots: RedisSlots, weight: int, wait: float | None = None) -> None:
    await slots.acquire(weight, queue_timeout=wait, max_waiting=None)


async def test_first_come_first_served_and_whole_weights_across_processes(
    redis_server: RedisServer,
) -> None:
    async with processes(redis_server.url) as (one, two):
        a, b = RedisSlots(one, "fifo", 3), RedisSlots(two, "fifo", 3)
        await take(a, 3)
        order: list[str] = []

        async def waiter(slots: RedisSlots, name: str, weight: int) -> None:
            await take(slots, weight)
            order.append(name)

        async with anyio.create_task_group() as group:
            group.start_soon(waiter, b, "heavy", 2)
            await until(lambda: b.waiting == 1)
            group.start_soon(waiter, a, "light", 1)
            await until(lambda: a.waiting == 1)
            await a.release(1)  # one unit free: "light" fits but waits behind "heavy"
            await anyio.sleep(0.1)
            assert order == [] and a.in_use == 2
            await a.release(1)
            await until(lambda: order == ["heavy"])
            assert b.in_use == 3 and a.waiting == 1
            await a.release(1)
        assert order == ["heavy", "light"]
        assert a.held == 1 and b.held == 2
        await a.release(1)
        await b.release(2)
        assert b.in_use == 0


async def test_the_limit_holds_across_processes_under_load(redis_server: RedisServer) -> None:
    async with processes(redis_server.url) as backends:
        stores = [RedisSlots(backend, "load", 4) for backend in backends]
        rng = random.Random(11)
        held = peak = done = 0

        async def worker(slots: RedisSlots, weight: int) -> None:
            nonlocal held, peak, done
            await take(slots, weight)
            held += weight
            peak = max(peak, held)
            assert held <= 4
            await anyio.sleep(rng.random() * 0.003)
            held -= weight
            await slots.release(weight)
            done += 1

        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                for i in range(300):
                    group.start_soon(worker, stores[i % 2], rng.randint(1, 4))
        assert done == 300 and peak == 4
        assert all(s.held == 0 and s.waiting == 0 for s in stores)
        used = await backends[0].client.get(backends[0].key("slots", "load", "used"))
        assert int(used or 0) == 0


async def test_keys_share_one_hash_tag_and_expire(redis_server: RedisServer) -> None:
    async with processes(redis_server.url, 1) as (backend,):
        slots = RedisSlots(backend, "keys", 1, lease=2.0)
        await take(slots, 1)
        with pytest.raises(LimiterFull):
            await take(slots, 1, wait=0)
        keys = [k.decode() for k in await backend.client.keys(f"{backend.prefix}:*")]
        assert {k.rsplit(":", 1)[1] for k in keys} >= {"used", "weights", "leases", "counts"}
        for key in keys:
            assert key.startswith(f"{backend.prefix}:{{slots:keys}}:")
            assert 0 < await backend.client.pttl(key) <= 6000
        await slots.release(1)


CHILD = """
import functools, sys
import anyio
from asgistream.backends.redis import RedisBackend
from asgistream.backends.redis.slots import RedisSlots

async def main(url, prefix):
    async with RedisBackend(url, prefix=prefix) as backend:
        slots = RedisSlots(backend, "dead", 3, lease=1.0)
        await slots.acquire(2, queue_timeout=None, max_waiting=None)
        async with anyio.create_task_group() as group:
            group.start_soon(functools.partial(
                slots.acquire, 3, queue_timeout=None, max_waiting=None))
            while slots.waiting != 1:
                await anyio.sleep(0.01)
            print("ready", flush=True)
            await anyio.sleep_forever()

anyio.run(main, sys.argv[1], sys.argv[2])
"""


async def test_a_killed_process_units_and_queue_places_come_back_after_its_lease(
    redis_server: RedisServer,
) -> None:
    async with (
        processes(redis_server.url, 1) as (backend,),
        await anyio.open_process(
            [sys.executable, "-c", CHILD, redis_server.url, backend.prefix],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stderr=None,
        ) as child,
    ):
        assert child.stdout is not None
        with anyio.fail_after(15):
            assert (await child.stdout.receive()).strip() == b"ready"
        slots = RedisSlots(backend, "dead", 3, lease=1.0)
        # The child holds 2 units and waits for 3 at the head of the queue: one unit is
        # free, but whoever comes next waits behind the child's place.
        with pytest.raises(LimiterFull):
            await take(slots, 1, wait=0)
        assert slots.in_use == 2
        child.send_signal(signal.SIGKILL)
        await child.wait()
        killed = time.monotonic()
        await take(slots, 3, wait=5)
        # Within the lease (1 s) and one check (a quarter lease), plus scheduling.
        assert time.monotonic() - killed < 2.5
        assert slots.in_use == 3
        await slots.release(3)


async def test_a_lost_lease_is_claimed_again() -> None:
    with own_redis() as server:
        async with processes(server.url) as (one, two):
            a, b = RedisSlots(one, "flushed", 3, lease=0.6), RedisSlots(two, "flushed", 3)
            await take(a, 2)
            server.flush()  # Redis forgets everything, as after a failover to an empty replica
            # Within a renewal, the process that still holds its 2 units claims them again.
            used_key = one.key("slots", "flushed", "used")
            with anyio.fail_after(5):
                while int(await one.client.get(used_key) or 0) != 2:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            with pytest.raises(LimiterFull):
                await take(b, 2, wait=0)
            await take(b, 1, wait=0)
            await a.release(2)
            await b.release(1)
            assert b.in_use == 0


async def test_redis_stopped_answers_503_fast_then_recovers() -> None:
    with own_redis(persist=True) as server:
        async with processes(server.url, 1) as (backend,):
            slots = RedisSlots(backend, "down", 2, lease=1.0)
            limiter = Limiter(slots=slots, queue_timeout=None)
            await limiter.acquire(1)
            await limiter.acquire(1)
            failed: list[float] = []

            async def waiter() -> None:
                with pytest.raises(RedisUnavailable):
                    await limiter.acquire(1)
                failed.append(time.monotonic())

            async with anyio.create_task_group() as group:
                group.start_soon(waiter)
                await until(lambda: limiter.waiting == 1)
                server.stop(signal.SIGKILL)
                stopped = time.monotonic()
            # The request that waited gets its 503, within seconds.
            assert failed[0] - stopped < 3

            # New requests too: the middleware sends the 503 with Retry-After.
            async def app(scope: Scope, receive: Receive, send: Send) -> None:
                raise AssertionError("never reached")

            client = FakeClient()
            started = time.monotonic()
            await LimiterMiddleware(app, limiter=limiter)(
                {"type": "http", "method": "GET", "path": "/", "headers": []},
                client.receive,
                client.send,
            )
            assert time.monotonic() - started < 3
            assert client.status == 503 and client.headers[b"retry-after"] == b"1"
            assert orjson.loads(client.messages[1]["body"])["error"]["type"] == "unavailable"

            # Giving a unit back does not fail: Redis is put right once it answers again.
            await limiter.release(1)
            assert slots.held == 1

            server.start()  # with its data: both units held, the waiter's place queued
            used_key = backend.key("slots", "down", "used")
            with anyio.fail_after(10):
                while True:
                    with contextlib.suppress(RedisError):
                        if int(await backend.client.get(used_key) or 0) == 1:
                            break
                    await anyio.sleep(0.05)
            await limiter.acquire(1)
            assert slots.in_use == 2 and slots.held == 2
            await limiter.release(2)
            assert slots.in_use == 0
