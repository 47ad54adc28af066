"""Endpoints for the client's end-to-end tests: a job with progress, failures on demand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel

from asgistream import App, Event, HTTPError, Request, StreamOptions

app = App()
attempts: dict[str, int] = {}


def _resume_from(request: Request) -> int:
    last = request.last_event_id
    return int(last) + 1 if last and last.isdigit() else 0


@app.dual("/job")
async def job(request: Request) -> AsyncIterator[Event]:
    """``n`` progress events (0 to 1, as asgistream jobs send them), then the result."""
    n = int(request.query.get("n", "4"))
    for i in range(n):
        await anyio.sleep(0.01)
        state = {"status": "running", "progress": i / n, "message": f"step {i + 1} of {n}"}
        yield Event(state, event="progress")
    yield Event({"status": "succeeded", "progress": 1.0, "result": {"steps": n}}, event="result")


@app.dual("/flaky")
async def flaky(request: Request) -> AsyncIterator[Any]:
    """503 with ``Retry-After: after`` for the first ``fail`` requests of ``key``."""
    key = request.query["key"]
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] <= int(request.query.get("fail", "2")):
        raise HTTPError(503, "Warming up", headers={"Retry-After": request.query.get("after", "0")})
    for i in range(3):
        yield {"i": i}


@app.dual("/broken")
async def broken(request: Request) -> AsyncIterator[Any]:
    """Two items, then a failure: an ``error`` event."""
    yield {"i": 0}
    yield {"i": 1}
    await anyio.lowlevel.checkpoint()
    raise HTTPError(409, "The thing changed under us", type="conflict")


@app.dual("/done", stream=StreamOptions(done=True))
async def done(request: Request) -> AsyncIterator[Any]:
    for i in range(3):
        yield {"i": i}


@app.route("/gone")
async def gone(request: Request) -> None:
    """204: a stream that has nothing more, ever."""


async def _slow(request: Request) -> AsyncIterator[Event]:
    n = int(request.query.get("n", "3"))
    gap = float(request.query.get("gap", "0.5"))
    for i in range(_resume_from(request), n):
        await anyio.sleep(gap)
        yield Event({"i": i}, id=i)


app.dual("/slow", stream=StreamOptions(heartbeat=0.1))(_slow)
app.dual("/slow-silent", stream=StreamOptions(heartbeat=None))(_slow)
