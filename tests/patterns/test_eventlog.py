"""The event log and resume(): replay, live continuation, eviction and unknown ids."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint

from asgistream import Event, HTTPError
from asgistream.patterns.eventlog import MemoryEventLog, TooManyTopics, parse_last_event_id, resume

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def take(events: AsyncIterator[Event], n: int) -> list[Event]:
    got = []
    with anyio.fail_after(5):
        async for event in events:
            got.append(event)
            if len(got) == n:
                break
    return got


async def publish(log: MemoryEventLog, topic: str, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await log.append(topic, {"n": i}, event="tick" if i % 2 else None)


async def test_ids_count_from_one_per_topic() -> None:
    log = MemoryEventLog()
    assert [await log.append("a", i) for i in range(3)] == [1, 2, 3]
    assert await log.append("b", "x") == 1


async def test_replay_after_last_event_id_then_live() -> None:
    log = MemoryEventLog()
    await publish(log, "t", 5)
    async with contextlib.aclosing(resume(log, "t", 2)) as events:
        got = await take(events, 3)
        assert [e.id for e in got] == [3, 4, 5]
        assert got[0].event is None and got[1].event == "tick"
        async with anyio.create_task_group() as group:
            group.start_soon(publish, log, "t", 2, 5)
            live = await take(events, 2)
        assert [(e.id, e.data) for e in live] == [(6, {"n": 5}), (7, {"n": 6})]


async def test_zero_replays_everything_and_none_only_new_events() -> None:
    log = MemoryEventLog()
    await publish(log, "t", 3)
    async with contextlib.aclosing(resume(log, "t", 0, follow=False)) as events:
        assert [e.id async for e in events] == [1, 2, 3]
    async with (
        contextlib.aclosing(resume(log, "t", None)) as events,
        anyio.create_task_group() as group,
    ):
        group.start_soon(publish, log, "t", 1, 3)
        assert [e.id for e in await take(events, 1)] == [4]


async def test_evicted_id_gets_a_reset_event_then_the_oldest() -> None:
    log = MemoryEventLog(capacity=5)
    await publish(log, "t", 12)  # ids 8..12 retained
    async with contextlib.aclosing(resume(log, "t", 3, follow=False)) as events:
        got = [e async for e in events]
    assert got[0].event == "reset"
    assert got[0].id == 7
    assert got[0].data == {
        "reason": "evicted",
        "last_event_id": 3,
        "oldest": 8,
        "newest": 12,
        "missed": 4,
    }
    assert [e.id for e in got[1:]] == [8, 9, 10, 11, 12]


async def test_unknown_future_id_gets_a_reset() -> None:
    log = MemoryEventLog()
    await publish(log, "t", 2)
    async with contextlib.aclosing(resume(log, "t", 50, follow=False)) as events:
        got = [e async for e in events]
    assert got[0].event == "reset" and got[0].data["reason"] == "unknown"
    assert got[0].id == 0
    assert [e.id for e in got[1:]] == [1, 2]


async def test_a_reader_that_falls_behind_gets_a_reset_not_a_gap() -> None:
    log = MemoryEventLog(capacity=4)
    async with contextlib.aclosing(resume(log, "t", 0)) as events:
        await publish(log, "t", 2)
        first = await take(events, 1)
        await publish(log, "t", 10, 2)  # ids 3..12; 9..12 retained
        rest = await take(events, 6)
    assert [e.id for e in first] == [1]
    assert rest[0].id == 2  # already read before the burst
    assert rest[1].event == "reset" and rest[1].data["missed"] == 6
    assert [e.id for e in rest[2:]] == [9, 10, 11, 12]


async def test_many_concurrent_readers_each_see_every_event_once() -> None:
    log = MemoryEventLog(capacity=1000)
    results: list[list[Any]] = []

    async def reader() -> None:
        async with contextlib.aclosing(resume(log, "t", 0)) as events:
            results.append([e.id for e in await take(events, 200)])

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(reader)
        for i in range(200):
            await log.append("t", i)
            if i % 7 == 0:
                await checkpoint()
    assert results == [list(range(1, 201))] * 5


async def test_topics_are_bounded_and_busy_ones_are_kept() -> None:
    log = MemoryEventLog(max_topics=2)
    await log.append("a", 1)
    await log.append("b", 1)
    await log.append("c", 1)  # evicts a, the least recently used
    assert len(log) == 2
    assert (await log.read("a", 0, limit=10)).newest == 0  # a is new again
    async with anyio.create_task_group() as group:
        group.start_soon(log.wait, "a", 0)
        group.start_soon(log.wait, "c", 5)
        await anyio.sleep(0.01)
        with pytest.raises(TooManyTopics):
            await log.append("d", 1)
        await log.append("a", 2)
        group.cancel_scope.cancel()


def test_parse_last_event_id() -> None:
    assert parse_last_event_id(None) is None
    assert parse_last_event_id("") is None
    assert parse_last_event_id("0") == 0
    assert parse_last_event_id("42") == 42
    for bad in ("-1", "x", "1.5", " 1", "٣", "9" * 19):
        with pytest.raises(HTTPError) as info:
            parse_last_event_id(bad)
        assert info.value.status == 400 and info.value.type == "invalid_last_event_id"
