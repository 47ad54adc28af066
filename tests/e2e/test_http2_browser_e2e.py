"""HTTP/2 as users meet it: Chromium, TLS with a test CA, and a page of many streams.

Over HTTP/1.1 a browser opens at most 6 connections per origin, and an ``EventSource``
holds one for as long as it lives: a page with more streams than that stalls. Over HTTP/2
they share one connection. ``/h2.html`` (``tests/apps/h2_app.py``) opens 10 streams at once;
hypercorn and granian serve it over TLS with HTTP/2, and all 10 receive; uvicorn serves it
over TLS with HTTP/1.1, and exactly 6 do.

The browser trusts the test certificate by its public key
(``--ignore-certificate-errors-spki-list``): certificate errors for that key alone are
ignored; any other certificate is still verified. The same servers answer httpx over
HTTP/2, verifying against the test CA: both modes, a client that leaves stops its producer,
and the endpoints that need the start-up.

Timing (2 cores): about 1 s to launch the browser, 1.5 s per HTTP/2 server, 2.5 s for the
HTTP/1.1 page: about 7 s for the module.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.browser import chromium, open_page
from tests.helpers import wait_for
from tests.tls import Certificates, RunningTls, certificates, serve_tls

APP = "tests.apps.h2_app:app"
STREAMS = 10
"""Concurrent ``EventSource`` streams the page opens."""
HTTP1_CONNECTIONS = 6
"""Chromium's limit of connections per origin over HTTP/1.1."""
STALL_WAIT = 1.0
"""Seconds the 7th stream is watched for events once the first 6 have some (10 ticks)."""
SSE = {"Accept": "text/event-stream"}
JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def browser(certs: Certificates) -> Iterator[Browser]:
    """Chromium that accepts the test certificate by its key, and only that one."""
    with chromium(args=(f"--ignore-certificate-errors-spki-list={certs.spki_sha256}",)) as b:
        yield b


@pytest.fixture(scope="module", params=["hypercorn", "granian"])
def h2_server(request: pytest.FixtureRequest, certs: Certificates) -> Iterator[RunningTls]:
    with serve_tls(request.param, APP, certs) as server:
        yield server


@pytest.fixture
def h2_client(h2_server: RunningTls, certs: Certificates) -> Iterator[httpx.Client]:
    """HTTP/2 only (ALPN), verifying the server against the test CA."""
    verify = certs.client_context()
    with httpx.Client(
        base_url=h2_server.url, verify=verify, http1=False, http2=True, timeout=10
    ) as client:
        yield client


@dataclass
class Seen:
    """What the page saw: each stream's event count and the HTTP version the server reported
    for it, and the protocol the page itself came over."""

    counts: list[int]
    versions: list[str]
    protocol: str
    page: Page
    """The page, still open: ``close_streams(page)`` ends its streams."""


@contextlib.contextmanager
def streams_page(browser: Browser, url: str, condition: str) -> Iterator[Seen]:
    """Open ``url``, wait for ``condition``, then ``STALL_WAIT`` seconds more, and tell what
    the page saw; the page closes when the block ends."""
    with open_page(browser) as page:
        page.goto(url)
        page.wait_for_function(condition)
        page.wait_for_timeout(STALL_WAIT * 1000)
        yield Seen(
            page.evaluate("window.counts"),
            page.evaluate("window.versions"),
            page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol"),
            page,
        )


def close_streams(page: Page) -> None:
    page.evaluate("window.sources.forEach((source) => source.close())")


def test_ten_streams_receive_over_http2(
    browser: Browser, h2_server: RunningTls, h2_client: httpx.Client
) -> None:
    """All 10 receive; when the page closes them (the browser resets each HTTP/2 stream and
    keeps the connection), every producer stops."""
    url = f"{h2_server.url}/h2.html?n={STREAMS}"
    with streams_page(browser, url, "window.counts.every((c) => c > 0)") as seen:
        assert seen.protocol == "h2"
        assert seen.versions == ["2"] * STREAMS
        # Still flowing, every one of them: at least a few ticks each during STALL_WAIT.
        assert min(seen.counts) >= 3, seen.counts
        stats = h2_client.get("/_stats").json()
        assert stats["started"] - stats["finished"] == STREAMS, stats
        close_streams(seen.page)
        closed = time.monotonic()
        stopped = wait_for(lambda: _stopped(h2_client), timeout=3)
        assert stopped, h2_client.get("/_stats").json()
        assert time.monotonic() - closed < 1.5


def _stopped(client: httpx.Client) -> bool:
    stats = client.get("/_stats").json()
    return bool(stats["started"] == stats["finished"] and stats["open_streams"] == 0)


def test_over_http1_the_seventh_stream_stalls(browser: Browser, certs: Certificates) -> None:
    receiving = f"window.counts.filter((c) => c > 0).length >= {HTTP1_CONNECTIONS}"
    with (
        serve_tls("uvicorn", APP, certs) as server,
        streams_page(browser, f"{server.url}/h2.html?n={STREAMS}", receiving) as seen,
    ):
        assert seen.protocol == "http/1.1"
        got = [i for i, count in enumerate(seen.counts) if count > 0]
        assert got == list(range(HTTP1_CONNECTIONS)), seen.counts
        assert seen.versions[:HTTP1_CONNECTIONS] == ["1.1"] * HTTP1_CONNECTIONS
        assert min(seen.counts[:HTTP1_CONNECTIONS]) >= 3, seen.counts


def test_both_modes_over_http2(h2_client: httpx.Client) -> None:
    batch = h2_client.get("/items?n=3", headers=JSON)
    assert batch.http_version == "HTTP/2"
    assert batch.json() == {"items": [{"id": i, "value": f"item-{i}"} for i in range(3)]}
    stream = h2_client.get("/items?n=3", headers=SSE)
    assert stream.http_version == "HTTP/2"
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert [line for line in stream.text.splitlines() if line.startswith("id:")] == [
        "id: 0",
        "id: 1",
        "id: 2",
    ]


def test_a_client_that_leaves_stops_the_producer_over_http2(
    h2_server: RunningTls, h2_client: httpx.Client, certs: Certificates
) -> None:
    """The client closes its connection (httpx never resets one HTTP/2 stream alone; the
    browser test above covers that)."""
    before = h2_client.get("/_stats").json()["finished"]
    verify = certs.client_context()
    with (
        httpx.Client(base_url=h2_server.url, verify=verify, http1=False, http2=True) as leaving,
        leaving.stream("GET", "/_blocked", headers=SSE) as response,
    ):
        assert response.http_version == "HTTP/2"
        assert next(response.iter_lines()).startswith("id: 0")
    left = time.monotonic()
    assert wait_for(lambda: h2_client.get("/_stats").json()["finished"] == before + 1, 3)
    assert time.monotonic() - left < 1.5
    assert h2_client.get("/_stats").json()["open_streams"] == 0


def test_endpoints_that_need_the_start_up_over_http2(h2_client: httpx.Client) -> None:
    topic = f"/events/{uuid.uuid4().hex}"
    published = h2_client.post(topic, json=[{"data": {"n": 1}}, {"data": {"n": 2}}])
    assert published.status_code == 200, published.text
    batch = h2_client.get(f"{topic}?after=0", headers=JSON)
    assert batch.http_version == "HTTP/2"
    assert [item["data"] for item in batch.json()["items"]] == [{"n": 1}, {"n": 2}]
    created = h2_client.post("/jobs", json={"steps": 2, "delay": 0.01})
    assert created.status_code == 202, created.text
    url = created.json()["url"]
    done = wait_for(
        lambda: h2_client.get(url, headers=JSON).json()["status"] == "succeeded", timeout=5
    )
    assert done, h2_client.get(url, headers=JSON).text
