"""A client that opens a stream and reads nothing, on every server and protocol, over real
sockets: what the server does with what the app sends, and the bound the library offers
where the server buffers it all.

Reading nothing means, over HTTP/1.1, never reading the socket; over HTTP/2 (h2c with prior
knowledge), never granting flow-control window beyond the default 65,535 bytes, which is
what an HTTP/2 client does with a stream its user does not read. (httpx over HTTP/2 is no
such client: it grants 16 MiB up front, and on its own connection TCP's buffers then fill
first.)

- Where the server applies backpressure, its ``send`` waits, so the producer pauses and the
  server's memory stays flat: uvicorn, hypercorn (asyncio and trio) over HTTP/1.1, granian
  over HTTP/1.1 and HTTP/2.
- Where it does not (daphne; hypercorn's HTTP/2, whose stream buffer takes everything once
  the client's window is spent), ``send`` never waits and the library cannot see such a
  client: the producer runs to its end, everything it made held in the server's memory
  (measured: hundreds of MiB within 2 s for an endless one).
- ``StreamOptions(max_bytes=...)`` (or ``max_events``) bounds that per stream: the producer
  is closed, its ``finally`` runs, the server's memory stays bounded, and the client, when
  it reads, finds the events up to the limit and then ``event: error`` of type
  ``stream_limit``.

Each server starts once for the module (``tests/apps/h2_app.py``); about 12 s in all.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import h2.config
import h2.connection
import h2.events
import httpx
import orjson
import pytest

from tests.apps.h2_app import FLOOD_EVENT_BYTES, FLOOD_MAX_BYTES
from tests.helpers import wait_for
from tests.servers import Running, serve_on

APP = "tests.apps.h2_app:app"
MIB = 1024 * 1024

BACKPRESSURE = [
    ("uvicorn", "h1"),
    ("hypercorn", "h1"),
    ("hypercorn-trio", "h1"),
    ("granian", "h1"),
    ("granian", "h2c"),
]
"""Servers and protocols whose ``send`` waits for a client that reads nothing."""

BUFFERING = [("daphne", "h1"), ("hypercorn", "h2c"), ("hypercorn-trio", "h2c")]
"""Servers and protocols that take everything the app sends, whoever reads it."""

FLAT_KIB = 16 * 1024
"""How much a server's RSS may grow while a client reads nothing and it stays "flat": the
socket buffers and the server's own (about 4 MiB on loopback) plus noise, against hundreds
of MiB a second where nothing holds the producer back."""

FLOOD_EVENTS = 1000
"""Events of the finite flood (16 MiB): more than socket buffers and windows hold."""


class Unread(Protocol):
    """A request whose response nobody reads until ``read_all``."""

    def read_all(self) -> tuple[int, bytes]:
        """Read the whole response now: its status and body."""
        ...

    def close(self) -> None: ...


class _Http1:
    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
        self.sock.sendall(request.encode())

    def read_all(self) -> tuple[int, bytes]:
        response = http.client.HTTPResponse(self.sock)
        response.begin()
        return response.status, response.read()

    def close(self) -> None:
        self.sock.close()


class _H2c:
    """HTTP/2 with prior knowledge and h2's default settings: a 65,535-byte window, granted
    again only for what ``read_all`` reads."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        config = h2.config.H2Configuration(client_side=True)
        self.connection = h2.connection.H2Connection(config)
        self.connection.initiate_connection()
        headers = [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", f"127.0.0.1:{port}"),
            (":path", path),
            ("accept", "text/event-stream"),
        ]
        self.stream_id = self.connection.get_next_available_stream_id()
        self.connection.send_headers(self.stream_id, headers, end_stream=True)
        self.sock.sendall(self.connection.data_to_send())

    def read_all(self) -> tuple[int, bytes]:
        status = 0
        body = bytearray()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            data = self.sock.recv(65536)
            if not data:
                break
            ended = False
            for event in self.connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    self.connection.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    ended = True
            self.sock.sendall(self.connection.data_to_send())
            if ended:
                break
        return status, bytes(body)

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def unread(server: Running, protocol: str, path: str) -> Iterator[Unread]:
    """Open ``path`` over ``protocol`` ("h1" or "h2c") and read nothing of it."""
    client: Unread = _Http1(server.port, path) if protocol == "h1" else _H2c(server.port, path)
    try:
        yield client
    finally:
        client.close()


def rss_kib(pid: int) -> int:
    """The resident set size of ``pid`` and all its descendants (the worker processes), in
    KiB, read from ``/proc``."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for children in Path(f"/proc/{current}/task").glob("*/children"):
                pending.extend(int(child) for child in children.read_text().split())
    return total


@pytest.fixture(scope="module")
def servers() -> Iterator[Callable[[str], Running]]:
    """``servers(name)``: the server ``name`` serving the app, started on first use and
    stopped when the module ends."""
    started: dict[str, Running] = {}
    with contextlib.ExitStack() as stack:

        def get(name: str) -> Running:
            if name not in started:
                server = stack.enter_context(serve_on(name, APP))
                # Warm: what the first requests allocate is no growth under test.
                with unread(server, "h1", f"/flood?key={uuid.uuid4().hex}&n=2") as client:
                    client.read_all()
                started[name] = server
            return started[name]

        yield get


@pytest.fixture
def probe() -> Iterator[Callable[[Running, str], dict[str, Any]]]:
    """``probe(server, key)``: the state of the flood ``key`` (``{"yielded", "finished"}``),
    asked on a connection of its own."""
    with httpx.Client(timeout=10) as client:

        def state(server: Running, key: str) -> dict[str, Any]:
            answer: dict[str, Any] = client.get(f"{server.url}/_flood?key={key}").json()
            return answer

        yield state


def _plateau(read: Callable[[], int], *, still: float = 0.3, limit: float = 4.0) -> int:
    """Poll ``read`` until its value has not changed for ``still`` seconds; return it (or
    the last value after ``limit`` seconds: then it kept growing)."""
    deadline = time.monotonic() + limit
    value = read()
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
        elif time.monotonic() - since >= still:
            break
    return value


def _fields(block: bytes) -> dict[str, str]:
    """The ``name: value`` lines of one SSE event."""
    return dict(line.split(": ", 1) for line in block.decode().strip().splitlines())


@pytest.mark.parametrize(("name", "protocol"), BACKPRESSURE)
def test_backpressure_pauses_the_producer(
    servers: Callable[[str], Running],
    probe: Callable[[Running, str], dict[str, Any]],
    name: str,
    protocol: str,
) -> None:
    """An endless stream, no bound: the producer waits on ``send`` and memory stays flat."""
    server = servers(name)
    key = uuid.uuid4().hex
    with unread(server, protocol, f"/flood?key={key}"):
        assert wait_for(lambda: probe(server, key).get("yielded", 0) > 0)
        before = rss_kib(server.pid)
        yielded = _plateau(lambda: int(probe(server, key)["yielded"]))
        grown = rss_kib(server.pid) - before
        assert not probe(server, key)["finished"]
    assert yielded * FLOOD_EVENT_BYTES < FLAT_KIB * 1024, yielded
    assert grown < FLAT_KIB, f"RSS grew by {grown} KiB"
    assert wait_for(lambda: probe(server, key)["finished"], timeout=3)


@pytest.mark.parametrize(("name", "protocol"), BUFFERING)
def test_without_backpressure_the_server_takes_everything(
    servers: Callable[[str], Running],
    probe: Callable[[Running, str], dict[str, Any]],
    name: str,
    protocol: str,
) -> None:
    """What the library cannot see: a finite stream of 16 MiB runs to its end, its
    ``finally`` run, while the client has read nothing of it."""
    server = servers(name)
    key = uuid.uuid4().hex
    with unread(server, protocol, f"/flood?key={key}&n={FLOOD_EVENTS}") as client:
        assert wait_for(lambda: probe(server, key).get("finished"), timeout=5)
        assert probe(server, key)["yielded"] == FLOOD_EVENTS
        status, body = client.read_all()
    assert status == 200
    assert body.count(b"\ndata: ") == FLOOD_EVENTS


@pytest.mark.parametrize(("name", "protocol"), [("uvicorn", "h1"), *BUFFERING])
def test_a_bound_ends_a_stream_nobody_reads(
    servers: Callable[[str], Running],
    probe: Callable[[Running, str], dict[str, Any]],
    name: str,
    protocol: str,
) -> None:
    """An endless stream with ``max_bytes`` (1 MiB): its producer is closed at the limit
    though nobody reads, the server's memory stays bounded, and the client then reads the
    events up to the limit and an ``error`` event of type ``stream_limit``."""
    server = servers(name)
    key = uuid.uuid4().hex
    before = rss_kib(server.pid)
    with unread(server, protocol, f"/flood-bounded?key={key}") as client:
        assert wait_for(lambda: probe(server, key).get("finished"), timeout=5)
        time.sleep(0.3)  # anything still growing would show
        grown = rss_kib(server.pid) - before
        # The item that would pass the limit is yielded, then refused.
        sent = probe(server, key)["yielded"] - 1
        status, body = client.read_all()
    assert grown < FLAT_KIB, f"RSS grew by {grown} KiB"
    assert status == 200
    events, _, error = body.rpartition(b"event: error\n")
    assert events.count(b"\ndata: x") == sent
    assert len(events) <= FLOOD_MAX_BYTES < len(events) + len(events) // sent
    assert orjson.loads(_fields(error)["data"])["error"]["type"] == "stream_limit"
