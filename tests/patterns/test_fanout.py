"""The broker: fan-out, bounded queues, and both policies for a slow subscriber."""

from __future__ import annotations

import anyio
import pytest
from anyio.lowlevel import checkpoint

from asgistream import Event
from asgistream.patterns.fanout import Broker, Overflow, SlowSubscriber, TooManySubscribers

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_every_subscriber_gets_every_item_in_order() -> None:
    broker = Broker()
    got: list[list[int]] = [[], [], []]

    async def read(i: int) -> None:
        async with broker.subscribe() as items:
            async for item in items:
                got[i].append(item)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for i in range(3):
                group.start_soon(read, i)
            await anyio.sleep(0.01)
            for n in range(50):
                assert broker.publish(n) == 3
                if n % 10 == 0:
                    await checkpoint()
            broker.close()
    assert got == [list(range(50))] * 3
    assert len(broker) == 0


async def test_drop_oldest_bounds_the_queue_and_says_how_many_were_lost() -> None:
    broker = Broker(queue_size=4)
    async with broker.subscribe() as slow:
        for n in range(10):
            broker.publish(n)
        assert len(slow) == 4
        first = await slow.__anext__()
        assert first == Event({"dropped": 6}, event="dropped")
        assert [await slow.__anext__() for _ in range(4)] == [6, 7, 8, 9]
        assert slow.total_dropped == 6


async def test_disconnect_policy_frees_the_queue_and_raises_on_the_next_read() -> None:
    broker = Broker(queue_size=3, overflow="disconnect")
    async with broker.subscribe() as slow, broker.subscribe(queue_size=100) as fast:
        for n in range(5):
            broker.publish(n)
        assert len(slow) == 0 and len(broker) == 1
        with pytest.raises(SlowSubscriber) as info:
            await slow.__anext__()
        assert info.value.type == "slow_subscriber"
        assert [await fast.__anext__() for _ in range(5)] == list(range(5))


async def test_a_slow_subscriber_does_not_delay_a_fast_one() -> None:
    broker = Broker(queue_size=8, overflow=Overflow.DROP_OLDEST)
    got: list[int] = []

    async def fast() -> None:
        async with broker.subscribe(queue_size=1000) as items:
            async for item in items:
                got.append(item)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group, broker.subscribe() as never_read:
            group.start_soon(fast)
            await anyio.sleep(0.01)
            for n in range(500):
                broker.publish(n)
                await checkpoint()
            broker.close()
        assert len(never_read) <= 8
    assert got == list(range(500))


async def test_limits() -> None:
    broker = Broker(max_subscribers=1)
    async with broker.subscribe():
        with pytest.raises(TooManySubscribers):
            broker.subscribe()
    assert len(broker) == 0
    broker.subscribe().close()
    with pytest.raises(ValueError):
        Broker(queue_size=0)
    with pytest.raises(ValueError):
        broker.subscribe(queue_size=0)


async def test_close_ends_subscriptions_after_what_they_queued() -> None:
    broker = Broker()
    async with broker.subscribe() as items:
        broker.publish("a")
        broker.close()
        assert [item async for item in items] == ["a"]
    late = broker.subscribe()
    assert [item async for item in late] == []
    assert broker.publish("b") == 0
