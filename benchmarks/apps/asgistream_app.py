"""asgistream: every path is one ``@app.dual`` dual-mode endpoint with default options."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from asgistream import App, Request, StreamOptions

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
    return common.paced(
        float(query.get("delay", 0.01)), float(query.get("cap", 30)), query.get("run")
    )


@app.dual("/idle")
async def idle(request: Request) -> AsyncIterator[Any]:
    return common.idle()


@app.dual("/tokens", stream=StreamOptions(ids=False, done=True))
async def tokens(request: Request) -> AsyncIterator[Any]:
    query = request.query
    return common.tokens(int(query.get("n", 20)), float(query.get("delay", 0.05)))
