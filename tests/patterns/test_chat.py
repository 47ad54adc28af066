"""Chat completions in-process: request validation, shapes, modes (fast unit coverage)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from asgistream import App, BatchOptions, HTTPError, StreamOptions, as_list
from asgistream.patterns.chat import (
    ChatCompletions,
    ChatMessage,
    ChatRequest,
    error_chunk,
    openai_error,
    parse_chat_request,
)
from examples.chat import EchoModel

USER = {"role": "user", "content": "hi"}


def valid(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [USER], **fields}


def test_a_valid_request_is_parsed() -> None:
    body = valid(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "a "}, {"type": "image_url"}]},
            {"role": "assistant", "content": None, "tool_calls": []},
            {"role": "user", "content": "b", "name": "bob"},
        ],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=9,
        max_completion_tokens=4,
        stop="\n",
        temperature=0.2,
    )
    request = parse_chat_request(body)
    assert request.messages == (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "a "),
        ChatMessage("assistant", ""),
        ChatMessage("user", "b", "bob"),
    )
    assert (request.stream, request.include_usage, request.max_tokens) == (True, True, 4)
    assert request.stop == ("\n",) and request.body["temperature"] == 0.2
    plain = parse_chat_request(valid(stream=None, n=1, stop=["a", "b"]))
    assert (plain.stream, plain.include_usage, plain.max_tokens, plain.stop) == (
        None,
        False,
        None,
        ("a", "b"),
    )


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ([], None, "invalid_type"),
        ({"messages": [USER]}, "model", "missing_required_parameter"),
        (valid(model=3), "model", "invalid_type"),
        (valid(model=""), "model", None),
        ({"model": "m"}, "messages", "missing_required_parameter"),
        (valid(messages={}), "messages", "invalid_type"),
        (valid(messages=[]), "messages", "empty_array"),
        (valid(messages=["hi"]), "messages[0]", "invalid_type"),
        (valid(messages=[{"content": "x"}]), "messages[0].role", "missing_required_parameter"),
        (valid(messages=[{"role": "bot", "content": "x"}]), "messages[0].role", "invalid_value"),
        (valid(messages=[{"role": "user"}]), "messages[0].content", "missing_required_parameter"),
        (valid(messages=[{"role": "user", "content": 1}]), "messages[0].content", "invalid_type"),
        (
            valid(messages=[USER, {"role": "user", "content": [{"type": "text", "text": 1}]}]),
            "messages[1].content[0].text",
            "invalid_type",
        ),
        (valid(messages=[{"role": "user", "content": [{}]}]), "messages[0].content[0].type", None),
        (valid(messages=[{**USER, "name": 5}]), "messages[0].name", "invalid_type"),
        (valid(stream="yes"), "stream", "invalid_type"),
        (valid(stream=1), "stream", "invalid_type"),
        (valid(stream_options=[]), "stream_options", "invalid_type"),
        (valid(stream_options={"include_usage": 1}), "stream_options.include_usage", None),
        (valid(max_tokens=0), "max_tokens", "integer_below_min_value"),
        (valid(max_tokens=True), "max_tokens", "invalid_type"),
        (valid(max_tokens=2.5), "max_tokens", "invalid_type"),
        (valid(max_completion_tokens=-1), "max_completion_tokens", "integer_below_min_value"),
        (valid(n=2), "n", "unsupported_value"),
        (valid(stop=5), "stop", "invalid_type"),
        (valid(stop=["a", "b", "c", "d", "e"]), "stop", "array_above_max_length"),
    ],
)
def test_bad_bodies_are_openai_400s(body: Any, param: str | None, code: str | None) -> None:
    with pytest.raises(HTTPError) as caught:
        parse_chat_request(body)
    error = orjson.loads(caught.value.body())["error"]
    assert caught.value.status == 400
    assert error["type"] == "invalid_request_error" and error["param"] == param
    if code is not None:
        assert error["code"] == code
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]


def test_openai_error_and_error_chunk() -> None:
    error = openai_error(503, "busy", code="queue_timeout", headers={"retry-after": "1"})
    assert error.type == "server_error" and error.headers == {"retry-after": "1"}
    assert orjson.loads(error.body()) == {
        "error": {"message": "busy", "type": "server_error", "param": None, "code": "queue_timeout"}
    }
    assert error_chunk(error) == orjson.loads(error.body())
    assert error_chunk(HTTPError(500, "plain")) == {
        "error": {"message": "plain", "type": "internal_error", "param": None, "code": None}
    }


class Listing:
    """A model that yields given tokens and then, optionally, fails."""

    def __init__(self, tokens: list[Any], fail: Exception | None = None) -> None:
        self.tokens = tokens
        self.fail = fail
        self.closed = False

    def count_tokens(self, request: ChatRequest) -> int:
        return 1

    async def generate(self, request: ChatRequest) -> AsyncIterator[str]:
        try:
            for token in self.tokens:
                yield token
            if self.fail is not None:
                raise self.fail
        finally:
            self.closed = True


def post(model: Any, body: dict[str, Any], query: str = "") -> httpx.Response:
    app = App()
    app.route("/c", methods=("POST",))(ChatCompletions(model))

    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post("/c" + query, json=body)

    return asyncio.run(main())


def chunks_of(response: httpx.Response) -> list[Any]:
    assert response.text.endswith("data: [DONE]\n\n")
    return [orjson.loads(b[6:]) for b in response.text.split("\n\n")[:-2]]


def test_batch_completion_shape() -> None:
    r = post(Listing(["a", "", " b"]), valid())
    body = r.json()
    assert r.status_code == 200 and body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-") and isinstance(body["created"], int)
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "a b", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def test_stream_without_usage_has_no_usage_field() -> None:
    chunks = chunks_of(post(Listing(["a"]), valid(stream=True)))
    assert all("usage" not in c for c in chunks)
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "a"},
        {},
    ]


def test_an_empty_answer_still_has_role_and_finish() -> None:
    chunks = chunks_of(post(Listing([]), valid(stream=True)))
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, "stop"]
    assert post(Listing([]), valid()).json()["choices"][0]["message"]["content"] == ""


def test_max_tokens_closes_the_model_early() -> None:
    model = Listing(["a", "b", "c", "d"])
    chunks = chunks_of(post(model, valid(stream=True, max_tokens=2)))
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["", "a", "b", None]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert model.closed


def test_model_http_errors_keep_their_status_before_the_first_token() -> None:
    refusal = openai_error(429, "slow down", type="rate_limit_error", code="rate_limited")
    for stream in (True, False):
        r = post(Listing([], fail=refusal), valid(stream=stream))
        assert r.status_code == 429
        assert r.json()["error"]["type"] == "rate_limit_error"


def test_bad_tokens_are_a_500() -> None:
    r = post(Listing([42]), valid())
    assert r.status_code == 500
    assert r.json()["error"]["message"] == "The model failed while generating the answer"


def test_bad_json_body_is_openai_shaped() -> None:
    app = App()
    app.route("/c", methods=("POST",))(ChatCompletions(EchoModel()))

    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post("/c", content=b"{")

    error = asyncio.run(main()).json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_json"
    assert error["param"] is None


def test_the_mock_echoes_the_last_user_message() -> None:
    request = parse_chat_request(
        valid(
            messages=[
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "an answer"},
                {"role": "user", "content": "  second\tquestion here "},
            ]
        )
    )
    model = EchoModel()

    async def tokens() -> list[str]:
        return [t async for t in model.generate(request)]

    assert asyncio.run(tokens()) == ["  second", "\tquestion", " here"]
    assert model.count_tokens(request) == 7
    with pytest.raises(HTTPError) as caught:
        asyncio.run(
            EchoModel().generate(parse_chat_request(valid(delay=-1))).__anext__()  # type: ignore[arg-type]
        )
    assert caught.value.status == 400


def test_options_that_break_openai_clients_are_refused() -> None:
    for stream in (StreamOptions(done=True), StreamOptions(retry=1000)):
        with pytest.raises(ValueError):
            ChatCompletions(EchoModel(), stream=stream)
    with pytest.raises(ValueError):
        ChatCompletions(EchoModel(), batch=BatchOptions(reduce=as_list()))
    chat = ChatCompletions(EchoModel(), stream=StreamOptions(heartbeat=1.0))
    assert (chat.stream.ids, chat.stream.heartbeat) == (False, 1.0)
