"""The limiter: weighted FIFO grants, timeouts, cancellation, the ASGI middleware.

The accounting is the :class:`~asgistream.middleware.limiter.Slots` store's, so every test
that takes units runs against each backend (the ``stores`` fixture).
"""

from __future__ import annotations

import random
from typing import Any

import anyio
import orjson
import pytest

from asgistream import Mode
from asgistream._types import Receive, Scope, Send
from asgistream.middleware.limiter import Limiter, LimiterFull, LimiterMiddleware, by_mode
from tests.helpers import FakeClient, RecordingSink, until
from tests.stores import Stores

pytestmark = pytest.mark.anyio


# -- acquiring and releasing ----------------------------------------------------------------


async def test_capacity_is_checked_and_units_come_back(stores: Stores) -> None:
    limiter = Limiter(slots=stores.slots(3))
    await limiter.acquire(2)
    assert await limiter.try_acquire(1)
    assert not await limiter.try_acquire(1)
    assert limiter.in_use == 3
    await limiter.release(3)
    assert limiter.in_use == 0
    async with limiter.hold(3):
        assert limiter.in_use == 3
    assert limiter.in_use == 0
    await limiter.acquire(0)  # weight 0 takes nothing
    assert limiter.in_use == 0
    with pytest.raises(RuntimeError):
        await limiter.release(1)


@pytest.mark.parametrize("weight", [4, -1, 1.5])
async def test_impossible_weights_are_refused(stores: Stores, weight: Any) -> None:
    with pytest.raises(ValueError):
        await Limiter(slots=stores.slots(3)).acquire(weight)


@pytest.mark.parametrize(
    "kwargs",
    [{"capacity": 0}, {"capacity": 2.0}, {"queue_timeout": -1}, {"retry_after": -1}],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Limiter(**{"capacity": 2, **kwargs})


def test_capacity_or_slots() -> None:
    from asgistream.backends.memory import MemorySlots

    assert Limiter(3).capacity == Limiter(slots=MemorySlots(3)).capacity == 3
    for bad in ({}, {"capacity": 3, "slots": MemorySlots(3)}):
        with pytest.raises(ValueError):
            Limiter(**bad)  # type: ignore[arg-type]


async def test_heavy_waiter_is_not_starved_by_lighter_ones(stores: Stores) -> None:
    limiter = Limiter(slots=stores.slots(3), queue_timeout=None)
    order: list[str] = []
    await limiter.acquire(2)

    async def take(name: str, weight: int) -> None:
        await limiter.acquire(weight)
        order.append(name)

    async with anyio.create_task_group() as group:
        group.start_soon(take, "heavy", 3)
        await until(lambda: limiter.waiting == 1)
        group.start_soon(take, "light", 1)
        await until(lambda: limiter.waiting == 2)
        # One unit is free, and "light" needs only one: it still waits behind "heavy".
        await anyio.sleep(0.05)
        assert order == [] and limiter.in_use == 2
        await limiter.release(2)
        await until(lambda: order == ["heavy"])
        assert limiter.in_use == 3 and limiter.waiting == 1
        await limiter.release(3)
    assert order == ["heavy", "light"]
    assert limiter.in_use == 1 and limiter.waiting == 0


async def test_weights_are_granted_whole_and_never_deadlock(stores: Stores) -> None:
    limiter = Limiter(slots=stores.slots(5), queue_timeout=None)
    rng = random.Random(7)
    peak = 0
    done = 0

    async def worker(weight: int) -> None:
        nonlocal peak, done
        async with limiter.hold(weight):
            peak = max(peak, limiter.in_use)
            assert limiter.in_use <= limiter.capacity
            await anyio.sleep(rng.random() * 0.003)
        done += 1

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for _ in range(400):
                group.start_soon(worker, rng.randint(1, 5))
    assert done == 400
    assert peak == 5
    assert limiter.in_use == 0 and limiter.waiting == 0


async def test_queue_timeout_rejects_and_lets_lighter_waiters_in(stores: Stores) -> None:
    limiter = Limiter(slots=stores.slots(2), queue_timeout=0.2)
    await limiter.acquire(1)
    outcome: dict[str, Any] = {}

    async def take(name: str, weight: int) -> None:
        try:
            await limiter.acquire(weight)
            outcome[name] = anyio.current_time()
        except LimiterFull as full:
            outcome[name] = full.reason

    started = anyio.current_time()
    async with anyio.create_task_group() as group:
        group.start_soon(take, "heavy", 2)
        await until(lambda: limiter.waiting == 1)
        # "light" queues well after "heavy", so that its own deadline cannot fall in the same
        # event-loop turn as heavy's on a slow machine.
        await anyio.sleep(0.1)
        group.start_soon(take, "light", 1)
    assert outcome["heavy"] == "timeout"
    # "light" fitted all along; it got in as soon as "heavy" left the head of the queue,
    # before its own deadline (0.3 s).
    assert outcome["light"] - started < 0.3
    assert limiter.in_use == 2 and limiter.waiting == 0


async def test_no_wait_and_bounded_queue_reject_at_once(stores: Stores) -> None:
    never = Limiter(slots=stores.slots(1, name="never"), queue_timeout=0)
    await never.acquire()
    with pytest.raises(LimiterFull) as full:
        await never.acquire()
    assert full.value.reason == "timeout"

    bounded = Limiter(slots=stores.slots(1, name="bounded"), queue_timeout=None, max_waiting=1)
    await bounded.acquire()
    async with anyio.create_task_group() as group:
        group.start_soon(bounded.acquire)
        await until(lambda: bounded.waiting == 1)
        with pytest.raises(LimiterFull) as full:
            await bounded.acquire()
        assert full.value.reason == "queue_full"
        await bounded.release()
    assert bounded.in_use == 1 and bounded.waiting == 0


async def test_cancelled_waiters_leave_nothing_behind(stores: Stores) -> None:
    limiter = Limiter(slots=stores.slots(2), queue_timeout=None)
    await limiter.acquire(2)
    with anyio.move_on_after(0.05):
        await limiter.acquire(1)
    assert limiter.waiting == 0 and limiter.in_use == 2

    async def holder() -> None:
        async with limiter.hold(2):
            await anyio.sleep_forever()

    # Granted and cancelled in the same instant: the units go back.
    async with anyio.create_task_group() as group:
        group.start_soon(holder)
        await until(lambda: limiter.waiting == 1)
        await limiter.release(2)  # grants the waiter...
        group.cancel_scope.cancel()  # ...which is cancelled before it runs again
    assert limiter.in_use == 0 and limiter.waiting == 0


# -- the ASGI middleware -----------------------------------------------------------------------


def http_scope(**extra: Any) -> Scope:
    return {
        "type": "http",
        "method": "GET",
        "path": "/",
        "query_string": b"",
        "headers": [],
        **extra,
    }


class Held:
    """An ASGI app that answers once ``release`` is set, or raises."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.running = 0
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.running += 1
        try:
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            self.bodies.append(body)
            if scope["path"] == "/boom":
                raise RuntimeError("boom")
            await self.release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        finally:
            self.running -= 1


async def test_middleware_holds_units_while_the_app_runs_and_rejects_with_503(
    stores: Stores,
) -> None:
    sink = RecordingSink()
    limiter = Limiter(
        slots=stores.slots(2), queue_timeout=0.1, retry_after=7, name="api", sink=sink
    )
    inner = Held()
    app = LimiterMiddleware(inner, limiter=limiter, weight=2)
    first, second = FakeClient(), FakeClient()
    async with anyio.create_task_group() as group:
        group.start_soon(app, http_scope(), first.receive, first.send)
        await until(lambda: inner.running == 1)
        assert limiter.in_use == 2
        await app(http_scope(route="/r"), second.receive, second.send)
        assert inner.running == 1  # the rejected request never reached the app
        inner.release.set()
    assert first.status == 200 and limiter.in_use == 0
    assert second.status == 503
    assert second.headers[b"retry-after"] == b"7"
    error = orjson.loads(second.messages[1]["body"])["error"]
    assert error["type"] == "overloaded" and error["retry_after"] == 7
    assert [c[0] for c in sink.calls] == ["waited", "rejected"]
    assert sink.calls[1] == ("rejected", "api", "/r", "", "timeout")
    assert 0.09 < sink.calls[0][4] < 1


async def test_middleware_releases_on_error_and_cancellation(stores: Stores) -> None:
    limiter = Limiter(slots=stores.slots(1))
    inner = Held()
    app = LimiterMiddleware(inner, limiter=limiter)
    client = FakeClient()
    with pytest.raises(RuntimeError):
        await app(http_scope(path="/boom"), client.receive, client.send)
    assert limiter.in_use == 0
    with anyio.move_on_after(0.05):
        await app(http_scope(), client.receive, client.send)
    assert limiter.in_use == 0 and inner.running == 0


async def test_queued_request_keeps_its_body_and_a_leaving_one_its_nothing(
    stores: Stores,
) -> None:
    limiter = Limiter(slots=stores.slots(1), queue_timeout=None)
    inner = Held()
    app = LimiterMiddleware(inner, limiter=limiter)
    holder = FakeClient()
    queued = FakeClient(body=[b"he", b"llo"])
    leaving = FakeClient(body=[b"x"])
    async with anyio.create_task_group() as group:
        group.start_soon(app, http_scope(), holder.receive, holder.send)
        await until(lambda: inner.running == 1)
        group.start_soon(app, http_scope(method="POST"), queued.receive, queued.send)
        await until(lambda: limiter.waiting == 1)
        group.start_soon(app, http_scope(), leaving.receive, leaving.send)
        await until(lambda: limiter.waiting == 2)
        leaving.disconnect()
        await until(lambda: limiter.waiting == 1)
        inner.release.set()
    assert inner.bodies == [b"", b"hello"]
    assert holder.status == queued.status == 200
    assert leaving.messages == []  # nobody to answer
    assert limiter.in_use == 0 and limiter.waiting == 0


def test_weight_by_mode() -> None:
    weight = by_mode(stream=3, batch=1)
    sse = [(b"accept", b"text/event-stream")]
    assert weight(http_scope(headers=sse)) == 3
    assert weight(http_scope()) == 1
    assert weight(http_scope(query_string=b"format=stream")) == 3
    assert weight(http_scope(query_string=b"format=bogus")) == 0
    assert weight(http_scope(**{"asgistream.mode": Mode.STREAM})) == 3
    assert by_mode(stream=3, batch=1, default=Mode.STREAM)(http_scope()) == 3
    # The guess is not stored: the endpoint still negotiates with its own default.
    scope = http_scope()
    weight(scope)
    assert "asgistream.mode" not in scope


async def test_non_http_scopes_pass_through(stores: Stores) -> None:
    seen: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    limiter = Limiter(slots=stores.slots(1), queue_timeout=0)
    await limiter.acquire()
    client = FakeClient()
    await LimiterMiddleware(inner, limiter=limiter)(
        {"type": "lifespan"}, client.receive, client.send
    )
    assert seen == ["lifespan"]


async def test_shutdown_refuses_the_queue_at_once(stores: Stores) -> None:
    limiter = Limiter(slots=stores.slots(1), queue_timeout=None)
    inner = Held()
    app = LimiterMiddleware(inner, limiter=limiter)
    holder, queued = FakeClient(), FakeClient()
    async with anyio.create_task_group() as group:
        group.start_soon(app, http_scope(), holder.receive, holder.send)
        await until(lambda: inner.running == 1)
        group.start_soon(app, http_scope(), queued.receive, queued.send)
        await until(lambda: limiter.waiting == 1)
        limiter.shutdown()
        await until(lambda: len(queued.messages) == 2)
        inner.release.set()
    assert holder.status == 200  # the request that held units finished as usual
    assert queued.status == 503
    assert orjson.loads(queued.messages[1]["body"])["error"]["reason"] == "shutdown"
    await limiter.acquire()  # free units are still granted...
    with pytest.raises(LimiterFull) as full:
        await limiter.acquire()  # ...but nobody waits any more
    assert full.value.reason == "shutdown"
    await limiter.release()
    assert limiter.in_use == 0 and limiter.waiting == 0
