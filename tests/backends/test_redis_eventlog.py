"""RedisEventLog on a real redis-server: epochs, TTL, retention, names, outages, one reader.

The shared behaviour (ids, replay, eviction, live tail) is in ``tests/patterns/test_eventlog.py``
for every backend; these tests are about what only a store in Redis can meet. Those that stop,
flush or restart Redis start a redis-server of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import anyio
import pytest

from asgistream import Event, HTTPError
from asgistream.backends.redis import RedisBackend, RedisUnavailable
from asgistream.backends.redis.eventlog import POLL_INTERVAL, RedisEventLog
from asgistream.patterns.eventlog import Position, resume
from tests.helpers import take
from tests.redis_server import RedisServer, processes, redis_server

pytestmark = pytest.mark.anyio

QUICK = 1.0
"""The socket timeout of these tests' backends: blocking reads of 0.5 s, failures seen fast."""


async def collect(log: RedisEventLog, topic: str, after: Position | int | None) -> list[Event]:
    async with contextlib.aclosing(resume(log, topic, after, follow=False)) as events:
        return [e async for e in events]


def epoch_of(event: Event) -> str:
    return str(event.id).rpartition(":")[0]


# -- epochs ------------------------------------------------------------------------------------


async def test_ids_carry_one_epoch_shared_by_every_process(redis_server: RedisServer) -> None:
    async with processes(redis_server.url, 2, socket_timeout=QUICK) as (one, other):
        a, b = RedisEventLog(one), RedisEventLog(other)
        assert [(await a.append("t", i)).id for i in range(2)] == [1, 2]
        assert (await b.append("t", 2)).id == 3
        events = await collect(b, "t", 0)
        epoch = epoch_of(events[0])
        assert len(epoch) == 11 and [e.id for e in events] == [f"{epoch}:{i}" for i in (1, 2, 3)]
        assert [e.data for e in events] == [0, 1, 2]
        assert (await a.read("t", 0, limit=0)).epoch == epoch
        # An unknown topic reads as empty, and reading does not create it.
        assert await a.read("nothing", 0, limit=10) == (await a.read("nothing", 5, limit=0))
        assert not await one.client.exists(one.key("topic", "nothing", "meta"))


async def test_a_flushed_topic_starts_a_new_epoch_and_old_ids_get_a_reset() -> None:
    with redis_server() as server:
        async with processes(server.url, 2, socket_timeout=QUICK) as (one, other):
            a, b = RedisEventLog(one), RedisEventLog(other)
            for i in range(3):
                await a.append("t", f"old{i}")
            old = epoch_of((await collect(a, "t", 0))[0])

            async def flush_and_publish() -> None:
                await anyio.sleep(0.1)  # the follower waits in the reader by now
                server.flush()
                await a.append("t", "new0")
                await a.append("t", "new1")

            async with (
                contextlib.aclosing(resume(b, "t", Position(3, old))) as follower,
                anyio.create_task_group() as group,
            ):
                group.start_soon(flush_and_publish)
                started = time.monotonic()
                # Ids 1 and 2 are below what the reader follows: its check finds the topic
                # went back and wakes the follower, which reads the new epoch.
                got = await take(follower, 3, limit=5)
                woken = time.monotonic() - started
            new = epoch_of(got[1])
            assert new != old
            assert got[0].event == "reset" and got[0].id == f"{new}:0"
            assert got[0].data == {
                "reason": "unknown",
                "last_event_id": 3,
                "oldest": 1,
                "newest": 2,
                "missed": None,
            }
            assert [(e.id, e.data) for e in got[1:]] == [(f"{new}:1", "new0"), (f"{new}:2", "new1")]
            assert woken < 3 * QUICK, woken
            # A client coming back with an id of the lost history gets the reset too.
            late = await collect(b, "t", Position(2, old))
            assert late[0].event == "reset" and [e.data for e in late[1:]] == ["new0", "new1"]
            print(f"follower learned of the flush in {woken * 1000:.0f} ms")


async def test_a_topic_that_went_back_within_its_epoch_gets_a_new_epoch() -> None:
    """A failover to a replica that missed the last appends: same epoch, lower counter."""
    with redis_server() as server:
        async with processes(server.url, 2, socket_timeout=QUICK) as (one, other):
            a, b = RedisEventLog(one), RedisEventLog(other)
            for i in range(5):
                await a.append("t", i)
            assert len(await collect(b, "t", 0)) == 5  # b has seen id 5 too
            epoch = (await a.read("t", 0, limit=0)).epoch
            # What the stale replica has: ids 1..2, the same epoch.
            meta, log = one.key("topic", "t", "meta"), one.key("topic", "t", "log")
            await one.client.hset(meta, "seq", 2)
            await one.client.xdel(log, "3-0", "4-0", "5-0")
            await one.client.execute_command("XSETID", log, "2-0")
            # Reading on b notices it and starts a new epoch rather than reuse ids 3..5.
            page = await b.read("t", 0, limit=10)
            assert page.epoch != epoch and page.newest == 2
            # Appending on a (which saw id 5 of the old epoch) does not reuse them either.
            position = await a.append("t", "after")
            assert (position.id, position.epoch) == (3, page.epoch)
            got = await collect(b, "t", Position(4, epoch))
            assert got[0].event == "reset" and got[0].data["reason"] == "unknown"
            assert [e.data for e in got[1:]] == [0, 1, "after"]


async def test_appending_in_the_stale_epoch_rotates_it_in_the_same_step() -> None:
    with redis_server() as server:
        async with processes(server.url, 1, socket_timeout=QUICK) as (one,):
            log = RedisEventLog(one)
            for i in range(4):
                await log.append("t", i)
            epoch = (await log.read("t", 0, limit=0)).epoch
            await one.client.hset(one.key("topic", "t", "meta"), "seq", 1)
            await one.client.xdel(one.key("topic", "t", "log"), "2-0", "3-0", "4-0")
            await one.client.execute_command("XSETID", one.key("topic", "t", "log"), "1-0")
            assert (await log.append("t", "x")).id == 2
            assert (await log.read("t", 0, limit=0)).epoch != epoch


async def test_a_stream_ahead_of_its_counter_starts_a_new_history(
    redis_server: RedisServer,
) -> None:
    async with processes(redis_server.url, 1, socket_timeout=QUICK) as (one,):
        log = RedisEventLog(one)
        await log.append("t", 0)
        await one.client.xadd(one.key("topic", "t", "log"), {"d": "9"}, id="9-0")
        epoch = (await log.read("t", 0, limit=0)).epoch
        assert (await log.append("t", 1)).id == 1  # not 2 next to a foreign 9
        page = await log.read("t", 0, limit=10)
        assert page.epoch != epoch and [e.data for e in page.entries] == [1]


async def test_a_restarted_redis_with_its_data_keeps_ids_and_epoch() -> None:
    with redis_server(persist=True) as server:
        async with processes(server.url, 1, socket_timeout=QUICK) as (one,):
            log = RedisEventLog(one)
            for i in range(3):
                await log.append("t", i)
            before = await collect(log, "t", 0)
            server.stop()
            server.start()
            assert (await log.append("t", 3)).id == 4
            after = await collect(log, "t", Position(2, epoch_of(before[0])))
            assert [e.id for e in after] == [f"{epoch_of(before[0])}:{i}" for i in (3, 4)]


# -- retention, expiry, names ------------------------------------------------------------------


async def test_retention_is_bounded_and_every_key_expires(redis_server: RedisServer) -> None:
    async with processes(redis_server.url, 1, socket_timeout=QUICK) as (one,):
        log = RedisEventLog(one, capacity=5, ttl=60)
        for i in range(20):
            await log.append("t", i)
        meta, stream = one.key("topic", "t", "meta"), one.key("topic", "t", "log")
        assert await one.client.xlen(stream) == 5
        page = await log.read("t", 0, limit=100)
        assert (page.oldest, page.newest) == (16, 20)
        for key in (meta, stream):
            assert 55_000 < await one.client.pttl(key) <= 60_000
        forever = RedisEventLog(one, ttl=None)
        await forever.append("kept", 1)
        assert await one.client.pttl(one.key("topic", "kept", "log")) == -1
        assert sorted(await one.client.keys(f"{one.prefix}:*")) == sorted(
            k.encode()
            for k in (meta, stream, *(one.key("topic", "kept", p) for p in ("meta", "log")))
        )


async def test_an_idle_topic_expires_whole_and_comes_back_in_a_new_epoch(
    redis_server: RedisServer,
) -> None:
    async with processes(redis_server.url, 1, socket_timeout=QUICK) as (one,):
        log = RedisEventLog(one, ttl=0.2)
        await log.append("t", "a")
        epoch = (await log.read("t", 0, limit=0)).epoch
        await anyio.sleep(0.3)
        assert await one.client.keys(f"{one.prefix}:*") == []
        assert (await log.read("t", 0, limit=0)).newest == 0
        assert (await log.append("t", "b")).id == 1
        got = await collect(log, "t", Position(1, epoch))
        assert got[0].event == "reset" and [e.data for e in got[1:]] == ["b"]


@pytest.mark.parametrize(
    "name", ["", "a:b", "{t}", "a b", "t\r\nDEL x", "é", "*", "a" * 129, "x}:{y"]
)
async def test_hostile_topic_names_are_a_400(redis_server: RedisServer, name: str) -> None:
    async with processes(redis_server.url, 1, socket_timeout=QUICK) as (one,):
        log = RedisEventLog(one)
        for call in (
            log.append(name, 1),
            log.read(name, 0, limit=1),
            log.wait(name, 0),
        ):
            with pytest.raises(HTTPError) as info:
                await call
            assert info.value.status == 400 and info.value.type == "invalid_topic"
        assert await one.client.keys(f"{one.prefix}:*") == []
        assert (await log.append("a" * 128, 1)).id == 1  # the longest name is fine


# -- Redis unreachable ---------------------------------------------------------------------------


async def test_redis_stopped_is_a_503_in_seconds_then_everything_recovers() -> None:
    with redis_server() as server:
        async with processes(server.url, 2, socket_timeout=QUICK) as (one, other):
            a, b = RedisEventLog(one), RedisEventLog(other)
            await a.append("t", 0)
            failures: list[float] = []

            async def waiter() -> None:
                with pytest.raises(RedisUnavailable):
                    await b.wait("t", 1)
                failures.append(time.monotonic())

            async with anyio.create_task_group() as group:
                group.start_soon(waiter)
                await anyio.sleep(0.1)
                stopped = time.monotonic()
                server.stop()
            assert failures[0] - stopped < 2 * QUICK
            for call in (lambda: a.append("t", 1), lambda: b.read("t", 0, limit=5)):
                started = time.monotonic()
                with pytest.raises(RedisUnavailable) as info:
                    await call()
                assert time.monotonic() - started < 3 * QUICK
                assert info.value.status == 503 and info.value.headers["retry-after"] == "1"
            # A waiter registered while Redis is down fails too, once the reader tries again.
            with anyio.fail_after(3 * QUICK), pytest.raises(RedisUnavailable):
                await b.wait("t", 1)
            server.start()
            started = time.monotonic()
            assert (await a.append("t", "back")).id == 1  # a new Redis: a new epoch
            async with anyio.create_task_group() as group:
                group.start_soon(b.wait, "t", 1)
                await anyio.sleep(0.05)
                await a.append("t", "live")
            print(f"recovered in {(time.monotonic() - started) * 1000:.0f} ms")


# -- one reader per process ----------------------------------------------------------------------


async def test_one_reader_connection_per_process_however_many_subscribers(
    redis_server: RedisServer,
) -> None:
    async with processes(redis_server.url, 2, socket_timeout=QUICK) as (one, other):
        logs = [RedisEventLog(one), RedisEventLog(one), RedisEventLog(other)]
        topics = [f"t{i}" for i in range(20)]
        got: dict[tuple[int, int], list[Event]] = {}

        async def subscriber(n: int) -> None:
            log, topic = logs[n % 3], topics[n % len(topics)]
            async with contextlib.aclosing(resume(log, topic, None)) as events:
                got[(n, 0)] = await take(events, 2)

        async with anyio.create_task_group() as group:
            for n in range(120):
                group.start_soon(subscriber, n)
            await anyio.sleep(0.3)
            clients = (await one.client.execute_command("CLIENT", "LIST")).decode()
            readers = [line for line in clients.splitlines() if "asgistream-reader-" in line]
            blocked = [line for line in readers if "cmd=xread" in line]
            for topic in topics:
                await logs[0].append(topic, 1)
                await logs[2].append(topic, 2)
        assert len(readers) == 2 and len(blocked) == 2, readers
        assert {one.process_id[:12], other.process_id[:12]} == {
            line.split("name=asgistream-reader-")[1][:12] for line in readers
        }
        assert all([e.data for e in events] == [1, 2] for events in got.values())
        assert len(got) == 120


async def test_beyond_max_followed_topics_waiters_poll(redis_server: RedisServer) -> None:
    async with processes(redis_server.url, 2, socket_timeout=QUICK) as (one, other):
        log, publisher = RedisEventLog(one, max_followed=2), RedisEventLog(other)
        waits: dict[str, float] = {}

        async def wait(topic: str) -> None:
            started = time.monotonic()
            await log.wait(topic, 0)
            waits[topic] = time.monotonic() - started

        async with anyio.create_task_group() as group:
            for topic in ("a", "b", "c"):
                group.start_soon(wait, topic)
            await anyio.sleep(0.1)
            assert len(log._shared.reader.watches) == 2
            await publisher.append("a", 1)
            await publisher.append("b", 1)
        assert waits["a"] < 0.1 + POLL_INTERVAL and waits["b"] < 0.1 + POLL_INTERVAL
        assert POLL_INTERVAL <= waits["c"] < 2 * POLL_INTERVAL


async def test_a_follower_on_another_process_gets_each_append_as_it_happens(
    redis_server: RedisServer,
) -> None:
    """Append on one process, a follower on the other, one event at a time: each arrives
    before the next is appended (the latency is measured by ``make bench``, not here)."""
    async with processes(redis_server.url, 2, socket_timeout=QUICK) as (one, other):
        publisher, log = RedisEventLog(one), RedisEventLog(other)
        async with contextlib.aclosing(resume(log, "live", None)) as events:
            for i in range(100):
                async with anyio.create_task_group() as group:
                    group.start_soon(publisher.append, "live", i)
                    event = (await take(events, 1))[0]
                assert event.data == i
                assert event.id == f"{epoch_of(event)}:{i + 1}"


async def test_a_cancelled_subscriber_always_ends(redis_server: RedisServer) -> None:
    """A stream's watcher cancels its task once (``task.cancel()``) when the client leaves;
    a cancellation arriving as a Redis command completes must not be lost (Python 3.11's
    ``asyncio.wait_for``, inside redis-py, drops it), or the stream would wait forever."""
    async with processes(redis_server.url, 1, socket_timeout=QUICK) as (one,):
        log = RedisEventLog(one)
        await log.append("t0", 1)

        async def subscriber(topic: str) -> None:
            async for _ in resume(log, topic, 0):
                pass

        for round in range(40):
            tasks = [asyncio.create_task(subscriber(f"t{i % 3}")) for i in range(5)]
            for _ in range(round % 8):
                await asyncio.sleep(0)
            for task in tasks:
                task.cancel()
            done, pending = await asyncio.wait(tasks, timeout=2)
            assert not pending, f"round {round}: {len(pending)} subscribers ignored cancel"
            assert all(task.cancelled() for task in done)
        assert not log._shared.reader.watches or all(
            not watch.round.afters for watch in log._shared.reader.watches.values()
        )


async def test_followers_of_one_topic_share_their_reads(redis_server: RedisServer) -> None:
    """300 followers wake for each event; on a pool of 20 connections they would be refused
    ("Too many connections") if each read on its own."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    async with (
        RedisBackend(redis_server.url, prefix=prefix, max_connections=20) as one,
        RedisBackend(redis_server.url, prefix=prefix) as other,
    ):
        log, publisher = RedisEventLog(one), RedisEventLog(other)
        got: list[list[Any]] = []

        async def follower() -> None:
            async with contextlib.aclosing(resume(log, "wide", 0)) as events:
                got.append([e.data for e in await take(events, 5)])

        async with anyio.create_task_group() as group:
            for _ in range(300):
                group.start_soon(follower)
            await anyio.sleep(0.2)
            for i in range(5):
                await publisher.append("wide", i)
                await anyio.sleep(0.01)
        assert got == [[0, 1, 2, 3, 4]] * 300


async def test_a_shared_read_outlives_its_first_reader(redis_server: RedisServer) -> None:
    async with processes(redis_server.url, 1, socket_timeout=QUICK) as (one,):
        log = RedisEventLog(one)
        await log.append("t", "x")
        for round in range(12):
            first = asyncio.create_task(log.read("t", 0, limit=5))
            second = asyncio.create_task(log.read("t", 0, limit=5))
            for _ in range(round % 6):
                await asyncio.sleep(0)
            first.cancel()
            with anyio.fail_after(2):
                page = await second
            assert [e.data for e in page.entries] == ["x"]
            await asyncio.gather(first, return_exceptions=True)
        assert not log._shared.flights
