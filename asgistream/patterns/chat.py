"""OpenAI-compatible chat completions: one token generator, answered as OpenAI answers.

A :class:`ChatModel` yields the tokens of an answer; :class:`ChatCompletions` is the handler
of ``POST /v1/chat/completions`` that serves it to any OpenAI client:

- the body is validated as OpenAI validates it, and a bad one gets a 400 with OpenAI's error
  shape ``{"error": {"message", "type", "param", "code"}}``;
- the body's ``stream`` field chooses the mode (the official SDK sends
  ``Accept: application/json`` even when it streams); only when the body has no ``stream``
  field does the request's negotiation decide (``?stream=true``, ``Accept``);
- a stream is a sequence of ``chat.completion.chunk`` objects on ``data:`` lines only (no
  ``id:``, ``event:`` or ``retry:`` line, which the SDK's decoder mishandles): the role, the
  content deltas, the ``finish_reason``, the usage when ``stream_options.include_usage`` asks
  for it, then ``data: [DONE]``;
- a batch is the same tokens collected into one ``chat.completion``.

Errors before the first token are HTTP errors with their status (the SDK raises the matching
``APIStatusError``); errors after it end the stream with a chunk that holds only an ``error``
object (the SDK raises ``APIError``) and no ``[DONE]``.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from .._headers import with_vary_accept
from .._types import ASGIApp
from ..batch import BatchResponse
from ..errors import HTTPError, as_http_error
from ..negotiation import SCOPE_KEY, Mode, negotiate_scope
from ..options import BatchOptions, StreamOptions
from ..producer import aclose
from ..request import Request
from ..streaming import EventStreamResponse
from ._openai import as_openai, error_chunk, openai_error

__all__ = [
    "ChatCompletions",
    "ChatMessage",
    "ChatModel",
    "ChatRequest",
    "error_chunk",
    "openai_error",
    "parse_chat_request",
]

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
"""The message roles OpenAI accepts."""

MAX_STOP_SEQUENCES = 4


# -- the request ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of the conversation; ``content`` is its text (text parts joined)."""

    role: str
    content: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat-completions request.

    ``stream`` is the body's field (``None`` when absent); ``max_tokens`` is the smaller of
    ``max_tokens`` and ``max_completion_tokens``; ``body`` is the whole JSON body, for the
    fields this module does not read (``temperature``, ``tools``, ...).
    """

    model: str
    messages: tuple[ChatMessage, ...]
    stream: bool | None = None
    include_usage: bool = False
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    body: Mapping[str, Any] = field(default_factory=dict)


class ChatModel(Protocol):
    """What a model backend implements to be served by :class:`ChatCompletions`."""

    def generate(self, request: ChatRequest) -> AsyncIterator[str]:
        """The tokens of the answer to ``request``, in order (an async generator).

        It may raise :class:`~asgistream.HTTPError` (see :func:`openai_error`); before the
        first token that is the response's status, after it an error chunk. It is closed
        (``aclose``) as soon as the answer is complete, ``max_tokens`` is reached or the client
        disconnects.
        """
        ...

    def count_tokens(self, request: ChatRequest) -> int:
        """How many tokens the prompt of ``request`` counts, for ``usage.prompt_tokens``."""
        ...


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate a parsed JSON body; raise an OpenAI-shaped 400 :class:`HTTPError` if bad."""
    if not isinstance(body, dict):
        raise _invalid_type("the request body", "an object", body, param=None)
    model = body.get("model")
    if model is None:
        raise _missing("model")
    if not isinstance(model, str):
        raise _invalid_type("model", "a string", model)
    if not model:
        raise openai_error(400, "You must provide a model parameter.", param="model")
    messages = body.get("messages")
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list):
        raise _invalid_type("messages", "an array", messages)
    if not messages:
        raise openai_error(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    stream = _optional(body, "stream", bool, "a boolean")
    include_usage = False
    options = _optional(body, "stream_options", dict, "an object")
    if options is not None:
        usage = options.get("include_usage")
        if usage is not None and not isinstance(usage, bool):
            raise _invalid_type("stream_options.include_usage", "a boolean", usage)
        include_usage = bool(usage)
    limits = [_positive_int(body, "max_tokens"), _positive_int(body, "max_completion_tokens")]
    given = [limit for limit in limits if limit is not None]
    n = _optional(body, "n", int, "an integer")
    if n is not None and n != 1:
        raise openai_error(
            400, f"Only n=1 is supported here, not n={n}.", param="n", code="unsupported_value"
        )
    return ChatRequest(
        model=model,
        messages=tuple(_message(i, m) for i, m in enumerate(messages)),
        stream=stream,
        include_usage=include_usage,
        max_tokens=min(given) if given else None,
        stop=_stop(body.get("stop")),
        body=body,
    )


def _message(index: int, message: Any) -> ChatMessage:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _invalid_type(where, "an object", message)
    role = message.get("role")
    if role is None:
        raise _missing(f"{where}.role")
    if role not in ROLES:
        supported = ", ".join(f"'{r}'" for r in ROLES)
        raise openai_error(
            400,
            f"Invalid value: {_show(role)}. Supported values are: {supported}.",
            param=f"{where}.role",
            code="invalid_value",
        )
    content = message.get("content")
    if content is None:
        # An assistant message may carry only tool calls; every other message needs content.
        if role != "assistant":
            raise _missing(f"{where}.content")
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "".join(_text_part(f"{where}.content[{i}]", p) for i, p in enumerate(content))
    else:
        raise _invalid_type(f"{where}.content", "a string or an array of objects", content)
    name = message.get("name")
    if name is not None and not isinstance(name, str):
        raise _invalid_type(f"{where}.name", "a string", name)
    return ChatMessage(role=role, content=text, name=name)


def _text_part(where: str, part: Any) -> str:
    """The text of one content part; parts that are not text (images, audio) add none."""
    if not isinstance(part, dict):
        raise _invalid_type(where, "an object", part)
    kind = part.get("type")
    if not isinstance(kind, str):
        raise _missing(f"{where}.type")
    if kind != "text":
        return ""
    text = part.get("text")
    if not isinstance(text, str):
        raise _invalid_type(f"{where}.text", "a string", text)
    return text


def _stop(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if len(stop) > MAX_STOP_SEQUENCES:
            raise openai_error(
                400,
                f"Invalid 'stop': array too long. Expected an array with maximum length "
                f"{MAX_STOP_SEQUENCES}, but got an array with length {len(stop)} instead.",
                param="stop",
                code="array_above_max_length",
            )
        return tuple(stop)
    raise _invalid_type("stop", "a string or an array of strings", stop)


def _optional(body: dict[str, Any], name: str, kind: type, expected: str) -> Any:
    value = body.get(name)
    if value is None:
        return None
    # bool is an int subclass, but true is no integer in JSON.
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise _invalid_type(name, expected, value)
    return value


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value: int | None = _optional(body, name, int, "an integer")
    if value is not None and value < 1:
        raise openai_error(
            400,
            f"Invalid '{name}': integer below minimum value. "
            f"Expected a value >= 1, but got {value} instead.",
            param=name,
            code="integer_below_min_value",
        )
    return value


_JSON_TYPES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def _invalid_type(where: str, expected: str, value: Any, *, param: Any = ...) -> HTTPError:
    got = _JSON_TYPES.get(type(value), type(value).__name__)
    return openai_error(
        400,
        f"Invalid type for '{where}': expected {expected}, but got {got} instead.",
        param=where if param is ... else param,
        code="invalid_type",
    )


def _missing(where: str) -> HTTPError:
    return openai_error(
        400,
        f"Missing required parameter: '{where}'.",
        param=where,
        code="missing_required_parameter",
    )


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= 60 else text[:57] + "..."


# -- the answer ----------------------------------------------------------------------------

_MODEL_FAILED = "The model failed while generating the answer"
"""What a client is told when a model raises anything but an ``HTTPError``."""


class _Shapes:
    """The JSON objects of one completion, which all share ``id``, ``created`` and ``model``.

    ``include_usage``: the stream carries ``usage``; ``prompt``: the prompt's token count.
    """

    __slots__ = ("created", "head", "id", "include_usage", "model", "prompt", "tail")

    def __init__(self, model: str, include_usage: bool, prompt: int) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.prompt = prompt
        # Content chunks are the bulk of a stream: their JSON is built around the token only.
        self.head = (
            b'{"id":%b,"object":"chat.completion.chunk","created":%d,"model":%b,'
            b'"choices":[{"index":0,"delta":{"content":'
            % (orjson.dumps(self.id), self.created, orjson.dumps(model))
        )
        self.tail = b'},"logprobs":null,"finish_reason":null}]' + (
            b',"usage":null}' if include_usage else b"}"
        )

    def content(self, token: str) -> bytes:
        return self.head + orjson.dumps(token) + self.tail

    def chunk(self, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        chunk = self._common("chat.completion.chunk")
        chunk["choices"] = [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        ]
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def usage_chunk(self, completion_tokens: int) -> dict[str, Any]:
        chunk = self._common("chat.completion.chunk")
        chunk["choices"] = []
        chunk["usage"] = self.usage(completion_tokens)
        return chunk

    def completion(self, content: str, finish_reason: str, completion_tokens: int) -> bytes:
        completion = self._common("chat.completion")
        completion["choices"] = [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ]
        completion["usage"] = self.usage(completion_tokens)
        return orjson.dumps(completion)

    def usage(self, completion_tokens: int) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt + completion_tokens,
        }

    def _common(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}


@dataclass(frozen=True, slots=True)
class _Finish:
    """The last item of a token stream: why it ended, how many tokens it had, and the shapes
    of the completion it ends (so that one reducer, made once, can build any completion)."""

    reason: str
    tokens: int
    shapes: _Shapes


async def _tokens(
    model: ChatModel, request: ChatRequest, shapes: _Shapes
) -> AsyncIterator[str | _Finish]:
    """The model's tokens, cut at ``max_tokens``, then a :class:`_Finish`.

    The error policy (:func:`~asgistream.errors.as_http_error`) logs anything but an
    :class:`HTTPError`, which then becomes an OpenAI-shaped 500: no traceback reaches a
    client, and every error has OpenAI's shape.
    """
    limit = request.max_tokens
    count = 0
    reason = "stop"
    tokens: AsyncIterator[str] | None = None
    try:
        tokens = model.generate(request)
        async for token in tokens:
            if type(token) is not str:
                raise TypeError(f"a ChatModel yields str tokens, not {type(token).__name__}")
            if not token:
                continue
            yield token
            count += 1
            if limit is not None and count >= limit:
                reason = "length"
                break
    except Exception as exc:
        error = as_http_error(exc, "chat model failed")
        if error is not exc:
            error = openai_error(error.status, _MODEL_FAILED)
        raise error from None
    finally:
        if tokens is not None:
            await aclose(tokens)
    yield _Finish(reason, count, shapes)


async def _chunks(tokens: AsyncIterator[str | _Finish], shapes: _Shapes) -> AsyncIterator[Any]:
    """The stream: role, content deltas, finish, usage, ``[DONE]``."""
    try:
        # Nothing is sent before the first token, so an error before it keeps its status.
        item = await tokens.__anext__()
        yield shapes.chunk({"role": "assistant", "content": "", "refusal": None}, None)
        try:
            while type(item) is str:
                yield shapes.content(item)
                item = await tokens.__anext__()
        except HTTPError as exc:
            yield error_chunk(exc)
            return
        assert isinstance(item, _Finish)
        yield shapes.chunk({}, item.reason)
        if shapes.include_usage:
            yield shapes.usage_chunk(item.tokens)
        yield "[DONE]"
    finally:
        await aclose(tokens)


class _Completion:
    """The reducer that collects a token stream into one ``chat.completion``."""

    __slots__ = ("finish", "pieces")

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.finish: _Finish | None = None

    def add(self, items: list[Any]) -> int:
        size = 0
        for item in items:
            if type(item) is _Finish:
                self.finish = item
            else:
                self.pieces.append(item)
                size += len(item)
        return size

    def body(self) -> bytes:
        finish = self.finish
        assert finish is not None, "a token stream always ends with its _Finish"
        return finish.shapes.completion("".join(self.pieces), finish.reason, finish.tokens)


# -- the endpoint --------------------------------------------------------------------------

_STREAM = StreamOptions()
_BATCH = BatchOptions(max_items=None)


class ChatCompletions:
    """The handler of ``POST /v1/chat/completions``, answering from ``model``.

    Register it with ``app.route("/v1/chat/completions", methods=("POST",))(handler)``.
    ``models``, if given, are the model names accepted (others get OpenAI's 404
    ``model_not_found``).

    ``stream`` shapes a streamed answer: its ``heartbeat``, ``idle_timeout`` and
    ``send_timeout`` (see :class:`~asgistream.StreamOptions`). OpenAI's format decides the
    rest: no ``id:`` lines (``ids`` is turned off), the ``[DONE]`` is the endpoint's own, and
    ``done`` or ``retry`` are refused.
    ``batch`` bounds a whole answer: ``timeout``, ``max_bytes`` and ``max_items`` (tokens; by
    default no limit). The body is the ``chat.completion``, so ``reduce`` is refused.
    """

    def __init__(
        self,
        model: ChatModel,
        *,
        models: Collection[str] | None = None,
        stream: StreamOptions = _STREAM,
        batch: BatchOptions = _BATCH,
    ) -> None:
        if stream.done or stream.retry is not None:
            raise ValueError(
                "OpenAI clients read data: lines only: a chat stream takes no done or retry"
            )
        if batch.reduce is not None:
            raise ValueError("the batch body of a chat is its chat.completion: reduce must be None")
        self.model = model
        self.models = frozenset(models) if models is not None else None
        self.stream = dataclasses.replace(stream, ids=False)
        self.batch = dataclasses.replace(batch, reduce=_Completion)

    async def __call__(self, request: Request) -> ASGIApp:
        try:
            body = await request.json()
        except HTTPError as exc:
            raise as_openai(exc) from None
        chat = parse_chat_request(body)
        if self.models is not None and chat.model not in self.models:
            raise openai_error(
                404,
                f"The model '{chat.model}' does not exist or you do not have access to it.",
                code="model_not_found",
            )
        headers = None
        if chat.stream is None:
            try:
                mode = negotiate_scope(request.scope, default=Mode.BATCH)
            except HTTPError as exc:
                raise as_openai(exc) from None
            headers = with_vary_accept()
        else:
            mode = Mode.STREAM if chat.stream else Mode.BATCH
            request.scope[SCOPE_KEY] = mode
        if mode is Mode.BATCH and body.get("stream_options") is not None:
            raise openai_error(
                400,
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
                code="invalid_value",
            )
        shapes = _Shapes(chat.model, chat.include_usage, self.model.count_tokens(chat))
        tokens = _tokens(self.model, chat, shapes)
        if mode is Mode.STREAM:
            return EventStreamResponse(_chunks(tokens, shapes), self.stream, headers=headers)
        return BatchResponse(tokens, self.batch, headers=headers)
