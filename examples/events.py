"""Resumable topics and a live broadcast, both with typed events.

    uvicorn examples.events:app --port 8000
    curl -N 'http://127.0.0.1:8000/events/news'              # new events, live
    curl -X POST 'http://127.0.0.1:8000/events/news' -d '{"event": "headline", "data": "hi"}'
    curl -N -H 'Last-Event-ID: 0' 'http://127.0.0.1:8000/events/news'   # all retained, then live
    curl -H 'Accept: application/json' 'http://127.0.0.1:8000/events/news?after=0'
    curl -N 'http://127.0.0.1:8000/broadcast?policy=drop_oldest&queue=50'
    curl -X POST 'http://127.0.0.1:8000/broadcast' -d '{"event": "typing", "data": "ann"}'

``/events/{topic}`` keeps the last 1000 events of each topic. A publish answers the ids of
its events as the stream names them (``N`` in memory, ``EPOCH:N`` on Redis, where a lost
history starts a new epoch). Events carry ids; a client
that reconnects with ``Last-Event-ID`` (browsers do it by themselves) gets exactly the events
it missed, then live ones. The header wins over ``?after=ID``, which lets a first connection
ask for the retained history (``?after=0``). An id that is no longer retained, or unknown (as
after a restart), gets an ``event: reset`` naming the oldest retained id, then the stream
goes on from there. A ``Last-Event-ID`` this stream could not have sent is a 400.

``/broadcast`` is live only: each subscriber has a bounded queue; when it is full,
``policy=drop_oldest`` drops the oldest and later sends ``event: dropped`` with the count,
``policy=disconnect`` ends that subscriber's stream with an ``error`` event. The publisher
never waits for anyone.

A published event is ``{"data": ..., "event": "name"}`` (``event`` optional), or a list of
them; each event's JSON may be at most 64 KiB.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from asgistream import App, Event, HTTPError, Mode, Request, StreamOptions
from asgistream.backends.memory import MemoryEventLog
from asgistream.patterns.eventlog import EventLog, parse_position, resume
from asgistream.patterns.fanout import Broker, FanoutBackend, Overflow

LOG = "examples.events.log"
BROKER = "examples.events.broker"

MAX_EVENT_BYTES = 64 * 1024
"""The largest event this example accepts, so that a topic's memory stays bounded."""

STREAM = StreamOptions(retry=1000, send_timeout=10.0)
"""Browsers wait a second before they reconnect; a write may block for ten seconds on a
client that reads nothing before that client is cut off."""


def install(app: App, *, log: EventLog | None = None, fanout: FanoutBackend | None = None) -> None:
    """Add the topic and broadcast routes to ``app``.

    ``log`` keeps the topics and ``fanout`` carries the broadcasts; by default both live in
    this process (the demo passes Redis stores when ``ASGISTREAM_REDIS_URL`` is set).
    """

    @app.on_startup
    async def start_events(app: App) -> None:
        app.state[LOG] = log or MemoryEventLog(capacity=1000, max_topics=1000)
        broker = Broker(fanout, queue_size=100, overflow=Overflow.DROP_OLDEST)
        await broker.open()
        app.state[BROKER] = broker

    @app.on_shutdown
    async def stop_events(app: App) -> None:
        await app.state[BROKER].aclose()

    @app.route("/events/{topic}", methods=["POST"])
    async def publish(request: Request) -> dict[str, Any]:
        log: EventLog = _state(request, LOG)
        ids = [
            (await log.append(request.path_params["topic"], data, event=event)).sse_id
            for data, event in await _events(request)
        ]
        return {"ids": ids}

    @app.dual("/events/{topic}", default=Mode.STREAM, stream=STREAM)
    async def subscribe(request: Request) -> AsyncIterator[Any]:
        log: EventLog = _state(request, LOG)
        last = request.last_event_id
        if not last:
            last = request.query.get("after")
        after = parse_position(last)
        topic = request.path_params["topic"]
        if request.mode is Mode.BATCH:
            # The retained events after ``after``, with their ids, at once.
            return _as_records(resume(log, topic, after, follow=False))
        return resume(log, topic, after)

    @app.route("/broadcast", methods=["POST"])
    async def broadcast(request: Request) -> dict[str, Any]:
        broker: Broker = _state(request, BROKER)
        for data, event in await _events(request):
            await broker.publish(Event(data, event=event))
        return {"subscribers": len(broker)}  # on this process

    @app.route("/broadcast/stats")
    async def stats(request: Request) -> dict[str, Any]:
        return {"subscribers": len(_state(request, BROKER))}

    @app.dual("/broadcast", modes=(Mode.STREAM,), default=Mode.STREAM, stream=STREAM)
    async def listen(request: Request) -> AsyncIterator[Any]:
        broker: Broker = _state(request, BROKER)
        policy = request.query.get("policy", "drop_oldest")
        if policy not in tuple(Overflow):
            raise HTTPError(
                400,
                f"policy must be one of {', '.join(Overflow)}",
                type="invalid_parameter",
                detail={"param": "policy"},
            )
        queue = request.query.get("queue", "100")
        if not (queue.isdigit() and 1 <= int(queue) <= 10_000):
            raise HTTPError(
                400,
                "queue must be from 1 to 10000",
                type="invalid_parameter",
                detail={"param": "queue"},
            )
        subscription = broker.subscribe(queue_size=int(queue), overflow=policy)
        return _relay(subscription)


async def _relay(subscription: Any) -> AsyncIterator[Any]:
    async with subscription:
        async for item in subscription:
            yield item


async def _as_records(events: AsyncIterator[Event]) -> AsyncIterator[dict[str, Any]]:
    async for event in events:
        yield {"id": event.id, "event": event.event, "data": event.data}


async def _events(request: Request) -> list[tuple[Any, str | None]]:
    """The events of a publish request's body, checked."""
    body = await request.json()
    items = body if isinstance(body, list) else [body]
    events = []
    for item in items:
        if not isinstance(item, dict) or "data" not in item:
            raise HTTPError(
                400, 'Each event is an object with "data" and maybe "event"', type="invalid_event"
            )
        name = item.get("event")
        if name is not None and (
            not isinstance(name, str) or not name or any(c in name for c in "\r\n\x00")
        ):
            raise HTTPError(
                400, "event must be a non-empty name without CR, LF or NUL", type="invalid_event"
            )
        if len(orjson.dumps(item["data"])) > MAX_EVENT_BYTES:
            raise HTTPError(
                413, f"An event may have at most {MAX_EVENT_BYTES} bytes of data", type="too_large"
            )
        events.append((item["data"], name))
    return events


def _state(request: Request, key: str) -> Any:
    return request.app.state[key]


app = App()
install(app)
