"""The batch response: the step that collects a producer's items into one JSON body.

A :class:`~asgistream.DualEndpoint` hands its producer here when the request negotiated a
batch (it is a plain ASGI app, usable on its own too). A reducer decides the body's shape: all
items as a list (the default), the last item only, or their text concatenated (an LLM answer).
Limits on items, bytes and time (:class:`~asgistream.BatchOptions`) end in a clear JSON error
instead of a huge, truncated or never-ending body, and a client that gives up cancels the work
through the same :class:`~asgistream.disconnect.Watch` a stream uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable
from types import AsyncGeneratorType
from typing import Any, Protocol

import anyio.lowlevel
import orjson

from ._headers import RawHeaders, ResponseHeaders, encode_headers
from ._types import Receive, Scope, Send
from .disconnect import now, watch
from .errors import HTTPError, as_http_error, send_error
from .options import DEFAULT_MAX_BYTES, DEFAULT_MAX_ITEMS, BatchOptions
from .producer import aclose, finish_step
from .sse import Event

__all__ = [
    "BatchResponse",
    "Reducer",
    "ReducerFactory",
    "as_list",
    "collect",
    "joined_text",
    "last_item",
    "respond",
]

_BLOCK_ITEMS = 1024
"""Items handed to the reducer together; the limits are checked per block and at the end."""


class Reducer(Protocol):
    """Builds one JSON body from the items of a producer, taken a block at a time."""

    def add(self, items: list[Any]) -> int:
        """Take the next items, in order; return about how many bytes they add to the body."""
        ...

    def body(self) -> bytes:
        """The complete JSON body."""
        ...


ReducerFactory = Callable[[], Reducer]
"""Makes a fresh reducer for each request."""


class _Items:
    """Items serialized a block at a time: one orjson call per block, exact byte counts."""

    __slots__ = ("_blocks", "_head")

    def __init__(self, head: bytes) -> None:
        self._head = head  # what goes before the array: b'{"key":', or nothing
        self._blocks: list[bytes] = []

    def add(self, items: list[Any]) -> int:
        if items and type(items[0]) is Event:
            # A producer of Events yields nothing else, as a rule: one pass unwraps them,
            # where orjson's callback would be called once per item (ten times the cost).
            items = [item.data if type(item) is Event else item for item in items]
        block = orjson.dumps(items, default=_default, option=_PASSTHROUGH)
        self._blocks.append(block)
        return len(block) - 1  # its items and one separator, without the brackets

    def body(self) -> bytes:
        blocks = self._blocks
        if len(blocks) == 1:
            array = blocks[0]
        else:
            array = b"[" + b",".join([block[1:-1] for block in blocks]) + b"]"
        return b"%b%b}" % (self._head, array) if self._head else array


class _Last:
    __slots__ = ("_item", "_seen")

    def __init__(self) -> None:
        self._item: Any = None
        self._seen = False

    def add(self, items: list[Any]) -> int:
        self._item = _data(items[-1])
        self._seen = True
        return 0

    def body(self) -> bytes:
        if not self._seen:
            raise HTTPError(500, "The producer ended without an item", type="empty_result")
        return orjson.dumps(self._item)


class _Text:
    __slots__ = ("_extract", "_key", "_pieces")

    def __init__(self, key: str, extract: Callable[[Any], str | None] | None) -> None:
        self._key = key
        self._extract = extract
        self._pieces: list[str] = []

    def add(self, items: list[Any]) -> int:
        size = 0
        for item in items:
            data = _data(item)
            text = self._extract(data) if self._extract is not None else data
            if text is None:
                continue
            if isinstance(text, bytes):
                text = text.decode("utf-8", "replace")
            elif not isinstance(text, str):
                raise TypeError(f"joined_text needs str items, got {type(text).__name__}")
            self._pieces.append(text)
            size += len(text)
        return size

    def body(self) -> bytes:
        return orjson.dumps({self._key: "".join(self._pieces)})


def as_list(key: str | None = "items") -> ReducerFactory:
    """All items as a JSON list, as ``{key: [...]}`` (or a bare list if ``key`` is None)."""
    head = b"" if key is None else b"{" + orjson.dumps(key) + b":"
    return lambda: _Items(head)


def last_item() -> ReducerFactory:
    """Only the last item, as the body itself."""
    return _Last


def joined_text(
    key: str = "text", extract: Callable[[Any], str | None] | None = None
) -> ReducerFactory:
    """The items' text concatenated, as ``{key: "..."}``.

    ``extract`` picks the text out of an item (``None`` skips it); by default items must be
    ``str`` themselves.
    """
    return lambda: _Text(key, extract)


def _data(item: Any) -> Any:
    if type(item) is Event:
        item = item.data
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item).decode("utf-8", "replace")
    return item


_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATACLASS


def _default(value: Any) -> Any:
    """What orjson cannot serialize by itself: an Event's data, and bytes as text."""
    if type(value) is Event or isinstance(value, bytes | bytearray | memoryview):
        return _data(value)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


async def collect(
    producer: AsyncIterable[Any],
    reducer: Reducer,
    *,
    max_items: int | None = DEFAULT_MAX_ITEMS,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
) -> bytes:
    """Feed every item of ``producer`` to ``reducer`` and return the body.

    Raises :class:`HTTPError` (400, type ``batch_too_large``) when a limit is passed; the
    producer is closed either way.
    """
    iterator = producer.__aiter__()
    # Blocks end early enough for max_items to stop an endless producer at once.
    block_size = _BLOCK_ITEMS if max_items is None else min(_BLOCK_ITEMS, max_items + 1)
    block: list[Any] = []
    count = 0
    size = 0
    try:
        async for item in iterator:
            block.append(item)
            if len(block) < block_size:
                continue
            count, size = _take(reducer, block, count, size, max_items, max_bytes)
            block = []
            # A producer that never waits still lets the disconnect watcher run.
            await _checkpoint()
        if block:
            _take(reducer, block, count, size, max_items, max_bytes)
    finally:
        # An async generator that has ended has nothing left to close (its frame is gone):
        # awaiting its aclose() would only cost an awaitable per request.
        if type(iterator) is not AsyncGeneratorType or iterator.ag_frame is not None:
            await aclose(iterator)
    body = reducer.body()
    if max_bytes is not None and len(body) > max_bytes:
        raise _too_large(f"more than {max_bytes} bytes")
    return body


async def _checkpoint() -> None:
    if _on_asyncio():
        await asyncio.sleep(0)
    else:
        await anyio.lowlevel.checkpoint()


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _take(
    reducer: Reducer,
    block: list[Any],
    count: int,
    size: int,
    max_items: int | None,
    max_bytes: int | None,
) -> tuple[int, int]:
    """Hand ``block`` to ``reducer`` within the limits; return the new count and size."""
    count += len(block)
    if max_items is not None and count > max_items:
        raise _too_large(f"more than {max_items} items")
    size += reducer.add(block)
    if max_bytes is not None and size > max_bytes:
        raise _too_large(f"more than {max_bytes} bytes")
    return count, size


def _too_large(what: str) -> HTTPError:
    return HTTPError(
        400,
        f"The batch response would have {what}; request it as a stream (?format=stream)",
        type="batch_too_large",
    )


_default_reducer = as_list()


class BatchResponse:
    """Answer with the items of ``producer`` collected into one JSON body.

    ``options`` shape and bound the body (the reducer, ``max_items``, ``max_bytes``,
    ``timeout``; see :class:`~asgistream.BatchOptions`). ``headers`` are added to the answer,
    an error included.
    """

    def __init__(
        self,
        producer: AsyncIterable[Any],
        options: BatchOptions = BatchOptions(),
        *,
        status: int = 200,
        headers: ResponseHeaders | None = None,
    ) -> None:
        self.producer = producer
        self.options = options
        self.status = status
        self.headers = encode_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(self.producer, self.options, self.status, self.headers, receive, send)


async def respond(
    producer: AsyncIterable[Any],
    options: BatchOptions,
    status: int,
    headers: RawHeaders,
    receive: Receive,
    send: Send,
) -> None:
    """What :class:`BatchResponse` does, for a caller that already has its headers encoded
    (a :class:`~asgistream.DualEndpoint` answers every batch request this way, without an
    object per request). ``headers`` are not copied: they are only read."""
    timeout = options.timeout
    deadline = None if timeout is None else now() + timeout
    body = b""
    error: HTTPError | None = None
    collecting = collect(
        producer,
        (options.reduce or _default_reducer)(),
        max_items=options.max_items,
        max_bytes=options.max_bytes,
    )
    pending: Any = None
    waits = True
    on_asyncio = _on_asyncio()
    if on_asyncio:
        # Collection runs until the producer first waits; most never do, and their batch is
        # complete before any watcher is needed. One that waits is watched from there on.
        # (Not on trio: its cancel scopes nest, so the watcher's must be open before the
        # producer opens any.)
        try:
            pending = collecting.send(None)
        except StopIteration as stop:
            waits, body = False, stop.value
        except Exception as exc:
            waits, error = False, as_http_error(exc, "producer failed")
    if waits:
        watcher = watch(receive)
        async with watcher:
            if deadline is not None:
                watcher.deadline(deadline)
            try:
                if on_asyncio:
                    body = await finish_step(collecting.__await__(), pending)
                else:
                    body = await collecting
            except Exception as exc:
                error = as_http_error(exc, "producer failed")
        if watcher.disconnected:
            return
        if watcher.reason == "timeout":
            error = HTTPError(504, f"The batch was not complete within {timeout} s", type="timeout")
    try:
        if error is not None:
            await send_error(send, error, headers)
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [_JSON, (b"content-length", b"%d" % len(body)), *headers],
            }
        )
        await send({"type": "http.response.body", "body": body})
    except OSError:
        return


_JSON = (b"content-type", b"application/json")
