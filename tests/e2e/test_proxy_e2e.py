"""The upstream streaming proxy end to end: two real uvicorn servers, real clients."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import httpx_sse
import openai
import orjson
import pytest

from tests.e2e import sockets
from tests.helpers import wait_for
from tests.server import Server, free_port, serve

MESSAGES: Any = [{"role": "user", "content": "Through the proxy we go"}]


@pytest.fixture(scope="module")
def chat_upstream() -> Iterator[Server]:
    with serve("examples.chat:app") as server:
        yield server


@pytest.fixture(scope="module")
def chat_proxy(chat_upstream: Server) -> Iterator[Server]:
    with serve("examples.proxy:app", env={"ASGISTREAM_UPSTREAM": chat_upstream.url}) as server:
        yield server


@pytest.fixture(scope="module")
def upstream() -> Iterator[Server]:
    with serve("tests.apps.proxy_apps:upstream") as server:
        yield server


@pytest.fixture(scope="module")
def proxy(upstream: Server) -> Iterator[Server]:
    with serve("tests.apps.proxy_apps:proxy", env={"ASGISTREAM_UPSTREAM": upstream.url}) as server:
        yield server


def upstream_stats(upstream: Server) -> dict[str, int]:
    result: dict[str, int] = httpx.get(upstream.url + "/_stats").json()
    return result


def all_finished(upstream: Server) -> bool:
    stats = upstream_stats(upstream)
    return stats["started"] == stats["finished"]


def events(url: str, **kwargs: Any) -> list[httpx_sse.ServerSentEvent]:
    with (
        httpx.Client(timeout=10) as client,
        httpx_sse.connect_sse(client, "GET", url, headers={}, **kwargs) as source,
    ):
        assert source.response.status_code == 200
        return list(source.iter_sse())


# -- the OpenAI SDK through the example proxy ---------------------------------------------


def test_sdk_through_proxy_sync(chat_proxy: Server) -> None:
    with openai.OpenAI(base_url=chat_proxy.url + "/v1/proxy", api_key="x", max_retries=0) as sdk:
        stream = sdk.chat.completions.create(
            model="echo",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Through the proxy we go"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
        assert len({c.id for c in chunks}) == 1
        completion = sdk.chat.completions.create(model="echo", messages=MESSAGES)
        assert completion.choices[0].message.content == "Through the proxy we go"
        assert completion.choices[0].finish_reason == "stop"
        # The upstream's OpenAI-shaped 400 arrives as it was sent.
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.chat.completions.create(model="echo", messages=[])
        assert caught.value.code == "empty_array" and caught.value.param == "messages"


def test_sdk_through_proxy_async(chat_proxy: Server) -> None:
    async def main() -> tuple[str, str]:
        async with openai.AsyncOpenAI(
            base_url=chat_proxy.url + "/v1/proxy", api_key="x", max_retries=0
        ) as sdk:
            stream = await sdk.chat.completions.create(
                model="echo", messages=MESSAGES, stream=True, extra_body={"delay": 0.01}
            )
            pieces = [c.choices[0].delta.content or "" async for c in stream]
            completion = await sdk.chat.completions.create(model="echo", messages=MESSAGES)
            return "".join(pieces), completion.choices[0].message.content or ""

    assert asyncio.run(main()) == ("Through the proxy we go", "Through the proxy we go")


def test_demo_proxies_to_its_own_mock_model() -> None:
    # PORT is how the demo finds itself when ASGISTREAM_UPSTREAM is not set.
    port = free_port()
    with (
        serve("examples.demo:app", port=port, env={"PORT": str(port)}) as demo,
        openai.OpenAI(base_url=demo.url + "/v1/proxy", api_key="x", max_retries=0) as sdk,
    ):
        chunks = list(sdk.chat.completions.create(model="echo", messages=MESSAGES, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == (
            "Through the proxy we go"
        )
        assert chunks[-1].choices[0].finish_reason == "stop"


# -- relaying -----------------------------------------------------------------------------


def test_sse_fields_survive_the_relay(proxy: Server) -> None:
    got = events(proxy.url + "/proxy/typed")
    assert [(e.event, e.data, e.id, e.retry) for e in got] == [
        ("greeting", "hello\nworld", "7", 1500),
        ("message", "plain", "7", None),
        ("message", "carries id 9", "9", None),
    ]


def test_non_streaming_answers_are_forwarded_whole(proxy: Server) -> None:
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        r = client.post("/proxy/json?a=1", json={"x": [1, 2]})
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert r.json() == {"got": {"x": [1, 2]}, "query": {"a": "1"}}
        missing = client.get("/proxy/nowhere")
        assert missing.status_code == 404
        assert missing.json()["error"]["type"] == "not_found"


def test_read_timeout_is_per_chunk_not_total(proxy: Server) -> None:
    # 6 events 0.3 s apart: 1.5 s in all, well over the 0.8 s read timeout.
    started = time.monotonic()
    got = events(proxy.url + "/proxy/paced?n=6&gap=0.3")
    assert [e.data for e in got] == [*(orjson.dumps({"i": i}).decode() for i in range(6)), "[DONE]"]
    assert time.monotonic() - started >= 1.5


def test_a_stalled_upstream_ends_the_stream_with_an_error_chunk(
    proxy: Server, upstream: Server
) -> None:
    started = time.monotonic()
    got = events(proxy.url + "/proxy/paced?n=2&stall=30")
    elapsed = time.monotonic() - started
    assert [e.json().get("i") for e in got[:2]] == [0, 1]
    error = got[2].json()["error"]
    assert error["code"] == "upstream_timeout" and error["type"] == "server_error"
    assert len(got) == 3 and got[2].event == "message"  # a data-only chunk, no [DONE]
    assert 0.8 <= elapsed < 5
    # The proxy closed the upstream connection: its producer's finally ran.
    assert wait_for(lambda: all_finished(upstream))


def test_an_upstream_slow_to_start_is_a_504(proxy: Server) -> None:
    r = httpx.get(proxy.url + "/proxy/paced?wait=3&n=1", timeout=10)
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "upstream_timeout"
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_sdk_raises_on_a_mid_stream_upstream_failure(proxy: Server, upstream: Server) -> None:
    # The upstream sends one chunk and stalls: the error chunk reaches the SDK as APIError.
    with openai.OpenAI(base_url=proxy.url + "/proxy/sdk", api_key="x", max_retries=0) as sdk:
        stream = sdk.chat.completions.create(model="stall", messages=MESSAGES, stream=True)
        first = next(stream)
        assert first.choices[0].delta.content == "Hi"
        with pytest.raises(openai.APIError) as caught:
            next(stream)
        assert "sent nothing for 0.8 s" in caught.value.message
        stream.close()
    assert wait_for(lambda: all_finished(upstream))


# -- retries ------------------------------------------------------------------------------


def attempts(upstream: Server, key: str) -> int:
    count: int = httpx.get(f"{upstream.url}/attempts/{key}").json()["attempts"]
    return count


def test_5xx_is_retried_before_the_first_chunk(proxy: Server, upstream: Server) -> None:
    key = uuid.uuid4().hex
    got = events(f"{proxy.url}/proxy/flaky?key={key}&fail=2")
    assert [e.data for e in got] == ['{"attempt":3}', "ok"]
    assert attempts(upstream, key) == 3


def test_the_last_5xx_is_forwarded_when_retries_run_out(proxy: Server, upstream: Server) -> None:
    key = uuid.uuid4().hex
    r = httpx.get(f"{proxy.url}/proxy/flaky?key={key}&fail=5", timeout=10)
    assert r.status_code == 503
    assert r.json()["error"]["message"] == "attempt 3 fails"
    assert attempts(upstream, key) == 3  # the first attempt and two retries


def test_connect_errors_are_retried_then_502() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with serve("tests.apps.proxy_apps:proxy", env={"ASGISTREAM_UPSTREAM": dead}) as lonely:
        r = httpx.get(lonely.url + "/proxy/paced", timeout=10)
    assert r.status_code == 502
    error = r.json()["error"]
    assert error["code"] == "upstream_unavailable" and "ConnectError" in error["message"]


# -- limits and disconnects ---------------------------------------------------------------


def slots_in_use(proxy: Server) -> int:
    count: int = httpx.get(proxy.url + "/_slots").json()["in_use"]
    return count


def test_queue_timeout_is_503_with_retry_after(proxy: Server, upstream: Server) -> None:
    async def main() -> None:
        # Two long streams take both slots (events every 0.1 s, under the read timeout).
        held = [await sockets.open_stream(proxy.port, "/proxy/paced?n=10000&gap=0.1") for _ in "ab"]
        try:
            for reader, _ in held:
                assert b" 200 " in await sockets.read_headers(reader)
            assert await asyncio.to_thread(slots_in_use, proxy) == 2
            async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
                started = time.monotonic()
                r = await client.get("/proxy/paced?n=1")
                waited = time.monotonic() - started
                assert r.status_code == 503 and r.headers["retry-after"] == "2"
                assert r.json()["error"]["code"] == "queue_timeout"
                assert 0.3 <= waited < 3
                # A client that leaves gives its slot back at once.
                await sockets.close(held.pop()[1])
                assert await asyncio.to_thread(wait_for, lambda: slots_in_use(proxy) == 1)
                r = await client.get("/proxy/paced?n=1")
                assert r.status_code == 200
        finally:
            for _, writer in held:
                await sockets.close(writer)

    asyncio.run(main())
    assert wait_for(lambda: slots_in_use(proxy) == 0)
    assert wait_for(lambda: all_finished(upstream))


def test_client_disconnect_closes_the_upstream_stream_at_once(
    proxy: Server, upstream: Server
) -> None:
    assert wait_for(lambda: all_finished(upstream))
    before = upstream_stats(upstream)

    async def main() -> float:
        reader, writer = await sockets.open_stream(proxy.port, "/proxy/paced?n=100000&gap=0.05")
        await sockets.read_headers(reader)
        await reader.readuntil(b"\n\n")
        await sockets.close(writer)
        return time.monotonic()

    closed = asyncio.run(main())
    assert wait_for(lambda: upstream_stats(upstream)["finished"] == before["finished"] + 1)
    took = time.monotonic() - closed
    assert upstream_stats(upstream)["started"] == before["started"] + 1
    assert took < 1.0, f"the upstream producer ended {took:.3f} s after the client left"
    assert wait_for(lambda: slots_in_use(proxy) == 0)


def test_a_client_that_leaves_while_queued_never_reaches_the_upstream(
    proxy: Server, upstream: Server
) -> None:
    assert wait_for(lambda: slots_in_use(proxy) == 0 and all_finished(upstream))
    before = upstream_stats(upstream)["started"]

    async def main() -> None:
        held = [await sockets.open_stream(proxy.port, "/proxy/paced?n=10000&gap=0.1") for _ in "ab"]
        for reader, _ in held:
            await sockets.read_headers(reader)
        _, queued = await sockets.open_stream(proxy.port, "/proxy/paced?n=10000&gap=0.1")
        await asyncio.sleep(0.1)
        await sockets.close(queued)  # leaves the queue, within the 0.3 s queue timeout
        await asyncio.sleep(0.05)
        await sockets.close(held.pop()[1])  # a slot frees that nobody must take
        await asyncio.sleep(0.4)
        assert await asyncio.to_thread(slots_in_use, proxy) == 1
        await sockets.close(held.pop()[1])

    asyncio.run(main())
    assert wait_for(lambda: slots_in_use(proxy) == 0 and all_finished(upstream))
    assert upstream_stats(upstream)["started"] == before + 2
