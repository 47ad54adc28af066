"""Streams of hostile events, and a page that reads them with a browser's ``EventSource``.

``/parity.html?src=URL&events=a,b`` opens ``new EventSource(URL)``, listens for ``message``,
``error`` and every name in ``events``, and collects ``{type, data, lastEventId}`` of each
event into ``window.received``. It closes the source after an event named ``end`` or an
``error`` event that carries data (the stream's own error event), then sets ``window.done``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio

from asgistream import App, Event, Mode, Request, StreamOptions
from asgistream.responses import Response

app = App()

HEARTBEAT = 0.05
"""Seconds of silence before a heartbeat comment: short, so the stream interleaves some."""

RETRY = 1500
"""The ``retry:`` hint the hostile stream opens with, in milliseconds."""

HOSTILE: list[Any] = [
    "plain",
    "crlf\r\nthen cr\ronly lf\nend",
    "x\n\nevent: evil\ndata: injected",
    "data: x",
    "id: 99\nretry: 1\nevent: evil",
    "unicode é ☃ 𝄞, line separator \u2028, paragraph separator \u2029, NEL \u0085",
    "nul\x00inside",
    "   three leading spaces",
    " ",
    "",
    "\n",
    "\r\n\r\n",
    "trailing newline\n",
    ":not a comment",
    "tab\there",
    "\ufeffbyte order mark",
    b"invalid utf-8 \xff\xfe end",
    {"json": "with\nnewline", "cr": "\r", "quote": '"', "sep": "\u2028", "nul": "\x00"},
    [1, "two", None, True, 2.5],
    Event("named", event="custom-name"),
    Event("explicit message", event="message"),
    Event("named with id", event="update", id="abc-1"),
    Event("unicode id", id="ïd-é ☃"),
    Event("empty id resets the last id", id=""),
    Event({"k": 1}, event="json-event", comment="a comment\nover two lines"),
    Event("with a retry hint", retry=2500),
    Event("ünïcode event name", event="ünïcode"),
]
"""Items for the hostile stream, in order; the stream pauses for heartbeats in the middle."""

CUSTOM_EVENTS = ["custom-name", "update", "json-event", "ünïcode", "evil", "end"]
"""Every event name the page listens for besides ``message`` and ``error``."""


@app.route("/parity.html")
async def parity_page(request: Request) -> Response:
    return Response(PAGE.encode(), media_type="text/html; charset=utf-8")


@app.dual("/hostile", default=Mode.STREAM, stream=StreamOptions(heartbeat=HEARTBEAT, retry=RETRY))
async def hostile(request: Request) -> AsyncIterator[Any]:
    for position, item in enumerate(HOSTILE):
        if position in (3, 12):
            # Silence longer than the heartbeat interval: heartbeats go out between events.
            await anyio.sleep(HEARTBEAT * 5)
        yield item
    yield Event("bye", event="end")


@app.dual("/bad-field", default=Mode.STREAM)
async def bad_field(request: Request) -> AsyncIterator[Any]:
    """One good event, then one whose ``event`` or ``id`` holds a line break (refused)."""
    hostile = "x\nevent: evil"
    yield "before"
    if request.query.get("field") == "id":
        yield Event("after", id=hostile)
    else:
        yield Event("after", event=hostile)


@app.dual("/echo-last-id", default=Mode.STREAM, stream=StreamOptions(retry=50))
async def echo_last_id(request: Request) -> AsyncIterator[Any]:
    """First a non-ASCII id; on the reconnection, the ``Last-Event-ID`` the server read."""
    last = request.last_event_id
    if last is None:
        yield Event("first", id=request.query.get("id", "ïd-é ☃"))
    else:
        yield Event(last, event="end")


PAGE = """<!doctype html>
<meta charset="utf-8">
<title>EventSource parity</title>
<script>
const params = new URLSearchParams(location.search);
const names = (params.get("events") || "").split(",").filter(Boolean);
window.received = [];
window.opens = 0;
window.failures = 0;
window.done = false;
const source = new EventSource(params.get("src"));
source.onopen = () => { window.opens += 1; };
function record(event) {
  if (!(event instanceof MessageEvent)) {
    window.failures += 1;  // a connection error, not an event the stream sent
    return;
  }
  window.received.push({type: event.type, data: event.data, lastEventId: event.lastEventId});
  if (event.type === "end" || event.type === "error") {
    source.close();
    window.done = true;
  }
}
for (const name of ["message", "error", ...names]) source.addEventListener(name, record);
</script>
"""
