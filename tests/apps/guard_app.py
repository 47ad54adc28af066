"""The limiter and metrics as a deployer wires them: a whole-app limiter weighted by mode,
a tighter limiter around one endpoint, Prometheus metrics at ``/metrics``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio

from asgistream import App, DualEndpoint, Request
from asgistream._types import Scope
from asgistream.middleware.limiter import Limiter, LimiterMiddleware, by_mode
from asgistream.middleware.metrics import MetricsMiddleware
from asgistream.middleware.prometheus import PrometheusSink
from asgistream.patterns.eventlog import parse_last_event_id

inner = App()
sink = PrometheusSink()
limiter = Limiter(4, queue_timeout=0.5, retry_after=2, name="app", sink=sink)
inner.shutdown.register(limiter)


def _weight(scope: Scope) -> int:
    return 0 if scope["path"] == "/_limits" else by_mode(stream=2, batch=1)(scope)


app = MetricsMiddleware(LimiterMiddleware(inner, limiter=limiter, weight=_weight), sink=sink)


@inner.route("/_limits")
async def limits(request: Request) -> dict[str, Any]:
    return {
        "app": {"in_use": limiter.in_use, "waiting": limiter.waiting},
        "report": {"in_use": report_limiter.in_use, "waiting": report_limiter.waiting},
    }


@inner.dual("/items")
async def items(request: Request) -> AsyncIterator[Any]:
    """``n`` items, ``delay`` seconds apart; resumes after a numeric ``Last-Event-ID``."""
    last = parse_last_event_id(request.last_event_id)
    start = 0 if last is None else last + 1
    n = min(int(request.query.get("n", "3")) if request.query.get("n", "").isdigit() else 3, 50)
    delay = 0.05 if request.query.get("slow") == "1" else 0.0
    for i in range(start, n):
        if delay:
            await anyio.sleep(delay)
        yield {"i": i}


@inner.dual("/hold")
async def hold(request: Request) -> AsyncIterator[Any]:
    yield "held"
    await anyio.sleep_forever()


@inner.route("/echo", methods=["POST"])
async def echo(request: Request) -> dict[str, Any]:
    return {"json": await request.json()}


async def _report(request: Request) -> AsyncIterator[Any]:
    yield "report"
    await anyio.sleep(float(request.query.get("hold", "0")))


# One expensive endpoint behind its own limiter of one unit that never queues.
report_limiter = Limiter(1, queue_timeout=0, retry_after=5, name="report", sink=sink)
inner.router.add_route(
    "/report", LimiterMiddleware(DualEndpoint(_report), limiter=report_limiter), ("GET",)
)
