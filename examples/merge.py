"""Several async sources merged into one stream, as their items arrive.

    uvicorn examples.merge:app --port 8000
    curl -N 'http://127.0.0.1:8000/merge?n=5'                    # typed events from 3 sources
    curl 'http://127.0.0.1:8000/merge?n=3'                       # all of them, as one JSON body
    curl -N 'http://127.0.0.1:8000/merge?n=5&fail=prices'        # one source fails: error event

Each source is an async generator with its own pace; :func:`asgistream.patterns.merge.merge` runs
them in one task group. When the client leaves, or one source fails, every source is
cancelled and cleans up; a failure ends the stream with an ``error`` event (a 502 in batch).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import anyio

from asgistream import App, Event, HTTPError, Request
from asgistream.patterns.merge import merge

SOURCES = {"clock": 0.1, "prices": 0.15, "news": 0.25}
"""Each demo source and the seconds between its items."""


def install(app: App) -> None:
    """Add ``/merge`` to ``app``."""

    @app.dual("/merge")
    async def merged(request: Request) -> AsyncIterator[Any]:
        raw = request.query.get("n", "5")
        if not (raw.isdigit() and 1 <= int(raw) <= 1000):
            raise HTTPError(400, "n must be from 1 to 1000", type="invalid_parameter")
        fail = request.query.get("fail")
        if fail is not None and fail not in SOURCES:
            raise HTTPError(
                400, f"fail must be one of {', '.join(SOURCES)}", type="invalid_parameter"
            )
        n = int(raw)
        return merge(*(_source(name, pace, n, name == fail) for name, pace in SOURCES.items()))


async def _source(name: str, pace: float, n: int, fail: bool) -> AsyncIterator[Event]:
    value = 100.0
    for seq in range(n):
        await anyio.sleep(pace)
        if fail and seq == n // 2:
            raise HTTPError(502, f"{name} lost its upstream", type="upstream_failed")
        value += random.uniform(-1, 1)
        yield Event({"source": name, "seq": seq, "value": round(value, 2)}, event=name)


app = App()
install(app)
