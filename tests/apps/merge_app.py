"""merge() behind a stream, with sources that count how many started and finished."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio

from asgistream import App, HTTPError, Request
from asgistream.patterns.merge import merge
from tests.helpers import Counted

app = App()
stats = {"started": 0, "finished": 0}
counted = Counted(stats)


async def paced(name: str, pace: float, fail_after: int | None) -> AsyncIterator[Any]:
    seq = 0
    while True:
        await anyio.sleep(pace)
        if seq == fail_after:
            raise HTTPError(502, f"{name} failed", type="upstream_failed")
        yield {"source": name, "seq": seq}
        seq += 1


def source(name: str, pace: float, fail_after: int | None) -> AsyncIterator[Any]:
    """An endless source, one item every ``pace`` s, failing after ``fail_after`` items."""
    return counted(paced(name, pace, fail_after))


@app.route("/_stats")
async def get_stats(request: Request) -> dict[str, Any]:
    return dict(stats)


@app.dual("/endless")
async def endless(request: Request) -> AsyncIterator[Any]:
    """Three endless sources; ``?fail=N``: the third fails after N items."""
    fail = request.query.get("fail")
    return merge(
        source("a", 0.01, None),
        source("b", 0.02, None),
        source("c", 0.03, int(fail) if fail else None),
    )
