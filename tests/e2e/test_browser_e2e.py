"""A real browser's ``EventSource`` against real servers, compared with ``httpx-sse``.

Every event of a stream of hostile payloads must reach the browser exactly as the producer
yielded it, and ``httpx-sse`` must parse the same events. What the SSE format itself cannot
carry is the same in both clients and derived in ``browser_view`` below: CR and CRLF inside
a text payload arrive as LF (the format has no way to tell the three line endings apart), and
bytes that are not UTF-8 arrive as U+FFFD.

One difference between the two clients is inherent to ``httpx-sse`` 0.4 and asserted exactly
in ``split_extras``: it yields an event for every blank line after a block that set only
``retry`` or ``id`` or nothing (the stream's ``retry:`` preamble, and each heartbeat comment
once an id has been seen, because it never resets its last event id), where the browser
dispatches nothing because the data buffer is empty. Those extras have empty data and type
``message``; a consumer of ``httpx-sse`` must skip events whose data is empty.

An event whose payload is the empty string is a ``data:`` line with an empty value: both
clients deliver it, with data ``""``.

Timing (2 cores): about 1 s to launch the browser, 3 s for the parity tests, 9 s for the
resume test (the browser waits its default 3 s before each of its two reconnections) and 4 s
for the demo's page: about 17 s for the module.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import httpx_sse
import orjson
import pytest
from playwright.sync_api import Browser, Page
from playwright.sync_api import Request as BrowserRequest

from asgistream import Event, Request
from examples.page import wants_html
from tests.apps.browser_app import CUSTOM_EVENTS, HOSTILE, RETRY
from tests.browser import blank_page, open_page
from tests.server import Server, free_port, serve

BrowserEvent = dict[str, str]
"""What the page collects of one event: ``{"type", "data", "lastEventId"}``."""


@pytest.fixture(scope="module")
def hostile_server() -> Iterator[Server]:
    with serve("tests.apps.browser_app:app") as server:
        yield server


def browser_events(
    browser: Browser, server: Server, src: str, *, reconnections: int = 0
) -> list[BrowserEvent]:
    """The events ``new EventSource(src)`` dispatches, until the stream's last event."""
    query = urlencode({"src": src, "events": ",".join(CUSTOM_EVENTS)})
    with open_page(browser) as page:
        page.goto(f"{server.url}/parity.html?{query}")
        page.wait_for_function("window.done")
        # Each end of a stream fires an error (not a MessageEvent) before the reconnection.
        opens_failures = page.evaluate("[window.opens, window.failures]")
        assert opens_failures == [1 + reconnections, reconnections]
        received: list[BrowserEvent] = page.evaluate("window.received")
        return received


def httpx_sse_events(server: Server, src: str) -> list[httpx_sse.ServerSentEvent]:
    with (
        httpx.Client(base_url=server.url, timeout=10) as client,
        httpx_sse.connect_sse(client, "GET", src, headers={}) as source,
    ):
        assert source.response.status_code == 200
        return list(source.iter_sse())


def as_browser_event(event: httpx_sse.ServerSentEvent) -> BrowserEvent:
    return {"type": event.event, "data": event.data, "lastEventId": event.id}


def browser_view(items: list[Any]) -> list[BrowserEvent]:
    """What a browser must dispatch for these items, from the SSE rules alone.

    Items without an id get their position as id; an empty id resets the last id.
    """
    expected = []
    last_id = ""
    for position, item in enumerate(items):
        event = item if isinstance(item, Event) else Event(item)
        data = event.data
        if isinstance(data, bytes):
            text = data.decode("utf-8", "replace")
        elif isinstance(data, str):
            text = data
        else:
            text = orjson.dumps(data).decode()
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        last_id = str(position) if event.id is None else str(event.id)
        expected.append({"type": event.event or "message", "data": text, "lastEventId": last_id})
    return expected


def split_extras(
    parsed: list[httpx_sse.ServerSentEvent], dispatched: list[BrowserEvent]
) -> list[httpx_sse.ServerSentEvent]:
    """The events ``httpx-sse`` yields beyond what the browser dispatched, checking that the
    rest are the same events in the same order."""
    extras = []
    remaining = iter(dispatched)
    wanted = next(remaining, None)
    for event in parsed:
        if wanted is not None and as_browser_event(event) == wanted:
            wanted = next(remaining, None)
        else:
            extras.append(event)
    assert wanted is None, f"httpx-sse never yielded {wanted}"
    return extras


# -- parity ------------------------------------------------------------------------------


def test_hostile_events_parse_identically(browser: Browser, hostile_server: Server) -> None:
    dispatched = browser_events(browser, hostile_server, "/hostile")
    assert dispatched == browser_view([*HOSTILE, Event("bye", event="end")])
    assert all(e["type"] != "evil" for e in dispatched)

    parsed = httpx_sse_events(hostile_server, "/hostile")
    extras = split_extras(parsed, dispatched)
    # The known difference, exactly: the retry preamble, then one empty event per heartbeat,
    # carrying the last id, during the two pauses (after the events with ids 2 and 11).
    preamble, heartbeats = extras[0], extras[1:]
    assert (preamble.event, preamble.data, preamble.id) == ("message", "", "")
    assert preamble.retry == RETRY
    assert parsed[0] is preamble
    assert {(e.event, e.data, e.retry) for e in heartbeats} == {("message", "", None)}
    ids = [e.id for e in heartbeats]
    assert ids == sorted(ids, key=int) and set(ids) == {"2", "11"}, ids
    # The retry hints the browser uses but does not expose.
    assert [e.retry for e in parsed if e.retry is not None] == [RETRY, 2500]


@pytest.mark.parametrize("field", ["event", "id"])
def test_a_line_break_in_a_field_cannot_inject(
    browser: Browser, hostile_server: Server, field: str
) -> None:
    src = f"/bad-field?field={field}"
    dispatched = browser_events(browser, hostile_server, src)
    parsed = httpx_sse_events(hostile_server, src)
    assert [as_browser_event(e) for e in parsed] == dispatched
    error = {"error": {"type": "internal_error", "message": "Internal server error"}}
    assert [(e["type"], e["data"]) for e in dispatched] == [
        ("message", "before"),
        ("error", orjson.dumps(error).decode()),
    ]


def test_non_ascii_last_event_id_round_trips(browser: Browser, hostile_server: Server) -> None:
    """The browser sends back the id it was given as UTF-8; the server must read that id.

    Fails while ``Request.last_event_id`` decodes the header as Latin-1.
    """
    sent = "ïd-é ☃"
    src = "/echo-last-id?" + urlencode({"id": sent})
    dispatched = browser_events(browser, hostile_server, src, reconnections=1)
    assert [(e["type"], e["data"]) for e in dispatched] == [("message", "first"), ("end", sent)]
    with httpx.Client(base_url=hostile_server.url, timeout=10) as client:
        headers = {"Last-Event-ID": sent.encode()}
        with httpx_sse.connect_sse(client, "GET", "/echo-last-id", headers=headers) as source:
            assert [e.data for e in source.iter_sse() if e.data] == [sent]


# -- the browser against the demo --------------------------------------------------------

_COLLECT = """([url]) => {
  window.items = [];
  window.errors = [];
  window.source = new EventSource(url);
  window.source.onmessage = (e) => window.items.push([e.lastEventId, JSON.parse(e.data)]);
  window.source.addEventListener("error", (e) => {
    if (e instanceof MessageEvent) window.errors.push(JSON.parse(e.data));
  });
}"""


def _wait(page: Page, condition: str, timeout: float = 15.0) -> None:
    page.wait_for_function(condition, timeout=timeout * 1000)


def test_browser_resumes_with_last_event_id_after_a_clean_end(browser: Browser) -> None:
    """The first server ends the stream cleanly as it shuts down; the browser reconnects to
    a second server on the same port with ``Last-Event-ID: k``, which resumes at k+1; after
    that stream's end it reconnects once more and gets nothing twice."""
    n = 8
    port = free_port()
    sources: list[BrowserRequest] = []

    def record(request: BrowserRequest) -> None:
        if request.resource_type == "eventsource":
            sources.append(request)

    with open_page(browser) as page:
        page.on("request", record)
        with serve("examples.demo:app", port=port) as first:
            blank_page(page, first.url)
            page.evaluate(_COLLECT, [f"/items?n={n}&delay=0.1"])
            _wait(page, "window.items.length >= 3")
            first.stop()
        k = int(page.evaluate("window.items[window.items.length - 1][0]"))
        assert page.evaluate("window.errors") == [
            {"error": {"type": "shutdown", "message": "The server is shutting down"}}
        ]
        with serve("examples.demo:app", port=port):
            _wait(page, f"window.items.length >= {n}")
            # Bounded: the browser waits about 3 s before each reconnection.
            deadline = time.monotonic() + 10
            while len(sources) < 3 and time.monotonic() < deadline:
                page.wait_for_timeout(100)
            assert len(sources) >= 3, "the browser did not reconnect after the complete stream"
            page.wait_for_timeout(300)  # let the third, empty, stream end
            page.evaluate("window.source.close()")
            items = page.evaluate("window.items")
            headers = [request.all_headers() for request in sources[:3]]
            responses = [request.response() for request in sources[:3]]
    assert items == [[str(i), {"id": i, "value": f"item-{i}"}] for i in range(n)]
    assert 3 <= k + 1 < n
    assert [h["accept"] for h in headers] == ["text/event-stream"] * 3
    assert [h.get("last-event-id") for h in headers] == [None, str(k), str(n - 1)]
    for response in responses:
        assert response is not None and response.status == 200
        assert response.headers["content-type"].startswith("text/event-stream")


# -- the demo's page ---------------------------------------------------------------------

N_ITEMS = 12
"""Items the page streams and fetches (``N`` in ``examples/static/index.html``)."""


def _texts(page: Page, selector: str) -> list[str]:
    texts: list[str] = page.locator(selector).all_inner_texts()
    return texts


def _save_screenshot(page: Page, tmp_path: Path) -> Path:
    """Into ``tmp_path``, and into ``$ASGISTREAM_SCREENSHOT_DIR`` when it is set."""
    path = tmp_path / "demo-page.png"
    page.screenshot(path=path, full_page=True)
    extra = os.environ.get("ASGISTREAM_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    return path


def test_demo_page_shows_streams_and_a_batch(browser: Browser, tmp_path: Path) -> None:
    with serve("examples.demo:app") as demo, open_page(browser, height=640) as page:
        page.goto(f"{demo.url}/")
        assert page.title() == "asgistream demo"
        # Chat tokens arrive one by one: part of the reply shows before all of it.
        prompt = page.input_value("#prompt")
        _wait(page, "document.getElementById('reply').textContent.length > 0")
        assert prompt.startswith(page.inner_text("#reply")) and page.inner_text("#reply") != prompt
        # The job's progress bar moves: a state between the first and the last is shown.
        _wait(page, "(v => v > 0 && v < 1)(document.getElementById('job-progress').value)")
        # Streamed: the first item shows while the others are still coming.
        _wait(page, "document.querySelectorAll('#stream-items li').length >= 1")
        assert len(_texts(page, "#stream-items li")) < N_ITEMS
        _wait(page, f"document.querySelectorAll('#stream-items li').length >= {N_ITEMS}")
        expected = [f"item-{i}" for i in range(N_ITEMS)]
        assert _texts(page, "#stream-items li") == expected
        assert page.inner_text("#stream-status") == f"all {N_ITEMS} items, one at a time"
        # Batched: the same items, all at once.
        assert _texts(page, "#batch-items li") == expected
        assert page.inner_text("#batch-status").startswith(f"all {N_ITEMS} items at once")
        _wait(page, "/^seq \\d+$/.test(document.getElementById('ticker').textContent)")
        _wait(page, "document.getElementById('chat-status').textContent.startsWith('done')")
        # The demo's model echoes the prompt, one word (with its leading space) per token.
        assert page.inner_text("#reply") == prompt
        assert page.inner_text("#chat-status") == f"done: {len(prompt.split())} tokens"
        _wait(page, "document.getElementById('job-progress').value === 1")
        _wait(page, "document.getElementById('job-status').textContent.startsWith('succeeded: ')")
        screenshot = _save_screenshot(page, tmp_path)
    assert screenshot.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        ("TEXT/HTML; q=0.5", True),
        ("text/html;q=0, application/json", False),
        ("text/html; q=0.000", False),
        ("*/*", False),
        ("application/json", False),
        ("text/event-stream", False),
        ("", False),
    ],
)
def test_wants_html(accept: str, html: bool) -> None:
    scope = {"type": "http", "headers": [(b"accept", accept.encode())], "query_string": b""}
    assert wants_html(Request(scope, _no_receive)) is html


async def _no_receive() -> dict[str, Any]:
    raise AssertionError("wants_html reads no body")
