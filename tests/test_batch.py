"""BatchResponse driven directly as an ASGI app, on asyncio and trio: the body, the timeout,
and a client that leaves."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import orjson
import pytest

from asgistream import BatchOptions, BatchResponse
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
