"""What the HTTP/2 and non-reading-client tests serve: ``tests/apps/servers_app.py`` (the
demo, ``/_blocked`` and ``/_stats``), plus

- ``/h2.html?n=10``: a page that opens ``n`` ``EventSource`` streams of ``/tick`` at once and
  counts, per stream, the events it got (``window.counts``) and the HTTP version the server
  saw (``window.versions``);
- ``/tick?i=k``: an endless stream, one event every ``TICK`` seconds, each carrying ``i`` and
  ``scope["http_version"]``, its producer counted in ``/_stats``;
- ``/flood?key=K&n=N`` and ``/flood-bounded?key=K``: ``N`` (or endless) events of
  ``FLOOD_EVENT_BYTES`` as fast as the server takes them, the second with
  ``StreamOptions(max_bytes=FLOOD_MAX_BYTES)``; ``/_flood?key=K`` tells how many items the
  producer yielded and whether its ``finally`` has run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio

from asgistream import Mode, Request, StreamOptions
from asgistream.responses import Response
from examples.demo import demo
from tests.apps.servers_app import app, counted

__all__ = ["app"]

TICK = 0.1
"""Seconds between two events of ``/tick``."""

FLOOD_EVENT_BYTES = 16 * 1024
"""Payload bytes of each event of the floods."""

FLOOD_MAX_BYTES = 1024 * 1024
"""The bound of ``/flood-bounded``: far less than a server that buffers would pile up, and
less than the socket buffers hold, so that it is reached with or without backpressure."""

STREAM_ONLY = (Mode.STREAM,)
"""Endless or huge streams have no batch answer."""

floods: dict[str, dict[str, Any]] = {}
"""Per ``key``: ``{"yielded": items, "finished": whether the finally ran}``."""


@demo.route("/h2.html")
async def page(request: Request) -> Response:
    return Response(PAGE.encode(), media_type="text/html; charset=utf-8")


@demo.dual("/tick", default=Mode.STREAM, modes=STREAM_ONLY)
async def tick(request: Request) -> AsyncIterator[Any]:
    """Counted in ``/_stats``, like ``/_blocked``."""
    stream = int(request.query.get("i", "0"))
    version = request.scope["http_version"]

    async def ticks() -> AsyncIterator[Any]:
        while True:
            yield {"i": stream, "http_version": version}
            await anyio.sleep(TICK)

    return counted(ticks())


async def _flood(request: Request) -> AsyncIterator[Any]:
    key = request.query["key"]
    n = int(request.query.get("n", "-1"))
    state = floods[key] = {"yielded": 0, "finished": False}
    payload = "x" * FLOOD_EVENT_BYTES
    try:
        while state["yielded"] != n:
            state["yielded"] += 1
            yield payload
    finally:
        state["finished"] = True


demo.dual("/flood", default=Mode.STREAM, modes=STREAM_ONLY)(_flood)
demo.dual(
    "/flood-bounded",
    default=Mode.STREAM,
    modes=STREAM_ONLY,
    stream=StreamOptions(max_bytes=FLOOD_MAX_BYTES),
)(_flood)


@demo.route("/_flood")
async def flood_state(request: Request) -> dict[str, Any]:
    return floods.get(request.query["key"], {})


PAGE = """<!doctype html>
<meta charset="utf-8">
<title>EventSource streams on one origin</title>
<script>
const n = Number(new URLSearchParams(location.search).get("n") || "10");
window.counts = new Array(n).fill(0);
window.versions = new Array(n).fill(null);
window.sources = [];
for (let i = 0; i < n; i++) {
  const source = new EventSource(`/tick?i=${i}`);
  source.onmessage = (event) => {
    const data = JSON.parse(event.data);
    window.counts[data.i] += 1;
    window.versions[data.i] = data.http_version;
  };
  window.sources.push(source);
}
</script>
"""
