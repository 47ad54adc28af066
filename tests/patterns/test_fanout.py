"""The broker: fan-out across processes, bounded queues, both policies for a slow subscriber."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint

from asgistream import Event
from asgistream.patterns.fanout import Broker, Overflow, SlowSubscriber, TooManySubscribers
from tests.helpers import until
from tests.stores import Stores

pytestmark = pytest.mark.anyio


async def test_every_subscriber_gets_every_item_in_order(stores: Stores) -> None:
    got: list[list[int]] = [[], [], []]

    async def read(broker: Broker, i: int) -> None:
        async with broker.subscribe() as items:
            async for item in items:
                got[i].append(item)

    with anyio.fail_after(5):
        async with Broker(stores.fanout()) as broker, anyio.create_task_group() as group:
            for i in range(3):
                group.start_soon(read, broker, i)
            await anyio.sleep(0.01)
            assert len(broker) == 3
            for n in range(50):
                await broker.publish(n)
                if n % 10 == 0:
                    await checkpoint()
            await broker.aclose()
    assert got == [list(range(50))] * 3
    assert len(broker) == 0


async def test_a_publish_reaches_the_subscribers_of_every_process(stores: Stores) -> None:
    got: list[tuple[str, Any]] = []
    async with (
        Broker(stores.fanout()) as here,
        Broker(stores.fanout()) as there,
        here.subscribe() as near,
        there.subscribe() as far,
    ):
        await here.publish("from here")
        await there.publish("from there")
        with anyio.fail_after(5):
            for name, items in (("near", near), ("far", far)):
                got += [(name, await items.__anext__()) for _ in range(2)]
    assert got == [
        ("near", "from here"),
        ("near", "from there"),
        ("far", "from here"),
        ("far", "from there"),
    ]


async def test_items_travel_as_json_and_events_as_they_were(stores: Stores) -> None:
    typed = Event({"a": [1, 2]}, event="typed", id=7, retry=1000, comment="note")
    items: list[Any] = [
        typed,
        Event(b"\xff\x00 raw", id="x-1"),
        Event("text\nlines"),
        b"\x00\xff",
        "text",
        {"n": 1, "t": (1, 2)},
        None,
    ]
    async with Broker(stores.fanout()) as broker, broker.subscribe() as received:
        for item in items:
            await broker.publish(item)
        with anyio.fail_after(5):
            got = [await received.__anext__() for _ in items]
        with pytest.raises(TypeError):
            await broker.publish(object())
    assert got[:-2] == items[:-2]
    assert got[-2:] == [{"n": 1, "t": [1, 2]}, None]  # what the JSON decodes to
    assert type(got[0]) is Event and got[0].encode() == typed.encode()


async def test_drop_oldest_bounds_the_queue_and_says_how_many_were_lost(stores: Stores) -> None:
    async with Broker(stores.fanout(), queue_size=4) as broker, broker.subscribe() as slow:
        for n in range(10):
            await broker.publish(n)
        with anyio.fail_after(5):
            first = await slow.__anext__()
            assert first == Event({"dropped": 6}, event="dropped")
            assert [await slow.__anext__() for _ in range(4)] == [6, 7, 8, 9]
        assert slow.total_dropped == 6


async def test_disconnect_policy_frees_the_queue_and_raises_on_the_next_read(
    stores: Stores,
) -> None:
    broker = Broker(stores.fanout(), queue_size=3, overflow="disconnect")
    async with broker, broker.subscribe() as slow, broker.subscribe(queue_size=100) as fast:
        for n in range(5):
            await broker.publish(n)
        with anyio.fail_after(5):
            assert [await fast.__anext__() for _ in range(5)] == list(range(5))
        assert len(slow) == 0 and len(broker) == 1
        with pytest.raises(SlowSubscriber) as info:
            await slow.__anext__()
        assert info.value.type == "slow_subscriber"


async def test_a_slow_subscriber_does_not_delay_a_fast_one(stores: Stores) -> None:
    broker = Broker(stores.fanout(), queue_size=8, overflow=Overflow.DROP_OLDEST)
    got: list[int] = []

    async def fast() -> None:
        async with broker.subscribe(queue_size=1000) as items:
            async for item in items:
                got.append(item)

    with anyio.fail_after(5):
        async with broker, anyio.create_task_group() as group, broker.subscribe() as never_read:
            group.start_soon(fast)
            await anyio.sleep(0.01)
            for n in range(500):
                await broker.publish(n)
                await checkpoint()
            await until(lambda: len(got) == 500)
            await broker.aclose()
        assert len(never_read) <= 8
    assert got == list(range(500))


async def test_limits(stores: Stores) -> None:
    async with Broker(stores.fanout(), max_subscribers=1) as broker:
        async with broker.subscribe():
            with pytest.raises(TooManySubscribers):
                broker.subscribe()
        assert len(broker) == 0
        broker.subscribe().close()
        with pytest.raises(ValueError):
            Broker(queue_size=0)
        with pytest.raises(ValueError):
            broker.subscribe(queue_size=0)
    with pytest.raises(RuntimeError):
        await Broker().publish("not open yet")


async def test_close_ends_subscriptions_after_what_they_queued(stores: Stores) -> None:
    broker = Broker(stores.fanout())
    async with broker, broker.subscribe() as items:
        await broker.publish("a")
        await until(lambda: len(items) == 1)
        await broker.aclose()
        assert [item async for item in items] == ["a"]
    late = broker.subscribe()
    assert [item async for item in late] == []
    await broker.publish("b")  # a closed broker publishes nothing
    assert len(broker) == 0 and len(late) == 0
