"""asgistream: every path is one ``@app.dual`` dual-mode endpoint with default options.

``event_app`` serves ``/items`` as the demo does, each item an ``Event`` with its id, to
compare with plain dicts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from asgistream import App, Event, Request, StreamOptions

from . import common

app = App()


@app.dual("/items")
async def items(request: Request) -> AsyncIterator[Any]:
    query = request.query
    return common.items(
        int(query.get("n", common.BATCH_SIZE)), float(query.get("cap", 30)), query.get("run")
    )


@app.dual("/paced")
async def paced(request: Request) -> AsyncIterator[Any]:
    query = request.query
    start = query.get("start")
    return common.paced(
        float(query.get("delay", 0.01)),
        int(query.get("n", -1)),
        None if start is None else float(start),
        float(query.get("cap", 30)),
        query.get("run"),
    )


@app.dual("/idle")
async def idle(request: Request) -> AsyncIterator[Any]:
    return common.idle()


@app.dual("/tokens", stream=StreamOptions(ids=False, done=True))
async def tokens(request: Request) -> AsyncIterator[Any]:
    query = request.query
    return common.tokens(int(query.get("n", 20)), float(query.get("delay", 0.05)))


event_app = App()


def _event(i: int) -> Event:
    return Event(common.item(i), id=i)


@event_app.dual("/items")
async def event_items(request: Request) -> AsyncIterator[Any]:
    query = request.query
    return common.items(
        int(query.get("n", common.BATCH_SIZE)),
        float(query.get("cap", 30)),
        query.get("run"),
        _event,
    )
