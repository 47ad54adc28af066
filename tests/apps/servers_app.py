"""The demo, as ``make run`` serves it, plus what the tests of every server look at: a counted
producer that blocks after one event (``/_blocked``), the counts (``/_stats``), and a paced
producer that says which process serves it and records its ``finally`` (``/_paced``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import anyio

from asgistream import Request
from examples.demo import app, demo
from tests.helpers import Counted

__all__ = ["FINALLY_LOG", "app"]

FINALLY_LOG = "ASGISTREAM_TEST_FINALLY_LOG"
"""The environment variable naming the file where ``/_paced`` producers record their
``finally`` (one line per producer: its ``tag``), read by the tests once the server is gone."""

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


@demo.dual("/_paced")
async def paced(request: Request) -> AsyncIterator[Any]:
    """``{"pid", "n"}`` every 0.1 s, forever; its ``finally`` appends ``tag`` to the file
    named by ``ASGISTREAM_TEST_FINALLY_LOG``."""
    tag = request.query.get("tag", "")
    log = os.environ[FINALLY_LOG]

    async def items() -> AsyncIterator[Any]:
        try:
            n = 0
            while True:
                yield {"pid": os.getpid(), "n": n}
                n += 1
                await anyio.sleep(0.1)
        finally:
            _record(log, tag)

    return items()


def _record(log: str, tag: str) -> None:
    # One short append per producer: atomic even with several worker processes.
    with open(log, "a") as file:
        file.write(f"{tag}\n")
