"""OpenAI-compatible chat completions end to end: uvicorn, the official SDK, raw HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.helpers import wait_for
from tests.server import Server, serve

QUESTION = "The quick brown fox jumps"
WORDS = ["The", " quick", " brown", " fox", " jumps"]
MESSAGES: Any = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": QUESTION},
]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serve("tests.apps.chat_app:app") as s:
        yield s


@pytest.fixture
def sdk(server: Server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client:
        yield client


def raw_stream(server: Server, body: dict[str, Any], path: str = "/v1/chat/completions") -> str:
    with (
        httpx.Client(base_url=server.url, timeout=10) as client,
        client.stream("POST", path, json=body) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return response.read().decode()


# -- the official SDK ---------------------------------------------------------------------


def test_sdk_sync_stream(sdk: openai.OpenAI) -> None:
    chunks = list(
        sdk.chat.completions.create(
            model="echo",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            # 0.12 s per token: heartbeats (every 0.05 s) go out between the tokens.
            extra_body={"delay": 0.12},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    assert [c.choices[0].delta.content for c in chunks[1:6]] == WORDS
    assert chunks[6].choices[0].finish_reason == "stop"
    assert chunks[6].choices[0].delta.content is None
    usage_chunk = chunks[7]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert (usage_chunk.usage.prompt_tokens, usage_chunk.usage.completion_tokens) == (7, 5)
    assert usage_chunk.usage.total_tokens == 12
    assert all(c.usage is None for c in chunks[:7])
    assert len(chunks) == 8
    assert len({(c.id, c.created, c.model) for c in chunks}) == 1
    assert chunks[0].id.startswith("chatcmpl-") and chunks[0].object == "chat.completion.chunk"


def test_sdk_sync_batch(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model="echo", messages=MESSAGES, stream=False)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == QUESTION
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (7, 5)


def test_sdk_async_stream_and_batch(server: Server) -> None:
    async def main() -> tuple[list[Any], Any]:
        async with openai.AsyncOpenAI(
            base_url=server.url + "/v1", api_key="x", max_retries=0
        ) as client:
            stream = await client.chat.completions.create(
                model="echo", messages=MESSAGES, stream=True
            )
            chunks = [chunk async for chunk in stream]
            completion = await client.chat.completions.create(model="echo", messages=MESSAGES)
            return chunks, completion

    chunks, completion = asyncio.run(main())
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == QUESTION
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)
    assert completion.choices[0].message.content == QUESTION


def test_max_tokens_ends_with_length(sdk: openai.OpenAI) -> None:
    chunks = list(
        sdk.chat.completions.create(model="echo", messages=MESSAGES, stream=True, max_tokens=2)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "The quick"
    assert chunks[-1].choices[0].finish_reason == "length"
    completion = sdk.chat.completions.create(
        model="echo", messages=MESSAGES, max_completion_tokens=3
    )
    assert completion.choices[0].message.content == "The quick brown"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 3


def test_bad_requests_are_openai_errors(sdk: openai.OpenAI, server: Server) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="echo", messages=[{"role": "robot", "content": "hi"}])
    assert caught.value.param == "messages[0].role" and caught.value.code == "invalid_value"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="echo", messages=MESSAGES, n=2)
    assert caught.value.param == "n"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(
            model="echo", messages=MESSAGES, stream_options={"include_usage": True}
        )
    assert caught.value.param == "stream_options"
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for body in (b"{not json", b"[1, 2]", b'{"model": "echo"}'):
            r = client.post("/v1/chat/completions", content=body)
            assert r.status_code == 400, body
            error = r.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}, error
            assert error["type"] == "invalid_request_error"
        r = client.post("/v1/chat/completions?stream=maybe", json={"model": "m", "messages": []})
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
        r = client.post(
            "/v1/chat/completions?stream=maybe",
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        )
        assert r.status_code == 400
        assert r.json()["error"] == {
            "message": r.json()["error"]["message"],
            "type": "invalid_request_error",
            "param": "stream",
            "code": "invalid_parameter",
        }


def test_unknown_model_is_404(server: Server) -> None:
    with openai.OpenAI(base_url=server.url + "/only-echo/v1", api_key="x", max_retries=0) as client:
        assert client.chat.completions.create(model="echo", messages=MESSAGES).choices
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model="gpt-9", messages=MESSAGES)
        assert caught.value.code == "model_not_found"


def test_model_errors(server: Server) -> None:
    with openai.OpenAI(base_url=server.url + "/failing/v1", api_key="x", max_retries=0) as client:
        failing: Any = [{"role": "user", "content": "one two boom three"}]
        stream = client.chat.completions.create(model="m", messages=failing, stream=True)
        pieces = []
        with pytest.raises(openai.APIError) as caught:
            for chunk in stream:
                pieces.append(chunk.choices[0].delta.content)
        assert pieces == ["", "one", " two"]
        assert caught.value.message == "The model failed while generating the answer"
        # Before the first token, the error is the response's status, in both modes.
        early: Any = [{"role": "user", "content": "boom"}]
        for stream_mode in (True, False):
            with pytest.raises(openai.InternalServerError) as status:
                client.chat.completions.create(model="m", messages=early, stream=stream_mode)
            assert status.value.status_code == 500 and status.value.code is None
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="m", messages=failing)
    # On the wire: the error chunk is a data line, and no [DONE] follows it.
    text = raw_stream(
        server,
        {"model": "m", "stream": True, "messages": failing},
        path="/failing/v1/chat/completions",
    )
    last = text.strip().split("\n\n")[-1]
    assert last.startswith("data: ") and "[DONE]" not in text
    assert orjson.loads(last[6:]) == {
        "error": {
            "message": "The model failed while generating the answer",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


# -- the wire -----------------------------------------------------------------------------


def test_stream_wire_format(server: Server) -> None:
    text = raw_stream(
        server,
        {
            "model": "echo",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": MESSAGES,
            "delay": 0.12,
        },
    )
    blocks = text.split("\n\n")
    assert blocks[-2:] == ["data: [DONE]", ""]
    # Only data lines and heartbeat comments: no id, event or retry lines.
    assert all(line.startswith(("data: ", ":")) for line in text.splitlines() if line)
    assert any(block == ":" for block in blocks), "heartbeats expected between slow tokens"
    chunks = [orjson.loads(b[6:]) for b in blocks[:-2] if b.startswith("data: ")]
    assert len({(c["id"], c["created"]) for c in chunks}) == 1
    assert [c["usage"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 12
    assert chunks[1] == {
        "id": chunks[0]["id"],
        "object": "chat.completion.chunk",
        "created": chunks[0]["created"],
        "model": "echo",
        "choices": [
            {"index": 0, "delta": {"content": "The"}, "logprobs": None, "finish_reason": None}
        ],
        "usage": None,
    }


def test_mode_comes_from_the_body_then_negotiation(server: Server) -> None:
    body: dict[str, Any] = {"model": "echo", "messages": MESSAGES}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        sse = {"Accept": "text/event-stream"}
        # The body's stream field wins over Accept, both ways.
        r = client.post("/v1/chat/completions", json={**body, "stream": False}, headers=sse)
        assert r.json()["object"] == "chat.completion"
        assert "vary" not in r.headers
        r = client.post(
            "/v1/chat/completions",
            json={**body, "stream": True},
            headers={"Accept": "application/json"},
        )
        assert r.text.endswith("data: [DONE]\n\n")
        # Without it, the request negotiates.
        for url, headers in (
            ("/v1/chat/completions?stream=true", {}),
            ("/v1/chat/completions", sse),
        ):
            r = client.post(url, json=body, headers=headers)
            assert r.headers["content-type"].startswith("text/event-stream"), url
            assert r.headers["vary"] == "Accept"
            assert r.text.endswith("data: [DONE]\n\n")
        r = client.post("/v1/chat/completions", json=body)
        assert r.json()["choices"][0]["message"]["content"] == QUESTION


def test_client_disconnect_stops_the_model(server: Server) -> None:
    def stats() -> dict[str, int]:
        result: dict[str, int] = httpx.get(server.url + "/_stats").json()
        return result

    before = stats()
    body = {"model": "m", "stream": True, "tokens": 100000, "messages": MESSAGES}
    with (
        httpx.Client(base_url=server.url, timeout=10) as client,
        client.stream("POST", "/counted/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert wait_for(lambda: stats()["started"] == before["started"] + 1)
    left = time.monotonic()
    assert wait_for(lambda: stats()["finished"] == before["finished"] + 1)
    assert time.monotonic() - left < 1.0
