"""An instrumented app for end-to-end tests: every producer counts its finally blocks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio

from asgistream import (
    App,
    BatchOptions,
    Event,
    HTTPError,
    Mode,
    Request,
    StreamOptions,
    joined_text,
    last_item,
)
from tests.helpers import Counted

app = App()
stats = {"started": 0, "finished": 0}
counted = Counted(stats)


@app.route("/_stats")
async def get_stats(request: Request) -> dict[str, Any]:
    return {**stats, "open_streams": len(request.app.shutdown)}


@app.dual("/hot")
async def hot(request: Request) -> AsyncIterator[Any]:
    """Never waits: yields as fast as it can, forever (stream) or ``n`` times."""

    async def items() -> AsyncIterator[Any]:
        n = int(request.query.get("n", "-1"))
        size = int(request.query.get("size", "16"))
        payload = "x" * size
        i = 0
        while i != n:
            yield {"i": i, "p": payload}
            i += 1

    return counted(items())


@app.dual("/paced")
async def paced(request: Request) -> AsyncIterator[Any]:
    async def items() -> AsyncIterator[Any]:
        delay = float(request.query.get("delay", "0.01"))
        n = int(request.query.get("n", "-1"))
        i = 0
        while i != n:
            await anyio.sleep(delay)
            yield {"i": i}
            i += 1

    return counted(items())


@app.dual("/blocked")
async def blocked(request: Request) -> AsyncIterator[Any]:
    """One event, then waits forever."""

    async def items() -> AsyncIterator[Any]:
        yield {"hello": "world"}
        await anyio.sleep_forever()

    return counted(items())


@app.dual("/silent", stream=StreamOptions(heartbeat=0.2))
async def silent(request: Request) -> AsyncIterator[Any]:
    async def items() -> AsyncIterator[Any]:
        await anyio.sleep(float(request.query.get("wait", "0.7")))
        yield "late"

    return counted(items())


@app.dual("/stall", stream=StreamOptions(idle_timeout=0.3))
async def stall(request: Request) -> AsyncIterator[Any]:
    async def items() -> AsyncIterator[Any]:
        yield 1
        await anyio.sleep(10)
        yield 2

    return counted(items())


@app.dual("/fail")
async def fail(request: Request) -> AsyncIterator[Any]:
    """``?at=N``: raise after N items; ``?kind=http`` raises a 409 HTTPError instead."""
    at = int(request.query.get("at", "0"))
    kind = request.query.get("kind", "runtime")
    for i in range(at):
        await anyio.sleep(0.001)
        yield {"i": i}
    if kind == "http":
        raise HTTPError(409, "conflict on purpose", detail={"hint": "none"})
    raise RuntimeError("secret internal detail")


@app.dual("/hostile")
async def hostile(request: Request) -> AsyncIterator[Any]:
    yield "a\r\nb\rc\nd"
    yield "x\n\nevent: evil\ndata: injected"
    yield Event("typed", event="custom", id="abc")
    yield {"nested": "new\nline", "unicode": "✓"}
    yield b"raw\nbytes"
    yield ""


@app.dual("/bad-id")
async def bad_id(request: Request) -> AsyncIterator[Any]:
    yield Event("ok")
    yield Event("bad", id="evil\nid")


@app.dual("/tokens", batch=BatchOptions(reduce=joined_text()))
async def tokens(request: Request) -> AsyncIterator[str]:
    for word in ("Hello", ", ", "world", "!"):
        yield word


@app.dual("/last", batch=BatchOptions(reduce=last_item()))
async def last(request: Request) -> AsyncIterator[dict[str, int]]:
    for i in range(5):
        yield {"progress": i}


@app.dual("/limited", batch=BatchOptions(max_items=10, max_bytes=2000, timeout=0.5))
async def limited(request: Request) -> AsyncIterator[Any]:
    n = int(request.query.get("n", "5"))
    size = int(request.query.get("size", "1"))
    delay = float(request.query.get("delay", "0"))
    for _i in range(n):
        if delay:
            await anyio.sleep(delay)
        yield "y" * size


@app.dual(
    "/stream-only",
    modes=(Mode.STREAM,),
    default=Mode.STREAM,
    stream=StreamOptions(done=True, ids=False),
)
async def stream_only(request: Request) -> AsyncIterator[int]:
    for i in range(3):
        yield i


@app.route("/echo/{name}", methods=["POST"])
async def echo(request: Request) -> dict[str, Any]:
    return {
        "name": request.path_params["name"],
        "json": await request.json(),
        "agent": request.headers.get("X-Agent"),
        "q": request.query.getlist("q"),
    }


@app.on_startup
async def started(app: App) -> None:
    app.state["greeting"] = "hi"


@app.route("/state")
async def state(request: Request) -> dict[str, Any]:
    return {"greeting": request.state.get("greeting")}


@app.dual("/upload", methods=["POST"], default=Mode.STREAM)
async def upload(request: Request) -> AsyncIterator[Any]:
    """Reads its JSON body inside the generator, after the stream's watcher has started."""
    await anyio.sleep(0.01)  # the disconnect watcher is first in line on receive() by now
    body = await request.json()
    for word in body["words"]:
        yield word


@app.dual("/stalled", methods=["POST"], default=Mode.STREAM, body_timeout=0.5)
async def stalled(request: Request) -> AsyncIterator[Any]:
    yield await request.json()
