"""The demo, as ``make run`` serves it, plus what the tests of every server look at: a counted
producer that blocks after one event (``/_blocked``) and the counts (``/_stats``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio

from asgistream import Request
from examples.demo import app, demo
from tests.helpers import Counted

__all__ = ["app"]

stats = {"started": 0, "finished": 0}
counted = Counted(stats)


@demo.route("/_stats")
async def get_stats(request: Request) -> dict[str, Any]:
    return {**stats, "open_streams": len(request.app.shutdown)}


@demo.dual("/_blocked")
async def blocked(request: Request) -> AsyncIterator[Any]:
    """One event, then waits forever."""

    async def items() -> AsyncIterator[Any]:
        yield {"hello": "world"}
        await anyio.sleep_forever()

    return counted(items())
