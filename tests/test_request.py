"""Request.body on asyncio and trio: its size bound (413) and its time bound (408)."""

from __future__ import annotations

import anyio
import pytest

from asgistream import HTTPError, Request
from asgistream._types import Message

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend(each_event_loop: str) -> str:
    return each_event_loop


def _scope() -> dict[str, object]:
    return {"type": "http", "method": "POST", "path": "/", "headers": []}


async def test_a_body_in_chunks_is_joined() -> None:
    chunks = [b"ab", b"cd"]

    async def receive() -> Message:
        return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}

    assert await Request(_scope(), receive).body() == b"abcd"


async def test_a_body_over_the_limit_is_a_413() -> None:
    async def receive() -> Message:
        return {"type": "http.request", "body": b"x" * 10, "more_body": True}

    with pytest.raises(HTTPError) as caught:
        await Request(_scope(), receive, max_body_size=25).body()
    assert caught.value.status == 413


async def test_a_stalled_body_is_a_408() -> None:
    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError

    with anyio.fail_after(2), pytest.raises(HTTPError) as caught:
        await Request(_scope(), receive, body_timeout=0.05).body()
    assert caught.value.status == 408
