"""RedisFanout beyond the shared broker tests: one reader per process, Redis stopped, frozen
or cutting the reader off, and recovery without a restart.

The shared behaviour (every subscriber of every process gets every item, in order; both
slow-subscriber policies) is in ``tests/patterns/test_fanout.py`` for every backend. Two open
:class:`RedisBackend` objects stand for two processes. Tests that stop, freeze or cut off
Redis start a redis-server of their own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from asgistream import HTTPError
from asgistream.backends.redis import RedisBackend, RedisUnavailable
from asgistream.backends.redis._pubsub import RECONNECT_MAX_DELAY, reader_of
from asgistream.backends.redis.fanout import RedisFanout
from asgistream.backends.redis.jobs import RedisJobStore
from asgistream.patterns.fanout import Broker, Subscription
from tests.redis_server import RedisServer, processes, redis_server

pytestmark = pytest.mark.anyio

QUICK = 1.0
"""The socket timeout of these tests' backends: an idle reader pings every 0.5 s."""


@contextlib.asynccontextmanager
async def brokers(backends: list[RedisBackend], channel: str = "news") -> AsyncIterator[Any]:
    """One broker per backend, on ``channel``."""
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(Broker(RedisFanout(backend, channel)))
            for backend in backends
        ]


async def next_item(subscription: Subscription, limit: float = 5.0) -> Any:
    with anyio.fail_after(limit):
        return await subscription.__anext__()


async def subscribe_when_back(broker: Broker, limit: float = 10.0) -> Subscription:
    """A new subscription as soon as the broker takes one again."""
    with anyio.fail_after(limit):
        while True:
            try:
                return broker.subscribe()
            except RedisUnavailable:
                await anyio.sleep(0.02)


async def test_names_and_layout(redis_server: RedisServer) -> None:
    async with processes(redis_server.url, 1, socket_timeout=QUICK) as (backend,):
        fanout = RedisFanout(backend)
        assert fanout.channel == f"{backend.prefix}:fanout:broadcast"
        for bad in ("", "a b", "a:b", "{x}", "x" * 129):
            with pytest.raises(HTTPError) as info:
                RedisFanout(backend, bad)
            assert info.value.status == 400 and info.value.type == "invalid_channel"


async def test_one_reader_per_process_shared_by_every_channel_and_the_jobs() -> None:
    with redis_server() as server:
        async with (
            processes(server.url, socket_timeout=QUICK) as (a, b),
            brokers([a, b], "one") as (one_a, one_b),
            brokers([a], "two") as (two_a,),
            one_a.subscribe() as near,
            one_b.subscribe() as far,
            two_a.subscribe() as other,
        ):
            jobs = RedisJobStore(a)
            assert await jobs._listen()
            clients = await a.client.client_list(_type="pubsub")
            assert len(clients) == 2  # a's reader and b's, whatever they follow
            assert reader_of(a) is reader_of(a) and reader_of(a) is not reader_of(b)
            channel = a.channel("fanout", "one")
            assert await a.client.pubsub_numsub(channel) == [(channel.encode(), 2)]
            await one_b.publish("one")
            await two_a.publish("two")
            assert [await next_item(s) for s in (near, far, other)] == ["one", "one", "two"]


async def test_a_publish_is_queued_here_before_it_returns(redis_server: RedisServer) -> None:
    async with (
        processes(redis_server.url, socket_timeout=QUICK) as backends,
        brokers(backends) as (here, _there),
        here.subscribe() as near,
    ):
        for n in range(20):
            await here.publish(n)
            assert len(near) == n + 1  # read your own broadcasts on your own process


async def test_redis_stopped_ends_every_stream_then_everything_recovers() -> None:
    with redis_server() as server:
        async with (
            processes(server.url, socket_timeout=QUICK) as backends,
            brokers(backends) as (a, b),
        ):
            near, far = a.subscribe(), b.subscribe()
            await a.publish("before")
            assert [await next_item(near), await next_item(far)] == ["before", "before"]

            server.stop()
            started = time.monotonic()
            for subscription in (near, far):  # streams end: clients learn and reconnect
                with pytest.raises(RedisUnavailable) as info:
                    await next_item(subscription, limit=3 * QUICK)
                assert info.value.status == 503 and info.value.type == "unavailable"
            assert time.monotonic() - started < 2 * QUICK
            assert len(a) == len(b) == 0
            with pytest.raises(RedisUnavailable) as refused:
                a.subscribe()
            assert refused.value.headers["retry-after"] == "1"
            started = time.monotonic()
            with pytest.raises(RedisUnavailable):
                await a.publish("lost")
            assert time.monotonic() - started < 3 * QUICK  # connect timeout and one retry

            server.start()
            started = time.monotonic()
            near, far = await subscribe_when_back(a), await subscribe_when_back(b)
            assert time.monotonic() - started < RECONNECT_MAX_DELAY + 2 * QUICK
            await b.publish("after")
            assert [await next_item(near), await next_item(far)] == ["after", "after"]


async def test_a_reader_cut_off_by_redis_reconnects_by_itself() -> None:
    # Redis cuts a reader that falls behind its client-output-buffer-limit; here, by command.
    with redis_server() as server:
        async with (
            processes(server.url, socket_timeout=QUICK) as backends,
            brokers(backends) as (a, b),
        ):
            near, far = a.subscribe(), b.subscribe()
            assert await backends[0].client.client_kill_filter(_type="pubsub") == 2
            for subscription in (near, far):
                with pytest.raises(RedisUnavailable):
                    await next_item(subscription)
            near, far = await subscribe_when_back(a), await subscribe_when_back(b)
            await a.publish("again")
            assert [await next_item(near), await next_item(far)] == ["again", "again"]


async def test_a_frozen_redis_is_detected_by_the_readers_ping() -> None:
    with redis_server() as server:
        async with (
            processes(server.url, 1, socket_timeout=QUICK) as backends,
            brokers(backends) as (broker,),
        ):
            subscription = broker.subscribe()
            await broker.publish(1)
            assert await next_item(subscription) == 1
            os.kill(server.pid, signal.SIGSTOP)  # no FIN, no RST: only silence
            try:
                started = time.monotonic()
                with pytest.raises(RedisUnavailable):
                    await next_item(subscription, limit=4 * QUICK)
                assert time.monotonic() - started < 2.5 * QUICK  # two ping intervals, about
            finally:
                os.kill(server.pid, signal.SIGCONT)
            subscription = await subscribe_when_back(broker)
            await broker.publish(2)
            assert await next_item(subscription) == 2


async def test_a_broker_opened_while_redis_is_down_starts_by_itself() -> None:
    with redis_server() as server:
        server.stop()
        async with processes(server.url, 1, socket_timeout=QUICK) as backends:
            started = time.monotonic()
            async with brokers(backends) as (broker,):
                assert time.monotonic() - started < 2 * QUICK  # the app starts anyway
                with pytest.raises(RedisUnavailable):
                    broker.subscribe()
                server.start()
                subscription = await subscribe_when_back(broker)
                await broker.publish("up")
                assert await next_item(subscription) == "up"
