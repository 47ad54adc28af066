"""The event log and resume(): replay, live continuation, eviction, unknown ids and epochs."""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint

from asgistream import Event, HTTPError
from asgistream.backends.memory import MemoryEventLog, TooManyTopics
from asgistream.patterns.eventlog import (
    EventLog,
    LogPage,
    Position,
    parse_last_event_id,
    parse_position,
    resume,
)
from tests.helpers import take
from tests.stores import Stores

pytestmark = pytest.mark.anyio


def number(event: Event) -> int:
    """An event's id without its epoch: the same for every store (a Redis id reads
    ``EPOCH:ID``, a memory one ``ID``)."""
    return int(str(event.id).rpartition(":")[2])


def numbers(events: list[Event]) -> list[int]:
    return [number(e) for e in events]


async def at(log: EventLog, topic: str, id: int) -> Position:
    """The position ``id`` in the topic's current epoch, as a client that got it would send."""
    return Position(id, (await log.read(topic, 0, limit=0)).epoch)


async def publish(log: EventLog, topic: str, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await log.append(topic, {"n": i}, event="tick" if i % 2 else None)


async def test_ids_count_from_one_per_topic(stores: Stores) -> None:
    log = stores.event_log()
    assert [(await log.append("a", i)).id for i in range(3)] == [1, 2, 3]
    assert (await log.append("b", "x")).id == 1


async def test_every_process_sees_the_same_ids(stores: Stores) -> None:
    one, other = stores.event_log(), stores.event_log()
    await publish(one, "t", 2)
    await publish(other, "t", 1, 2)
    async with contextlib.aclosing(resume(one, "t", 0, follow=False)) as events:
        assert [(number(e), e.data) async for e in events] == [
            (1, {"n": 0}),
            (2, {"n": 1}),
            (3, {"n": 2}),
        ]


async def test_replay_after_last_event_id_then_live(stores: Stores) -> None:
    log = stores.event_log()
    await publish(log, "t", 5)
    async with contextlib.aclosing(resume(log, "t", await at(log, "t", 2))) as events:
        got = await take(events, 3)
        assert numbers(got) == [3, 4, 5]
        assert got[0].event is None and got[1].event == "tick"
        async with anyio.create_task_group() as group:
            group.start_soon(publish, log, "t", 2, 5)
            live = await take(events, 2)
        assert [(number(e), e.data) for e in live] == [(6, {"n": 5}), (7, {"n": 6})]


async def test_zero_replays_everything_and_none_only_new_events(stores: Stores) -> None:
    log = stores.event_log()
    await publish(log, "t", 3)
    async with contextlib.aclosing(resume(log, "t", 0, follow=False)) as events:
        assert [number(e) async for e in events] == [1, 2, 3]
    async with (
        contextlib.aclosing(resume(log, "t", None)) as events,
        anyio.create_task_group() as group,
    ):
        group.start_soon(publish, log, "t", 1, 3)
        assert numbers(await take(events, 1)) == [4]


async def test_evicted_id_gets_a_reset_event_then_the_oldest(stores: Stores) -> None:
    log = stores.event_log(capacity=5)
    await publish(log, "t", 12)  # ids 8..12 retained
    async with contextlib.aclosing(resume(log, "t", await at(log, "t", 3), follow=False)) as events:
        got = [e async for e in events]
    assert got[0].event == "reset"
    assert number(got[0]) == 7
    assert got[0].data == {
        "reason": "evicted",
        "last_event_id": 3,
        "oldest": 8,
        "newest": 12,
        "missed": 4,
    }
    assert numbers(got[1:]) == [8, 9, 10, 11, 12]


async def test_unknown_future_id_gets_a_reset(stores: Stores) -> None:
    log = stores.event_log()
    await publish(log, "t", 2)
    async with contextlib.aclosing(
        resume(log, "t", await at(log, "t", 50), follow=False)
    ) as events:
        got = [e async for e in events]
    assert got[0].event == "reset" and got[0].data["reason"] == "unknown"
    assert number(got[0]) == 0
    assert numbers(got[1:]) == [1, 2]


async def test_a_reader_that_falls_behind_gets_a_reset_not_a_gap(stores: Stores) -> None:
    log = stores.event_log(capacity=4)
    async with contextlib.aclosing(resume(log, "t", 0)) as events:
        await publish(log, "t", 2)
        first = await take(events, 1)
        await publish(log, "t", 10, 2)  # ids 3..12; 9..12 retained
        rest = await take(events, 6)
    assert numbers(first) == [1]
    assert number(rest[0]) == 2  # already read before the burst
    assert rest[1].event == "reset" and rest[1].data["missed"] == 6
    assert numbers(rest[2:]) == [9, 10, 11, 12]


async def test_many_concurrent_readers_each_see_every_event_once(stores: Stores) -> None:
    log = stores.event_log(capacity=1000)
    results: list[list[Any]] = []

    async def reader() -> None:
        async with contextlib.aclosing(resume(log, "t", 0)) as events:
            results.append(numbers(await take(events, 200)))

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(reader)
        for i in range(200):
            await log.append("t", i)
            if i % 7 == 0:
                await checkpoint()
    assert results == [list(range(1, 201))] * 5


# -- epochs: a store that can lose a topic's history names each history ------------------------


class EpochLog:
    """A memory log that says which history it holds; ``lose()`` starts a new one, as a
    flushed or failed-over store would, with ids from 1 again."""

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self.log = MemoryEventLog()
        self.lost = anyio.Event()

    def lose(self, epoch: str) -> None:
        self.epoch, self.log = epoch, MemoryEventLog()
        lost, self.lost = self.lost, anyio.Event()
        lost.set()

    async def append(self, topic: str, data: Any, *, event: str | None = None) -> Position:
        return Position((await self.log.append(topic, data, event=event)).id, self.epoch)

    async def read(self, topic: str, after: int, *, limit: int) -> LogPage:
        page = await self.log.read(topic, after, limit=limit)
        return LogPage(page.entries, page.oldest, page.newest, self.epoch)

    async def wait(self, topic: str, after: int) -> None:
        lost = self.lost
        async with anyio.create_task_group() as group:

            async def appended() -> None:
                await self.log.wait(topic, after)
                group.cancel_scope.cancel()

            group.start_soon(appended)
            await lost.wait()  # a new epoch: the reader must read again
            group.cancel_scope.cancel()


async def test_ids_name_their_epoch_and_another_epoch_gets_a_reset() -> None:
    log = EpochLog("e1")
    await publish(log, "t", 3)
    async with contextlib.aclosing(resume(log, "t", Position(1, "e1"), follow=False)) as events:
        assert [e.id async for e in events] == ["e1:2", "e1:3"]
    log.lose("e2")
    await publish(log, "t", 4)  # ids 1..4 again, other events
    async with contextlib.aclosing(resume(log, "t", Position(2, "e1"), follow=False)) as events:
        got = [e async for e in events]
    assert got[0].event == "reset" and got[0].id == "e2:0"
    assert got[0].data["reason"] == "unknown" and got[0].data["last_event_id"] == 2
    assert [e.id for e in got[1:]] == ["e2:1", "e2:2", "e2:3", "e2:4"]
    # An id without an epoch is unknown too; 0 is the start of every epoch.
    async with contextlib.aclosing(resume(log, "t", 2, follow=False)) as events:
        assert (await events.__anext__()).event == "reset"
    async with contextlib.aclosing(resume(log, "t", 0, follow=False)) as events:
        assert [e.id async for e in events] == ["e2:1", "e2:2", "e2:3", "e2:4"]


async def test_a_follower_learns_when_the_epoch_changes() -> None:
    log = EpochLog("e1")
    async with contextlib.aclosing(resume(log, "t", 0)) as events:
        await publish(log, "t", 1)
        assert [e.id for e in await take(events, 1)] == ["e1:1"]
        log.lose("e2")
        await publish(log, "t", 2)
        got = await take(events, 3)
    assert got[0].event == "reset" and got[0].id == "e2:0"
    assert [e.id for e in got[1:]] == ["e2:1", "e2:2"]


# -- the memory store and the parsers -------------------------------------------------------------


async def test_memory_topics_are_bounded_and_busy_ones_are_kept() -> None:
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
    for bad in ("-1", "x", "1.5", " 1", "٣", "9" * 19, "e1:2"):
        with pytest.raises(HTTPError) as info:
            parse_last_event_id(bad)
        assert info.value.status == 400 and info.value.type == "invalid_last_event_id"


def test_parse_position() -> None:
    assert parse_position(None) is None
    assert parse_position("") is None
    assert parse_position("42") == Position(42)
    assert parse_position("e1:42") == Position(42, "e1")
    assert Position(42, "e1").sse_id == "e1:42" and Position(42).sse_id == 42
    for bad in ("-1", "x", ":1", "e1:", "e:1:2", "é:1", "a" * 33 + ":1", "e1:" + "9" * 19):
        with pytest.raises(HTTPError) as info:
            parse_position(bad)
        assert info.value.status == 400 and info.value.type == "invalid_last_event_id"
