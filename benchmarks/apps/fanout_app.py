"""The demo's broadcast, for the fan-out benchmark: in memory (one process), or on Redis when
``BENCH_REDIS_URL`` is set (any number of processes, each a broker on the same channel).

``GET /broadcast`` subscribes (its first event, ``ready``, says the subscription exists);
``POST /broadcast`` publishes its JSON body to every subscriber of every process. Queues,
policy and stream options are the demo's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from asgistream import App, Event, Mode, Request, StreamOptions
from asgistream.patterns.fanout import Broker, FanoutBackend, Overflow, Subscription

REDIS_URL_ENV = "BENCH_REDIS_URL"
"""Environment variable with the Redis URL; unset: the in-memory broker."""

BROKER = "bench.broker"
STREAM = StreamOptions(retry=1000, send_timeout=10.0)


@contextlib.asynccontextmanager
async def lifespan(app: App) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        fanout: FanoutBackend | None = None
        url = os.environ.get(REDIS_URL_ENV)
        if url:
            from asgistream.backends.redis import RedisBackend
            from asgistream.backends.redis.fanout import RedisFanout

            backend = await stack.enter_async_context(RedisBackend(url, prefix="bench"))
            fanout = RedisFanout(backend, "broadcast")
        broker = Broker(fanout, queue_size=100, overflow=Overflow.DROP_OLDEST)
        app.state[BROKER] = await stack.enter_async_context(broker)
        yield


app = App(lifespan=lifespan)


@app.route("/broadcast", methods=["POST"])
async def publish(request: Request) -> dict[str, Any]:
    broker: Broker = request.app.state[BROKER]
    await broker.publish(await request.json())
    return {"subscribers": len(broker)}


@app.dual("/broadcast", modes=(Mode.STREAM,), default=Mode.STREAM, stream=STREAM)
async def listen(request: Request) -> AsyncIterator[Any]:
    broker: Broker = request.app.state[BROKER]
    return _relay(broker.subscribe())


async def _relay(subscription: Subscription) -> AsyncIterator[Any]:
    async with subscription:
        yield Event("", event="ready")
        async for item in subscription:
            yield item
