"""EventStreamResponse driven directly as an ASGI app: the exact messages it sends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator

import anyio
import anyio.lowlevel
import pytest

from asgistream import Event, EventStreamResponse, HTTPError, StreamOptions
from asgistream._types import Message
from asgistream.streaming import FLUSH_BYTES, _Stream
from tests.helpers import FakeClient

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend(each_event_loop: str) -> str:
    return each_event_loop


async def run(response: EventStreamResponse, client: FakeClient) -> None:
    await response({"type": "http"}, client.receive, client.send)


async def test_items_ready_together_go_out_in_one_send() -> None:
    async def producer() -> AsyncIterator[int]:
        for i in range(100):
            yield i

    client = FakeClient()
    await run(EventStreamResponse(producer()), client)
    # All hundred items were ready at once: they and the end of the body are one message.
    assert len(client.bodies) == 1
    assert client.bodies[0].count(b"\n\n") == 100
    assert client.messages[-1]["more_body"] is False


async def test_a_lone_item_goes_out_while_the_producer_waits() -> None:
    sent_while_waiting: list[int] = []
    client = FakeClient()

    async def producer() -> AsyncIterator[str]:
        for word in ("a", "b", "c"):
            yield word
            await anyio.sleep(0.01)
            sent_while_waiting.append(len(client.bodies))

    await run(EventStreamResponse(producer()), client)
    # Each item was on the wire while the producer waited for the next one.
    assert sent_while_waiting == [1, 2, 3]
    assert client.bodies[:3] == [
        b"id: 0\ndata: a\n\n",
        b"id: 1\ndata: b\n\n",
        b"id: 2\ndata: c\n\n",
    ]


class _Countdown:
    """An async iterator that is not an async generator: its steps are coroutines."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __aiter__(self) -> _Countdown:
        return self

    async def __anext__(self) -> int:
        if self.n == 0:
            raise StopAsyncIteration
        self.n -= 1
        if self.n % 2:
            await anyio.sleep(0.001)  # every other item after a wait
        return self.n


class _Sent:
    """What a server's ``send`` may return instead of a coroutine: any awaitable."""

    def __await__(self) -> Generator[None, None, None]:
        yield from ()


async def test_any_async_iterator_and_any_awaitable_send() -> None:
    client = FakeClient()

    def send(message: Message) -> _Sent:
        client.messages.append(dict(message))
        return _Sent()

    response = EventStreamResponse(_Countdown(5), StreamOptions(ids=False))
    await response({"type": "http"}, client.receive, send)
    assert b"".join(client.bodies) == b"".join(b"data: %d\n\n" % n for n in (4, 3, 2, 1, 0))
    # The items that came after a wait went out alone, the ones ready at once together.
    assert len([b for b in client.bodies if b]) < 5


async def test_large_bursts_are_cut_at_flush_bytes() -> None:
    async def producer() -> AsyncIterator[str]:
        for _ in range(1000):
            yield "x" * 1000

    client = FakeClient()
    await run(EventStreamResponse(producer(), StreamOptions(ids=False)), client)
    sizes = [len(b) for b in client.bodies if b]
    assert sum(sizes) == 1000 * len(b"data: " + b"x" * 1000 + b"\n\n")
    assert max(sizes) < FLUSH_BYTES + 2000 and len(sizes) > 10


async def test_disconnect_cancels_a_blocked_producer_and_runs_finally() -> None:
    finished = anyio.Event()
    client = FakeClient()

    async def producer() -> AsyncIterator[str]:
        try:
            yield "first"
            await anyio.sleep_forever()
        finally:
            finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, EventStreamResponse(producer()), client)
        await anyio.sleep(0.05)
        client.disconnect()
        with anyio.fail_after(1):
            await finished.wait()
    assert client.messages[-1].get("more_body") is True  # nothing sent after the disconnect


async def test_oserror_from_send_counts_as_disconnect() -> None:
    finished = []

    async def producer() -> AsyncIterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
                await anyio.lowlevel.checkpoint()
        finally:
            finished.append(True)

    client = FakeClient(fail_send_after=3)
    with anyio.fail_after(2):
        await run(EventStreamResponse(producer()), client)
    assert finished == [True]


async def test_error_before_first_event_is_http_error_with_json() -> None:
    async def producer() -> AsyncIterator[int]:
        raise HTTPError(404, "gone", detail={"id": 7})
        yield 1

    client = FakeClient()
    await run(EventStreamResponse(producer(), headers={"vary": "Accept"}), client)
    assert client.status == 404
    headers = dict(client.messages[0]["headers"])
    assert headers[b"content-type"] == b"application/json" and headers[b"vary"] == b"Accept"
    assert client.bodies == [b'{"error":{"type":"not_found","message":"gone","id":7}}']


async def test_error_after_produced_item_keeps_the_item() -> None:
    async def producer() -> AsyncIterator[int]:
        yield 1
        raise ValueError("secret")

    client = FakeClient()
    await run(EventStreamResponse(producer()), client)
    body = b"".join(client.bodies)
    assert client.status == 200
    assert body.startswith(b"id: 0\ndata: 1\n\n")
    assert body.endswith(
        b'event: error\ndata: {"error":{"type":"internal_error",'
        b'"message":"Internal server error"}}\n\n'
    )
    assert b"secret" not in body


async def test_idle_timeout_and_heartbeat() -> None:
    async def producer() -> AsyncIterator[Event]:
        yield Event("go", event="start")
        await anyio.sleep(10)
        yield Event("never")

    client = FakeClient()
    with anyio.fail_after(3):
        await run(
            EventStreamResponse(producer(), StreamOptions(heartbeat=0.05, idle_timeout=0.3)), client
        )
    body = b"".join(client.bodies)
    assert body.startswith(b"event: start\nid: 0\ndata: go\n\n")
    assert body.count(b":\n\n") >= 3
    assert body.endswith(
        b'"type":"timeout","message":"The producer sent no event within the idle timeout"}}\n\n'
    )


async def test_shutdown_ends_stream_with_shutdown_event() -> None:
    from asgistream.shutdown import SCOPE_KEY, Shutdown

    registry = Shutdown()
    client = FakeClient()

    async def producer() -> AsyncIterator[int]:
        yield 1
        await anyio.sleep_forever()

    async def stream() -> None:
        await EventStreamResponse(producer())(
            {"type": "http", SCOPE_KEY: registry}, client.receive, client.send
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(stream)
        await anyio.sleep(0.05)
        assert len(registry) == 1
        registry.trigger()
    assert len(registry) == 0
    assert b'"type":"shutdown"' in client.bodies[-1]
    assert client.messages[-1]["more_body"] is False


async def test_producer_that_swallows_cancellation_is_still_stopped() -> None:
    client = FakeClient()
    yielded_after_cancel = []

    async def producer() -> AsyncIterator[int]:
        yield 0
        try:
            await anyio.sleep_forever()
        except BaseException:
            yielded_after_cancel.append(True)
            yield 1  # the seeds' defect: yielding after cancellation
            yield 2

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, EventStreamResponse(producer()), client)
        await anyio.sleep(0.05)
        client.disconnect()
    assert yielded_after_cancel == [True]
    assert b"data: 1" not in b"".join(client.bodies)


def test_invalid_options_fail_at_construction() -> None:
    for bad in (
        {"heartbeat": -1},
        {"idle_timeout": float("nan")},
        {"retry": -5},
        {"max_events": -1},
        {"max_events": 2.0},
        {"max_bytes": True},
    ):
        with pytest.raises(ValueError):
            StreamOptions(**bad)


async def test_a_heartbeat_that_fails_to_send_ends_the_stream_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    finished = []

    async def producer() -> AsyncIterator[int]:
        try:
            yield 1
            await anyio.sleep_forever()
        finally:
            finished.append(True)

    # The start and the first event pass, the heartbeat fails.
    client = FakeClient(fail_send_after=2)
    with anyio.fail_after(2):
        await run(EventStreamResponse(producer(), StreamOptions(heartbeat=0.05)), client)
    assert finished == [True]
    assert "watcher failed" not in caplog.text


async def test_idle_timeout_before_the_first_event_is_a_504() -> None:
    async def producer() -> AsyncIterator[int]:
        await anyio.sleep(10)
        yield 1

    client = FakeClient()
    with anyio.fail_after(3):
        await run(EventStreamResponse(producer(), StreamOptions(idle_timeout=0.05)), client)
    assert client.status == 504
    assert client.body == (
        b'{"error":{"type":"timeout",'
        b'"message":"The producer sent no event within the idle timeout"}}'
    )


async def test_a_failure_while_closing_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    async def producer() -> AsyncIterator[int]:
        try:
            yield 1
            try:
                await anyio.sleep(10)
            except BaseException:
                yield 2  # swallows the idle timeout's cancellation: the stream closes it here
        finally:
            raise KeyError("while closing")

    client = FakeClient()
    with anyio.fail_after(3):
        await run(EventStreamResponse(producer(), StreamOptions(idle_timeout=0.05)), client)
    assert client.body.endswith(
        b'event: error\ndata: {"error":{"type":"internal_error",'
        b'"message":"Internal server error"}}\n\n'
    )
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [KeyError]


_LIMIT_TAIL = b'"type":"stream_limit","message":"The stream reached its limit of '


@pytest.mark.parametrize("paced", [False, True])
async def test_max_events_closes_the_producer_and_ends_with_stream_limit(paced: bool) -> None:
    finished = []

    async def producer() -> AsyncIterator[int]:
        i = 0
        try:
            while True:
                yield i
                i += 1
                if paced:
                    await anyio.sleep(0.001)
        finally:
            finished.append(i)

    client = FakeClient()
    with anyio.fail_after(3):
        await run(EventStreamResponse(producer(), StreamOptions(max_events=3)), client)
    body = client.body
    # Three events, not the fourth item: the producer was closed where it yielded it.
    assert body.startswith(b"id: 0\ndata: 0\n\nid: 1\ndata: 1\n\nid: 2\ndata: 2\n\n")
    assert b"data: 3" not in body and finished == [3]
    assert body.endswith(
        b'event: error\ndata: {"error":{' + _LIMIT_TAIL + b'3 events (max_events)",'
        b'"limit":"max_events"}}\n\n'
    )
    assert client.messages[-1]["more_body"] is False


async def test_max_bytes_counts_the_encoded_events() -> None:
    async def producer() -> AsyncIterator[str]:
        for _ in range(10):
            yield "x" * 10

    event = b"data: " + b"x" * 10 + b"\n\n"
    client = FakeClient()
    options = StreamOptions(ids=False, max_bytes=2 * len(event) + 1)
    await run(EventStreamResponse(producer(), options), client)
    body = client.body
    assert body.startswith(event * 2 + b"event: error\n")
    assert b"%d bytes of events (max_bytes)" % (2 * len(event) + 1) in body
    assert b'"limit":"max_bytes"' in body


async def test_a_limit_passed_by_the_first_event_is_an_http_error() -> None:
    async def producer() -> AsyncIterator[str]:
        yield "too long"

    client = FakeClient()
    await run(EventStreamResponse(producer(), StreamOptions(max_bytes=5)), client)
    assert client.status == 500
    assert client.body.startswith(b'{"error":{' + _LIMIT_TAIL + b"5 bytes of events")


async def test_events_faster_than_the_idle_timeout_never_trip_it() -> None:
    async def producer() -> AsyncIterator[int]:
        for i in range(12):
            await anyio.sleep(0.02)
            yield i

    client = FakeClient()
    with anyio.fail_after(3):
        # The stream outlives the timeout many times over, each wait well within it.
        await run(EventStreamResponse(producer(), StreamOptions(idle_timeout=0.06)), client)
    assert client.body.count(b"data: ") == 12 and b"timeout" not in client.body
    assert client.messages[-1]["more_body"] is False


async def test_a_send_that_blocks_past_send_timeout_ends_the_stream() -> None:
    finished = []
    blocked = anyio.Event()

    async def producer() -> AsyncIterator[int]:
        try:
            for i in range(3):
                yield i
                await anyio.lowlevel.checkpoint()
        finally:
            finished.append(True)

    class StuckClient(FakeClient):
        async def send(self, message: dict[str, object]) -> None:
            if message.get("body", b"").startswith(b"id: 1"):  # type: ignore[union-attr]
                blocked.set()
                await anyio.sleep_forever()
            await super().send(message)

    client = StuckClient()
    with anyio.fail_after(3):
        await run(EventStreamResponse(producer(), StreamOptions(send_timeout=0.1)), client)
    assert blocked.is_set() and finished == [True]
    assert client.body == b"id: 0\ndata: 0\n\n"


async def test_a_heartbeat_counts_silence_from_the_end_of_a_blocked_write() -> None:
    # The schedule's arithmetic on a clock under the test's control: a write records only
    # when it begins, so a write seen still running must push the next heartbeat back.
    async def producer() -> AsyncIterator[int]:
        yield 1

    now = [0.0]
    response = EventStreamResponse(producer(), StreamOptions(heartbeat=10))
    stream = _Stream(response, FakeClient().send, FakeClient().receive)
    stream.clock = lambda: now[0]
    stream.last_write = 0.0
    stream.sending = True
    now[0] = 8.0
    assert stream.due() == 10  # blocked: no heartbeat can pass, look again later
    stream.sending = False  # the write ends some time after 8 s
    now[0] = 12.0
    assert stream.due() == pytest.approx(6.0)  # silence counted from 8 s, not from 0
    now[0] = 18.0
    assert stream.due() == 0.0
