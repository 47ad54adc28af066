"""BatchResponse driven directly as an ASGI app, on asyncio and trio: the body, the timeout,
and a client that leaves."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import orjson
import pytest

from asgistream import (
    BatchOptions,
    BatchResponse,
    DualEndpoint,
    Event,
    Request,
    as_list,
    joined_text,
    last_item,
)
from asgistream._types import Message
from tests.helpers import FakeClient

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend(each_event_loop: str) -> str:
    return each_event_loop


async def test_items_become_one_json_body() -> None:
    async def producer() -> AsyncIterator[int]:
        for i in range(3000):  # more than a block: the checkpoint between blocks runs
            yield i

    client = FakeClient()
    await BatchResponse(producer())({"type": "http"}, client.receive, client.send)
    assert client.status == 200
    assert orjson.loads(client.body) == {"items": list(range(3000))}


async def test_a_slow_producer_is_a_504_and_is_closed() -> None:
    closed = []

    async def producer() -> AsyncIterator[int]:
        try:
            yield 1
            await anyio.sleep_forever()
        finally:
            closed.append(True)

    client = FakeClient()
    with anyio.fail_after(2):
        await BatchResponse(producer(), BatchOptions(timeout=0.05))(
            {"type": "http"}, client.receive, client.send
        )
    assert client.status == 504
    assert orjson.loads(client.body)["error"]["type"] == "timeout"
    assert closed == [True]


async def test_disconnect_cancels_the_producer_and_sends_nothing() -> None:
    finished = anyio.Event()
    client = FakeClient()

    async def producer() -> AsyncIterator[int]:
        try:
            yield 1
            await anyio.sleep_forever()
        finally:
            finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(BatchResponse(producer()), {"type": "http"}, client.receive, client.send)
        await anyio.sleep(0.02)
        client.disconnect()
        with anyio.fail_after(1):
            await finished.wait()
    assert client.messages == []


def _event_items() -> list[object]:
    """Items of every kind a producer yields, Events first and in the middle."""
    events: list[object] = [Event({"n": i}, id=i) for i in range(1500)]  # more than a block
    return [*events, {"n": "dict"}, Event(b"bytes\xff", id=1), b"raw", Event("text", event="x")]


@pytest.mark.parametrize("first", ["event", "dict"])
async def test_event_items_are_their_data_in_every_shape(first: str) -> None:
    items = _event_items()
    if first == "dict":
        items.insert(0, {"n": "first"})
    data = [item.data if isinstance(item, Event) else item for item in items]
    expected = [d.decode("utf-8", "replace") if isinstance(d, bytes) else d for d in data]

    async def producer() -> AsyncIterator[object]:
        for item in items:
            yield item

    for reduce, body in [
        (None, {"items": expected}),
        (as_list(None), expected),
        (as_list("out"), {"out": expected}),
        (last_item(), expected[-1]),
    ]:
        client = FakeClient()
        await BatchResponse(producer(), BatchOptions(reduce=reduce))(
            {"type": "http"}, client.receive, client.send
        )
        assert client.status == 200
        assert orjson.loads(client.body) == body
    client = FakeClient()
    text = joined_text(extract=lambda d: d if isinstance(d, str) else None)
    await BatchResponse(producer(), BatchOptions(reduce=text))(
        {"type": "http"}, client.receive, client.send
    )
    assert orjson.loads(client.body) == {"text": "bytes\ufffdrawtext"}


# On trio the watcher's task group is open from the start (its cancel scopes nest).
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_producer_that_never_waits_is_not_watched_on_asyncio() -> None:
    received = []

    async def receive() -> Message:
        received.append(True)
        return {"type": "http.disconnect"}

    async def producer() -> AsyncIterator[int]:
        for i in range(1000):
            yield i

    client = FakeClient()
    await BatchResponse(producer())({"type": "http"}, receive, client.send)
    assert orjson.loads(client.body) == {"items": list(range(1000))}
    assert received == []


async def test_the_timeout_counts_from_the_start_for_a_producer_that_waits_late() -> None:
    async def producer() -> AsyncIterator[int]:
        time.sleep(0.1)  # noqa: ASYNC251 (busy, not letting the loop run: no watcher yet)
        for i in range(3000):  # then a block boundary, where it is first watched
            yield i

    client = FakeClient()
    await BatchResponse(producer(), BatchOptions(timeout=0.05))(
        {"type": "http"}, client.receive, client.send
    )
    assert client.status == 504


async def test_a_producer_that_waits_in_its_own_cancel_scope() -> None:
    async def producer() -> AsyncIterator[int]:
        yield 1
        with anyio.move_on_after(0.01):
            await anyio.sleep_forever()
        await anyio.sleep(0.01)  # trio's sleep opens a cancel scope of its own too
        yield 2

    client = FakeClient()
    await BatchResponse(producer())({"type": "http"}, client.receive, client.send)
    assert orjson.loads(client.body) == {"items": [1, 2]}


class _Iterator:
    """An async iterator that is not a generator, with an ``aclose`` of its own."""

    def __init__(self, n: int) -> None:
        self.left = n
        self.closed = 0

    def __aiter__(self) -> _Iterator:
        return self

    async def __anext__(self) -> int:
        if not self.left:
            raise StopAsyncIteration
        self.left -= 1
        return self.left

    async def aclose(self) -> None:
        self.closed += 1


async def test_the_producer_is_closed_however_the_batch_ends() -> None:
    # An iterator that is not a generator is closed even when it ended by itself.
    ended = _Iterator(3)
    client = FakeClient()
    await BatchResponse(ended)({"type": "http"}, client.receive, client.send)
    assert orjson.loads(client.body) == {"items": [2, 1, 0]} and ended.closed == 1

    # A generator stopped by a limit, in its first block or a later one, runs its finally.
    async def endless(closed: list[bool]) -> AsyncIterator[int]:
        try:
            while True:
                yield 1
        finally:
            closed.append(True)

    for limit in (5, 2000):
        closed: list[bool] = []
        client = FakeClient()
        await BatchResponse(endless(closed), BatchOptions(max_items=limit))(
            {"type": "http"}, client.receive, client.send
        )
        assert client.status == 400 and closed == [True]
        assert orjson.loads(client.body)["error"]["type"] == "batch_too_large"


async def test_an_endpoints_headers_are_the_same_on_every_batch_answer() -> None:
    async def producer(request: Request) -> AsyncIterator[int]:
        yield 1

    endpoint = DualEndpoint(producer, headers={"x-kind": "k"})
    scope = {"type": "http", "method": "GET", "headers": [], "query_string": b""}
    for _ in range(2):  # a caller that changes what it was sent changes nothing here
        client = FakeClient()
        await endpoint(dict(scope), client.receive, client.send)
        assert client.start["headers"] == [
            (b"content-type", b"application/json"),
            (b"content-length", b"13"),
            (b"x-kind", b"k"),
            (b"vary", b"Accept"),
        ]
        client.start["headers"].append((b"x-added", b"1"))
