"""One process of a deployment whose streams share one limit through Redis.

Environment: ``ASGISTREAM_REDIS_URL`` and ``ASGISTREAM_REDIS_PREFIX`` (every process of the
deployment gives the same), ``LIMIT`` (units in all), ``LEASE`` (seconds), ``QUEUE_TIMEOUT``.

``GET /hold?seconds=S`` is a stream that takes one unit for its whole life: one event, then
it stays open ``S`` seconds (for ever without ``S``). While it holds its unit it counts
itself in Redis (``active``, and the highest count seen, ``peak``), so that a test can check
the limit across every process. ``GET /state`` (not limited) tells this process's view.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import anyio

from asgistream import App, Mode, Request
from asgistream._types import Scope
from asgistream.backends.redis import RedisBackend
from asgistream.backends.redis.slots import RedisSlots
from asgistream.middleware.limiter import Limiter, LimiterMiddleware

backend = RedisBackend(
    os.environ["ASGISTREAM_REDIS_URL"], prefix=os.environ["ASGISTREAM_REDIS_PREFIX"]
)
limit, lease = int(os.environ.get("LIMIT", "3")), float(os.environ.get("LEASE", "10"))
slots = RedisSlots(backend, "streams", limit, lease=lease)
limiter = Limiter(
    slots=slots, queue_timeout=float(os.environ.get("QUEUE_TIMEOUT", "0.5")), name="streams"
)

inner = App(lifespan=backend.lifespan)
inner.shutdown.register(limiter)

# Counts the streams inside their units, and the most at once, in one step.
COUNT = """
local n = redis.call('INCR', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], n)
end
return n
"""


def _weight(scope: Scope) -> int:
    return 1 if scope["path"] == "/hold" else 0


app = LimiterMiddleware(inner, limiter=limiter, weight=_weight)


@inner.dual("/hold", modes=(Mode.STREAM,), default=Mode.STREAM)
async def hold(request: Request) -> AsyncIterator[Any]:
    client = backend.client
    active, peak = backend.key("test", "limit", "active"), backend.key("test", "limit", "peak")
    count = await client.eval(COUNT, 2, active, peak)  # type: ignore[misc]
    try:
        yield {"active": count, "pid": os.getpid()}
        seconds = request.query.get("seconds")
        if seconds is None:
            await anyio.sleep_forever()
        await anyio.sleep(float(seconds))
    finally:
        with anyio.CancelScope(shield=True):
            await client.decr(active)


@inner.route("/state")
async def state(request: Request) -> dict[str, Any]:
    return {"in_use": slots.in_use, "held": slots.held, "waiting": slots.waiting}
