"""The events example, plus what a browser test needs: a page and a stream that ends early.

``/cut/{topic}?max=N`` is ``/events/{topic}`` ending after N events, with a short ``retry``,
so that the browser's ``EventSource`` reconnects by itself with ``Last-Event-ID``.
``/page?topic=T&max=N`` opens an ``EventSource`` on it and collects what arrives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from asgistream import App, Mode, Request, StreamOptions
from asgistream.patterns.eventlog import parse_position, resume
from asgistream.responses import Response
from examples import events

app = App()
events.install(app)

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>resume</title>
<script>
const params = new URLSearchParams(location.search);
window.got = [];
window.opens = 0;
const source = new EventSource(
  "/cut/" + params.get("topic") + "?after=0&max=" + params.get("max"));
source.onopen = () => { window.opens += 1; };
for (const name of ["message", "alert", "reset"]) {
  source.addEventListener(name, (e) => {
    window.got.push({type: e.type, id: e.lastEventId, data: e.data});
  });
}
</script>
"""


@app.route("/page")
async def page(request: Request) -> Response:
    return Response(PAGE.encode(), media_type="text/html; charset=utf-8")


@app.dual("/cut/{topic}", modes=(Mode.STREAM,), default=Mode.STREAM, stream=StreamOptions(retry=50))
async def cut(request: Request) -> AsyncIterator[Any]:
    log = request.app.state[events.LOG]
    after = parse_position(request.last_event_id or request.query.get("after"))
    limit = int(request.query.get("max", "3"))

    async def limited() -> AsyncIterator[Any]:
        count = 0
        async for event in resume(log, request.path_params["topic"], after):
            yield event
            count += 1
            if count == limit:
                return

    return limited()
