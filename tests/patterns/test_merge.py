"""merge(): order, completion, failure and early exit, with every source's finally checked."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from asgistream.patterns.merge import merge

pytestmark = pytest.mark.anyio


class Tracker:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []

    async def source(
        self, name: str, n: int, delay: float = 0.0, fail_at: int | None = None
    ) -> AsyncIterator[Any]:
        self.started.append(name)
        try:
            for i in range(n):
                if fail_at == i:
                    raise ValueError(f"{name} broke at {i}")
                await anyio.sleep(delay)
                yield (name, i)
        finally:
            self.finished.append(name)

    async def forever(self, name: str) -> AsyncIterator[Any]:
        self.started.append(name)
        try:
            yield (name, 0)
            await anyio.sleep_forever()
        finally:
            self.finished.append(name)


async def test_all_items_of_all_sources_in_per_source_order() -> None:
    t = Tracker()
    with anyio.fail_after(5):
        got = [
            item
            async for item in merge(t.source("a", 20, 0.001), t.source("b", 7), t.source("c", 0))
        ]
    assert sorted(got) == sorted([("a", i) for i in range(20)] + [("b", i) for i in range(7)])
    for name in ("a", "b"):
        assert [i for n, i in got if n == name] == list(range(20 if name == "a" else 7))
    assert sorted(t.finished) == ["a", "b", "c"]


async def test_items_interleave_as_they_arrive() -> None:
    t = Tracker()
    with anyio.fail_after(5):
        got = [item async for item in merge(t.source("slow", 3, 0.05), t.source("fast", 3, 0.001))]
    # The fast source is done long before the slow one's second item.
    assert [n for n, _ in got[:3]] == ["fast", "fast", "fast"]


async def test_no_sources() -> None:
    assert [item async for item in merge()] == []


async def test_a_failing_source_cancels_the_others_and_raises() -> None:
    t = Tracker()
    got: list[Any] = []
    with anyio.fail_after(5), pytest.raises(ValueError, match="bad broke at 2"):
        async with contextlib.aclosing(
            merge(t.forever("x"), t.forever("y"), t.source("bad", 5, 0.01, fail_at=2))
        ) as items:
            async for item in items:
                got.append(item)
    assert ("bad", 1) in got
    assert sorted(t.finished) == ["bad", "x", "y"]


async def test_aclose_cancels_every_source_inside_the_generator() -> None:
    t = Tracker()
    with anyio.fail_after(5):
        items = merge(t.forever("x"), t.forever("y"), t.source("z", 1000, 0.001))
        first = await items.__anext__()
        assert first[1] == 0
        await items.aclose()
    assert sorted(t.finished) == ["x", "y", "z"]


async def test_consumer_error_cancels_sources() -> None:
    t = Tracker()
    with anyio.fail_after(5), pytest.raises(KeyError):
        async with contextlib.aclosing(merge(t.forever("x"), t.forever("y"))) as items:
            async for _ in items:
                raise KeyError("consumer")
    assert sorted(t.finished) == ["x", "y"]


async def test_outer_cancellation_while_consumer_waits() -> None:
    t = Tracker()
    with anyio.move_on_after(0.1) as scope:
        async with contextlib.aclosing(merge(t.forever("x"), t.forever("y"))) as items:
            async for _ in items:
                pass
    assert scope.cancelled_caught
    assert sorted(t.finished) == ["x", "y"]


async def test_a_source_failing_while_the_consumer_is_busy_does_not_hit_the_consumer() -> None:
    """The failure waits for the consumer's next read instead of cancelling its code."""
    t = Tracker()
    slept = False
    with anyio.fail_after(5), pytest.raises(ValueError):
        async with contextlib.aclosing(
            merge(t.forever("x"), t.source("bad", 3, 0.0, fail_at=1), buffer=4)
        ) as items:
            async for _ in items:
                if not slept:
                    await anyio.sleep(0.05)  # the failure happens meanwhile
                    slept = True
    assert slept
    assert sorted(t.finished) == ["bad", "x"]


async def test_buffer_zero_gives_backpressure() -> None:
    produced = 0

    async def counting() -> AsyncIterator[int]:
        nonlocal produced
        for i in range(100):
            produced += 1
            yield i

    with anyio.fail_after(5):
        async with contextlib.aclosing(merge(counting())) as items:
            await items.__anext__()
            await anyio.sleep(0.02)
            assert produced <= 3
