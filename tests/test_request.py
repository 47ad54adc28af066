"""Request on asyncio and trio: the body's size bound (413) and time bound (408), the query."""

from __future__ import annotations

import random
from urllib.parse import parse_qsl

import anyio
import pytest

from asgistream import HTTPError, Request
from asgistream._types import Message
from asgistream.request import QueryParams

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


def test_query_params_read_as_parse_qsl_does() -> None:
    rng = random.Random(3986)
    alphabet = "ab=&;+% 2F\xe9\x00?"
    for _ in range(5000):
        query = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))).encode("utf-8")
        expected = parse_qsl(query.decode("latin-1"), keep_blank_values=True, errors="replace")
        params = QueryParams(query)
        assert [(name, params.getlist(name)) for name in params] == [
            (name, [v for k, v in expected if k == name]) for name in dict(expected)
        ], query
        assert dict(params) == {k: params.getlist(k)[0] for k in params}


def test_get_and_in_on_headers_and_query() -> None:
    request = Request(
        {"type": "http", "headers": [(b"X-Tag", b"a"), (b"x-tag", b"b")], "query_string": b"n=1&e"},
        _no_receive,
    )
    assert request.headers.get("x-TAG") == "a, b" and request.headers.get("absent") is None
    assert request.headers.get("absent", "d") == "d" and "X-tag" in request.headers
    assert request.query.get("n") == "1" and request.query.get("e", "d") == ""
    assert request.query.get("cap", 30) == 30 and "e" in request.query and "x" not in request.query


async def _no_receive() -> Message:
    raise AssertionError("nothing is received")
