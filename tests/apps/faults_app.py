"""An app built to be attacked: counted producers behind a limiter and the metrics middleware.

``FAULTS_CAPACITY`` (default 200) sets the limiter's units; every request but ``/_stats``
takes one. ``/_stats`` tells how many producers started and finished, how many streams are
open, the limiter's state and how many asyncio tasks the server runs.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel

from asgistream import App, HTTPError, Request
from asgistream._types import Scope
from asgistream.middleware.limiter import Limiter, LimiterMiddleware
from asgistream.middleware.metrics import MetricsMiddleware
from asgistream.middleware.prometheus import PrometheusSink
from tests.helpers import Counted

inner = App()
sink = PrometheusSink()
limiter = Limiter(
    int(os.environ.get("FAULTS_CAPACITY", "200")), queue_timeout=30.0, name="faults", sink=sink
)
inner.shutdown.register(limiter)  # the limiter wraps the App, so it cannot register itself
stats = {"started": 0, "finished": 0}
counted = Counted(stats)


class Boom(Exception):
    """Raised by /flaky; its message must never reach a client."""


def _weight(scope: Scope) -> int:
    return 0 if scope["path"] == "/_stats" else 1


app = MetricsMiddleware(LimiterMiddleware(inner, limiter=limiter, weight=_weight), sink=sink)


@inner.route("/_stats")
async def get_stats(request: Request) -> dict[str, Any]:
    return {
        **stats,
        "open_streams": len(inner.shutdown) - 1,  # less the limiter registered there
        "in_use": limiter.in_use,
        "waiting": limiter.waiting,
        "tasks": len(asyncio.all_tasks()),
    }


@inner.dual("/hot")
async def hot(request: Request) -> AsyncIterator[Any]:
    async def items() -> AsyncIterator[Any]:
        payload = "x" * int(request.query.get("size", "16"))
        i = 0
        while True:
            yield {"i": i, "p": payload}
            i += 1

    return counted(items())


@inner.dual("/paced")
async def paced(request: Request) -> AsyncIterator[Any]:
    async def items() -> AsyncIterator[Any]:
        delay = float(request.query.get("delay", "0.01"))
        for i in range(int(request.query.get("n", "1000000"))):
            await anyio.sleep(delay)
            yield {"i": i}

    return counted(items())


@inner.dual("/blocked")
async def blocked(request: Request) -> AsyncIterator[Any]:
    async def items() -> AsyncIterator[Any]:
        yield {"hello": "world"}
        await anyio.sleep_forever()

    return counted(items())


@inner.dual("/flaky")
async def flaky(request: Request) -> AsyncIterator[Any]:
    """Raises after ``seed % 6`` items, with an exception type chosen by the seed."""
    seed = int(request.query["seed"])
    at = seed % 6
    kind = random.Random(seed).choice([Boom, ValueError, KeyError, ZeroDivisionError])

    async def items() -> AsyncIterator[Any]:
        for i in range(at):
            if seed % 2:
                await anyio.lowlevel.checkpoint()
            yield {"i": i}
        raise kind(f"secret {seed}")

    return counted(items())


@inner.dual("/upload", methods=("POST",))
async def upload(request: Request) -> AsyncIterator[Any]:
    """Streams back the items of a JSON list body (read before the first event)."""
    stats["started"] += 1
    try:
        body = await request.json()
    finally:
        stats["finished"] += 1
    if not isinstance(body, list):
        raise HTTPError(400, "a JSON list please", type="invalid_body")
    for item in body:
        yield item
