"""The demo app: ``make run`` serves it on 127.0.0.1:8000.

curl -H 'Accept: application/json' 'http://127.0.0.1:8000/items?n=3'
curl -N -H 'Accept: text/event-stream' 'http://127.0.0.1:8000/items?n=3&delay=0.5'
curl -N 'http://127.0.0.1:8000/ticker?interval=1'
curl 'http://127.0.0.1:8000/metrics'

It serves ``/items`` and ``/ticker``, mounts every example of ``examples/README.md`` and
puts the metrics middleware in front of them all (Prometheus text at ``/metrics``).

With ``ASGISTREAM_REDIS_URL`` set (``redis://127.0.0.1:6379/0``), topics, broadcasts and
jobs live in Redis, under the key prefix ``ASGISTREAM_REDIS_PREFIX`` (default
``asgistream``), so that any number of demo processes answer as one service
(``make cluster`` runs two); without it, they live in this process's memory.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import anyio

from asgistream import App, Event, HTTPError, JSONResponse, Mode, Request
from asgistream.backends.redis import (
    RedisBackend,
    RedisEventLog,
    RedisFanout,
    RedisJobStore,
    RedisSlots,
)
from asgistream.backends.redis.connection import DEFAULT_PREFIX
from asgistream.middleware.metrics import MetricsMiddleware
from asgistream.middleware.prometheus import PrometheusSink
from asgistream.patterns.eventlog import parse_last_event_id
from asgistream.patterns.proxy import Upstream
from asgistream.responses import Response
from examples import chat, events, jobs, merge, page, proxy

REDIS_URL = os.environ.get("ASGISTREAM_REDIS_URL", "")
"""Where the shared stores live; empty: in this process."""

redis = (
    RedisBackend(REDIS_URL, prefix=os.environ.get("ASGISTREAM_REDIS_PREFIX", DEFAULT_PREFIX))
    if REDIS_URL
    else None
)
demo = App(lifespan=redis.lifespan if redis is not None else None)


def _number(request: Request, name: str, default: float | None, *, low: float, high: float) -> Any:
    """A numeric query parameter within [low, high], or a 400 that says what is wrong."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw) if isinstance(default, float) or default is None else int(raw)
    except ValueError:
        raise HTTPError(
            400,
            f"?{name} must be a number, not {raw!r}",
            type="invalid_parameter",
            detail={"param": name},
        ) from None
    if not low <= value <= high:
        raise HTTPError(
            400,
            f"?{name} must be between {low} and {high}",
            type="invalid_parameter",
            detail={"param": name},
        )
    return value


def _resume_from(request: Request) -> int:
    """The position after the ``Last-Event-ID`` a reconnecting client sends (0 if none)."""
    last = parse_last_event_id(request.last_event_id)  # 400 unless a non-negative integer
    return 0 if last is None else last + 1


@demo.route("/")
async def index(request: Request) -> Response:
    """The page for browsers; for everyone else, a JSON list of what the demo serves."""
    if page.wants_html(request):
        return page.page_response()
    return JSONResponse(
        {
            "name": "asgistream demo",
            "endpoints": [
                "/items?n=N&delay=SECONDS",
                "/ticker?interval=SECONDS&n=N",
                "POST /v1/chat/completions",
                "POST /v1/proxy/chat/completions",
                "POST /jobs, GET /jobs/{id}",
                "GET|POST /events/{topic}",
                "/merge",
                "/page",
                "/metrics",
            ],
        },
        headers={"vary": "Accept"},
    )


@demo.dual("/items")
async def items(request: Request) -> AsyncIterator[Event]:
    """``n`` items (default 10); ids are positions, so ``Last-Event-ID: k`` resumes at k+1."""
    n = _number(request, "n", 10, low=0, high=1_000_000)
    delay = _number(request, "delay", 0.0, low=0.0, high=60.0)
    for i in range(_resume_from(request), n):
        if delay:
            await anyio.sleep(delay)
        yield Event({"id": i, "value": f"item-{i}"}, id=i)


@demo.dual("/ticker")
async def ticker(request: Request) -> AsyncIterator[dict[str, int]]:
    """``{"seq": i}`` every ``interval`` seconds; endless without ``n`` (stream mode only)."""
    interval = _number(request, "interval", 1.0, low=0.0, high=3600.0)
    n = _number(request, "n", None, low=0, high=1_000_000)
    if n is None and request.mode is Mode.BATCH:
        raise HTTPError(
            400,
            "An endless ticker has no batch answer: give ?n=N or ask for a "
            "stream (?format=stream or Accept: text/event-stream)",
            type="endless_stream",
        )
    seq = 0
    while n is None or seq < n:
        if seq:
            await anyio.sleep(interval)
        yield {"seq": seq}
        seq += 1


# -- the examples (examples/README.md lists them), then the metrics in front of it all -------

chat.install(demo)  # POST /v1/chat/completions, answered by the mock model
# POST /v1/proxy/chat/completions, to $ASGISTREAM_UPSTREAM (default: itself); on Redis, its
# limit of streams at once holds for every process together
proxy.install(
    demo,
    Upstream(proxy.upstream_url(), slots=RedisSlots(redis, "upstream", 64)) if redis else None,
)
# POST /jobs, GET|DELETE /jobs/{id}; GET|POST /events/{topic}, /broadcast: on Redis if set
if redis is not None:
    jobs.install(demo, store=RedisJobStore(redis))
    events.install(demo, log=RedisEventLog(redis), fanout=RedisFanout(redis, "broadcast"))
else:
    jobs.install(demo)
    events.install(demo)
merge.install(demo)  # /merge
page.install(demo)  # /page

sink = PrometheusSink()
app = MetricsMiddleware(demo, sink=sink)
"""What ``make run`` serves: the demo, observed by the metrics middleware, which also answers
``/metrics``."""
