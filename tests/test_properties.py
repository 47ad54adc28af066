"""Hostile input, generated: no 500, no hang, no injected event.

In process (fast, many examples): negotiation, whole requests through the guard app, the
SSE encoder against httpx-sse's decoder. Over a real socket (fewer examples): Accept headers
and query strings through uvicorn and httpx.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from itertools import pairwise
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import orjson
import pytest
from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgistream import Event, negotiate
from asgistream.negotiation import NegotiationError
from asgistream.sse import encode
from tests.apps.guard_app import inner as guard_app
from tests.helpers import FakeClient
from tests.server import Server, serve

# Header values as a client can send them: latin-1 without CR, LF or NUL.
header_text = st.text(
    alphabet=st.characters(min_codepoint=1, max_codepoint=255, exclude_characters="\r\n"),
    max_size=200,
)
accept_tokens = st.sampled_from(
    [
        "text/event-stream",
        "application/json",
        "*/*",
        "text/*",
        "application/*",
        "text/html",
        ";q=0",
        ";q=1",
        ";q=0.5",
        ";q=.2",
        ";q=1.0001",
        ";q=-1",
        ",",
        " ",
        ";",
        "=",
        '"',
        "q",
        "*",
    ]
)
accept_values = st.one_of(header_text, st.lists(accept_tokens, max_size=12).map("".join))
query_bytes = st.one_of(
    st.binary(max_size=120),
    st.lists(
        st.sampled_from(
            [
                "format=",
                "stream",
                "batch",
                "auto",
                "&",
                "=",
                "stream=",
                "true",
                "0",
                "%",
                "%zz",
                "%ff",
                "+",
                "n=",
                "9" * 20,
                "slow=1",
                ";",
                "format=stream",
            ]
        ),
        max_size=10,
    )
    .map("".join)
    .map(str.encode),
)
# Text any producer may yield: every code point but lone surrogates (not encodable).
payloads = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=300)


@given(query=query_bytes, accept=st.one_of(st.none(), accept_values))
@settings(max_examples=1000, deadline=None)
def test_negotiate_answers_or_raises_a_negotiation_error(query: bytes, accept: str | None) -> None:
    try:
        mode = negotiate(query, accept)
    except NegotiationError as exc:
        assert exc.status in (400, 406)
    else:
        assert mode in ("stream", "batch")


async def request(
    path: str,
    *,
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    method: str = "GET",
    body: list[bytes] | None = None,
) -> tuple[int, bytes]:
    """One request through the guard app in process; fails if it takes more than 5 s."""
    client = FakeClient(body)
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "headers": headers or [],
    }
    with anyio.fail_after(5):
        await guard_app(scope, client.receive, client.send)
    return client.status, client.body


def assert_clean(status: int, body: bytes, allowed: tuple[int, ...]) -> None:
    assert status in allowed, (status, body)
    if status >= 400:
        assert set(orjson.loads(body)["error"]) >= {"type", "message"}
    assert b"Traceback" not in body


@given(query=query_bytes, accept=st.lists(accept_values, max_size=3))
@settings(max_examples=300, deadline=None)
def test_any_accept_and_query_gets_an_answer(query: bytes, accept: list[str]) -> None:
    headers = [(b"accept", a.encode("latin-1")) for a in accept]
    status, body = anyio.run(lambda: request("/items", query=query, headers=headers))
    assert_clean(status, body, (200, 400, 406))


@given(last=st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b))
@settings(max_examples=300, deadline=None)
def test_any_last_event_id_resumes_or_is_refused(last: bytes) -> None:
    headers = [(b"accept", b"text/event-stream"), (b"last-event-id", last)]
    status, body = anyio.run(lambda: request("/items", query=b"n=5", headers=headers))
    assert_clean(status, body, (200, 400))
    if status == 200:
        ids = [line for line in body.split(b"\n") if line.startswith(b"id: ")]
        assert len(ids) <= 5


@given(
    body=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)),
    splits=st.lists(st.integers(0, 300), max_size=5),
)
@settings(max_examples=300, deadline=None)
def test_any_body_gets_an_answer(body: bytes, splits: list[int]) -> None:
    cuts = sorted({0, len(body), *(s for s in splits if s < len(body))})
    chunks = [body[a:b] for a, b in pairwise(cuts)] or [b""]
    status, out = anyio.run(
        lambda: request(
            "/echo", method="POST", body=chunks, headers=[(b"content-length", b"%d" % len(body))]
        )
    )
    assert_clean(status, out, (200, 400))
    if status == 200:
        assert orjson.loads(out) == {"json": orjson.loads(body)}


def test_huge_bodies_get_413_without_reading_them_all() -> None:
    declared = [(b"content-length", b"%d" % (10 * 1024 * 1024))]
    status, body = anyio.run(lambda: request("/echo", method="POST", headers=declared))
    assert status == 413
    chunks = [b"x" * 65536] * 20  # 1.25 MiB, undeclared
    status, body = anyio.run(
        lambda: request(
            "/echo", method="POST", body=chunks, headers=[(b"transfer-encoding", b"chunked")]
        )
    )
    assert status == 413 and orjson.loads(body)["error"]["type"] == "payload_too_large"


def decode_like_a_client(wire: bytes, cuts: list[int]) -> list[Any]:
    """Feed ``wire`` in pieces through a UTF-8 decoder, the SSE line splitter and decoder."""
    text = codecs.getincrementaldecoder("utf-8")()
    lines = SSELineDecoder()
    events = SSEDecoder()
    got = []
    bounds = sorted({0, len(wire), *(c for c in cuts if c < len(wire))})
    pieces = [wire[a:b] for a, b in pairwise(bounds)]
    for i, piece in enumerate(pieces):
        chunk = text.decode(piece, final=i == len(pieces) - 1)
        for line in lines.decode(chunk) if chunk else []:
            event = events.decode(line)
            if event is not None:
                got.append(event)
    for line in lines.flush():
        event = events.decode(line)
        if event is not None:
            got.append(event)
    return got


@given(
    data=payloads,
    event=st.none() | st.text("abc-_", min_size=1, max_size=8),
    cuts=st.lists(st.integers(0, 2000), max_size=8),
)
@settings(max_examples=1500, deadline=None)
def test_any_text_round_trips_as_exactly_one_event(
    data: str, event: str | None, cuts: list[int]
) -> None:
    wire = encode(data, event=event, id=7)
    got = decode_like_a_client(wire + encode("next", id=8), cuts)
    # CR and CRLF arrive as LF: SSE cannot tell line endings apart.
    assert [(e.data, e.event, e.id) for e in got] == [
        (data.replace("\r\n", "\n").replace("\r", "\n"), event or "message", "7"),
        ("next", "message", "8"),
    ]


@given(
    data=st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | payloads,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(payloads, inner, max_size=4),
        max_leaves=20,
    )
)
@settings(max_examples=500, deadline=None)
def test_any_json_round_trips_as_exactly_one_event(data: Any) -> None:
    if isinstance(data, str):
        data = [data]  # a bare str is sent as text, not JSON
    got = decode_like_a_client(Event(data).encode(), [])
    assert len(got) == 1 and orjson.loads(got[0].data) == data


# -- over a real socket -------------------------------------------------------------------


@pytest.fixture(scope="module")
def guard_server() -> Iterator[Server]:
    with serve("tests.apps.guard_app:app") as server:
        yield server


# What a real HTTP client can put on the wire: a percent-encoded query, a header value of
# visible characters (anything else uvicorn itself refuses, with a plain-text 400).
wire_queries = query_bytes.map(lambda q: quote(q, safe="=&%+;,/:"))
wire_accepts = accept_values.map(
    lambda a: "".join(c for c in a if c == "\t" or " " <= c <= "~" or c >= "\x80").strip(" \t")
)


@given(query=wire_queries, accept=wire_accepts)
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_real_server_answers_any_accept_and_query(
    guard_server: Server, query: str, accept: str
) -> None:
    url = httpx.URL(guard_server.url + "/items", query=query.encode())
    with httpx.Client(timeout=5) as client:
        r = client.get(url, headers={"accept": accept.encode("latin-1")})
    assert_clean(r.status_code, r.content, (200, 400, 406, 503))
