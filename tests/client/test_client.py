"""asgistream.client in process: the WHATWG parser, the retry policy, and the reconnection
rules over httpx's MockTransport (the real-socket tests are in tests/e2e/test_client_e2e.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import httpx
import orjson
import pytest
from httpx_sse._decoders import SSEDecoder
from hypothesis import given, settings
from hypothesis import strategies as st

from asgistream.client import (
    AsyncClient,
    Client,
    ClientError,
    EventParser,
    ResumeError,
    RetryError,
    RetryPolicy,
    ServerSentEvent,
    StatusError,
    StreamError,
)
from asgistream.sse import Event

FAST = RetryPolicy(initial=0.0, jitter=0.0, max_attempts=5)
SSE_TYPE = {"content-type": "text/event-stream; charset=utf-8"}


def parse(raw: bytes, chunks: int = 1) -> list[ServerSentEvent]:
    parser = EventParser()
    size = max(1, len(raw) // chunks)
    events: list[ServerSentEvent] = []
    for start in range(0, len(raw), size):
        events += parser.feed(raw[start : start + size])
    return events


def triples(events: list[ServerSentEvent]) -> list[tuple[str, str, str]]:
    return [(e.event, e.data, e.id) for e in events]


# -- the parser ------------------------------------------------------------------------------


def test_parser_follows_the_whatwg_example_streams() -> None:
    raw = (
        b": a comment\n"
        b"data: first\n"
        b"data:second line\n"
        b"\n"
        b"event: add\r\n"
        b"id: 7\r\n"
        b"data\r\n"
        b"\r\n"
        b"data:  two spaces\r"
        b"\r"
        b"field without value\n"
        b"data: x\n"
        b"\n"
    )
    assert triples(parse(raw)) == [
        ("message", "first\nsecond line", ""),
        ("add", "", "7"),
        ("message", " two spaces", "7"),
        ("message", "x", "7"),
    ]


def test_every_split_of_the_bytes_gives_the_same_events() -> None:
    raw = "\ufeffdata: é\r\n\r\nid: 1\rdata: a\r\rdata: b\n\n:x\r\n\r\n".encode()
    whole = triples(parse(raw))
    assert whole == [("message", "é", ""), ("message", "a", "1"), ("message", "b", "1")]
    for cut in range(len(raw) + 1):
        parser = EventParser()
        got = parser.feed(raw[:cut]) + parser.feed(raw[cut:])
        assert triples(got) == whole, cut
    parser = EventParser()
    assert triples([e for i in range(len(raw)) for e in parser.feed(raw[i : i + 1])]) == whole


def test_blocks_without_data_are_not_events_but_set_id_and_retry() -> None:
    parser = EventParser("3")
    raw = b"id: 4\ndata: four\n\n:\n\n:\n\nid: 9\n\nretry: 1500\n\nretry: soon\n\n"
    assert triples(parser.feed(raw)) == [("message", "four", "4")]
    assert parser.last_event_id == "9"
    assert parser.retry == 1500


def test_httpx_sse_dispatches_heartbeats_after_an_id_which_is_why_we_parse() -> None:
    raw = b"id: 1\ndata: a\n\n:\n\nretry: 10\n\n"
    decoder = SSEDecoder()
    lines = raw.decode().split("\n")[:-1]
    theirs = [e for line in lines if (e := decoder.decode(line))]
    assert [(e.data, e.id) for e in theirs] == [("a", "1"), ("", "1"), ("", "1")]
    assert triples(parse(raw)) == [("message", "a", "1")]


def test_incomplete_event_at_the_end_is_never_dispatched() -> None:
    parser = EventParser()
    assert parser.feed(b"id: 1\ndata: one\n\nid: 2\ndata: tw") == [ServerSentEvent("one", id="1")]
    assert parser.last_event_id == "1"


def test_odd_fields() -> None:
    raw = (
        b"id: a\x00b\ndata: nul id ignored\n\n"
        b"retry: 12a\nretry: -5\ndata: bad retries ignored\n\n"
        b"retry: 0250\nevent:\ndata: \xff\n\n"
        b"id\ndata: empty id resets\n\n"
    )
    events = parse(raw)
    assert [(e.data, e.id, e.retry) for e in events] == [
        ("nul id ignored", "", None),
        ("bad retries ignored", "", None),
        ("\ufffd", "", 250),
        ("empty id resets", "", None),
    ]
    assert events[2].event == "message"


_text = st.text(st.characters(codec="utf-8"), max_size=30)
_field = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=10)
_events = st.lists(
    st.builds(
        Event,
        data=st.one_of(
            _text, st.dictionaries(_field, st.integers(-(2**63), 2**63 - 1), max_size=3)
        ),
        event=st.one_of(st.none(), _field.filter(bool)),
        id=st.one_of(st.none(), _field, st.integers(0, 10**9)),
        retry=st.one_of(st.none(), st.integers(0, 10**6)),
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(events=_events, chunk=st.integers(1, 64), heartbeats=st.booleans())
def test_parser_reads_back_what_the_encoder_writes(
    events: list[Event], chunk: int, heartbeats: bool
) -> None:
    raw = b"".join(e.encode() + (b":\n\n" if heartbeats else b"") for e in events)
    parser = EventParser()
    got = [e for i in range(0, len(raw), chunk) for e in parser.feed(raw[i : i + chunk])]
    expected = []
    last_id = ""
    for e in events:
        if e.id is not None:
            last_id = str(e.id)
        data = e.data if isinstance(e.data, str) else orjson.dumps(e.data).decode()
        data = data.replace("\r\n", "\n").replace("\r", "\n")
        expected.append((e.event or "message", data, last_id, e.retry))
    assert [(g.event, g.data, g.id, g.retry) for g in got] == expected
    # httpx-sse agrees wherever it follows the rules: no heartbeats, every block has data.
    if not heartbeats:
        decoder = SSEDecoder()
        lines = raw.decode().replace("\r\n", "\n").replace("\r", "\n").split("\n")[:-1]
        theirs = [s for line in lines if (s := decoder.decode(line)) is not None]
        assert [(s.event, s.data, s.id, s.retry) for s in theirs] == expected


# -- the retry policy --------------------------------------------------------------------------


def test_backoff_grows_is_capped_and_jitters_upwards() -> None:
    policy = RetryPolicy(initial=0.5, factor=2, cap=5, jitter=0.2, max_attempts=4)
    assert [policy.delay(n, u=0) for n in range(1, 7)] == [0.5, 1, 2, 4, 5, 5]
    assert policy.delay(1, u=0.999) == pytest.approx(0.5 * 1.1998)
    assert policy.delay(5, u=0.999) == 5  # never beyond the cap
    assert policy.delay(1, base=3.0, u=0) == 3.0  # the server's retry: hint replaces initial
    assert policy.delay(1, at_least=4.0, u=0) == 4.0  # Retry-After
    assert policy.delay(1, at_least=60.0, u=0) == 5  # ... still capped
    assert policy.delay(10**6, u=0) == 5  # no overflow however long the outage
    delays = {policy.delay(1) for _ in range(50)}
    assert len(delays) > 1 and all(0.5 <= d < 0.6 for d in delays)
    assert [policy.gives_up(n) for n in (3, 4)] == [False, True]
    assert not RetryPolicy(max_attempts=None).gives_up(10**9)


@pytest.mark.parametrize(
    "options",
    [{"factor": 0.5}, {"jitter": 2}, {"initial": -1}, {"max_attempts": 0}],
)
def test_policy_rejects_nonsense(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**options)  # type: ignore[arg-type]


# -- reconnection over a mock transport ------------------------------------------------------


class _Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that may end with a lost connection, for either client."""

    def __init__(self, chunks: list[bytes], cut: bool) -> None:
        self.chunks = chunks
        self.cut = cut

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.cut:
            raise httpx.RemoteProtocolError("incomplete chunked read")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.cut:
            raise httpx.ReadError("connection reset")


class Server:
    """Answers the n-th request with the n-th scripted answer; records the requests."""

    def __init__(self, *answers: tuple[int, dict[str, str], list[bytes], bool]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, headers, chunks, cut = self.answers[len(self.requests) - 1]
        return httpx.Response(status, headers=headers, stream=_Body(chunks, cut))

    def last_ids(self) -> list[str | None]:
        return [r.headers.get("last-event-id") for r in self.requests]


def items(*ids: int) -> list[bytes]:
    return [b'id: %d\ndata: {"i": %d}\n\n' % (i, i) for i in ids]


def client(server: Server, **options: object) -> Client:
    options.setdefault("retry", FAST)
    http = httpx.Client(transport=httpx.MockTransport(server), base_url="http://test")
    return Client(http=http, **options)  # type: ignore[arg-type]


def test_resumes_after_a_cut_with_last_event_id_and_each_event_once() -> None:
    server = Server(
        (200, SSE_TYPE, [*items(0, 1), b'id: 2\ndata: {"i": 2}'], True),  # cut inside event 2
        (200, SSE_TYPE, [b"retry: 0\n\n", *items(2)], True),
        (503, {"retry-after": "0"}, [b'{"error": {"type": "busy", "message": "later"}}'], False),
        (200, SSE_TYPE, items(3, 4), False),
    )
    with client(server) as c:
        got = [e.json()["i"] for e in c.events("/s", headers={"X-Trace": "1"})]
    assert got == [0, 1, 2, 3, 4]
    assert server.last_ids() == [None, "1", "2", "2"]
    assert all(r.headers["accept"] == "text/event-stream" for r in server.requests)
    assert all(r.headers["x-trace"] == "1" for r in server.requests)


def test_async_client_resumes_the_same_way() -> None:
    import anyio

    server = Server(
        (200, SSE_TYPE, items(0, 1, 2), True),
        (502, {}, [b"bad gateway"], False),
        (200, SSE_TYPE, items(3), False),
    )

    async def main() -> list[int]:
        http = httpx.AsyncClient(transport=httpx.MockTransport(server), base_url="http://t")
        async with http, AsyncClient(http=http, retry=FAST) as c:
            return [item["i"] async for item in c.items("/s")]

    assert anyio.run(main) == [0, 1, 2, 3]
    assert server.last_ids() == [None, "2", "2"]


def test_a_clean_end_ends_unless_following() -> None:
    server = Server((200, SSE_TYPE, items(0), False), (200, SSE_TYPE, items(1), False))
    with client(server) as c:
        assert [e.id for e in c.events("/s")] == ["0"]
    assert len(server.requests) == 1
    server = Server(
        (200, SSE_TYPE, [b"retry: 0\n\n", *items(0)], False),
        (200, SSE_TYPE, items(1), False),
        (204, {}, [], False),
    )
    with client(server, follow=True) as c:
        assert [e.id for e in c.events("/s")] == ["0", "1"]
    assert server.last_ids() == [None, "0", "1"]


def test_done_and_204_stop_without_an_event() -> None:
    server = Server((200, SSE_TYPE, [b"data: a\n\ndata: [DONE]\n\ndata: after\n\n"], True))
    with client(server) as c:
        assert [e.data for e in c.events("/s")] == ["a"]
    server = Server((204, {}, [], False))
    with client(server) as c:
        assert list(c.events("/s")) == []
    server = Server((200, SSE_TYPE, [b"data: [DONE]\n\n"], False))
    with client(server, done=None) as c:
        assert [e.data for e in c.events("/s")] == ["[DONE]"]


def test_error_statuses() -> None:
    body = b'{"error": {"type": "not_found", "message": "No such stream"}}'
    server = Server((404, {"content-type": "application/json"}, [body], False))
    with client(server) as c, pytest.raises(StatusError) as info:
        list(c.events("/s"))
    assert (info.value.status, info.value.type, info.value.message) == (
        404,
        "not_found",
        "No such stream",
    )
    assert len(server.requests) == 1  # a 4xx is final
    server = Server(*[(503, {}, [b"down"], False)] * 3)
    policy = RetryPolicy(initial=0.0, max_attempts=3)
    with client(server, retry=policy) as c, pytest.raises(RetryError) as retry_info:
        list(c.events("/s"))
    assert retry_info.value.attempts == 3
    assert isinstance(retry_info.value.__cause__, StatusError)
    assert len(server.requests) == 3
    server = Server((503, {}, [b"down"], False))
    with client(server, retry=None) as c, pytest.raises(StatusError):
        list(c.events("/s"))
    server = Server((200, {"content-type": "application/json"}, [b"{}"], False))
    with client(server) as c, pytest.raises(ClientError, match="expected an event stream"):
        list(c.events("/s"))


def test_retry_after_and_the_retry_hint_are_honoured() -> None:
    server = Server((503, {"retry-after": "1"}, [b""], False), (200, SSE_TYPE, items(0), False))
    started = time.monotonic()
    with client(server, retry=RetryPolicy(initial=0.0, cap=0.3)) as c:
        assert len(list(c.events("/s"))) == 1
    assert 0.3 <= time.monotonic() - started < 1.0  # Retry-After, within the cap
    server = Server(
        (200, SSE_TYPE, [b"retry: 300\n\n", *items(0)], True), (200, SSE_TYPE, items(1), False)
    )
    started = time.monotonic()
    with client(server) as c:
        assert len(list(c.events("/s"))) == 2
    assert time.monotonic() - started >= 0.3


def test_error_events() -> None:
    failure = b'event: error\ndata: {"error": {"type": "boom", "message": "It broke"}}\n\n'
    server = Server((200, SSE_TYPE, [*items(0), failure, *items(1)], False))
    got: list[str] = []
    with client(server) as c, pytest.raises(StreamError) as info:
        got.extend(e.id for e in c.events("/s"))
    assert got == ["0"]  # the events before the error are delivered first
    assert (info.value.type, info.value.message) == ("boom", "It broke")
    shutdown = b'event: error\ndata: {"error": {"type": "shutdown", "message": "bye"}}\n\n'
    server = Server(
        (200, SSE_TYPE, [*items(0, 1), shutdown], False), (200, SSE_TYPE, items(2), False)
    )
    with client(server) as c:
        assert [e.id for e in c.events("/s")] == ["0", "1", "2"]
    assert server.last_ids() == [None, "1"]
    # A store briefly unreachable (a 503 after the stream started) is resumed the same way.
    outage = b'event: error\ndata: {"error": {"type": "unavailable", "message": "no"}}\n\n'
    server = Server((200, SSE_TYPE, [*items(0), outage], False), (200, SSE_TYPE, items(1), False))
    with client(server) as c:
        assert [e.id for e in c.events("/s")] == ["0", "1"]
    assert server.last_ids() == [None, "0"]
    other = b"event: error\ndata: not ours\n\n"
    server = Server((200, SSE_TYPE, [other], False))
    with client(server) as c:
        assert [(e.event, e.data) for e in c.events("/s")] == [("error", "not ours")]


def test_a_stream_without_ids_is_not_replayed_unless_allowed() -> None:
    answers = ((200, SSE_TYPE, [b"data: a\n\n"], True), (200, SSE_TYPE, [b"data: b\n\n"], False))
    with client(Server(*answers)) as c, pytest.raises(ResumeError):
        list(c.events("/s"))
    with client(Server(*answers), replay=True) as c:
        assert [e.data for e in c.events("/s")] == ["a", "b"]
    # Nothing delivered yet: reconnecting repeats nothing.
    server = Server((200, SSE_TYPE, [b"data: a"], True), (200, SSE_TYPE, [b"data: a\n\n"], False))
    with client(server) as c:
        assert [e.data for e in c.events("/s")] == ["a"]


def test_progress_resets_the_failure_count() -> None:
    answers = [(200, SSE_TYPE, items(i), True) for i in range(6)]
    with client(Server(*answers, (200, SSE_TYPE, [], False)), retry=FAST) as c:
        assert len(list(c.events("/s"))) == 6
    silent = [(200, SSE_TYPE, [b": nothing\n\n"], True)] * 5
    with client(Server(*silent), retry=FAST) as c, pytest.raises(RetryError):
        list(c.events("/s"))


def test_last_event_id_option_and_header() -> None:
    server = Server((200, SSE_TYPE, [], False), (200, SSE_TYPE, [], False))
    with client(server) as c:
        list(c.events("/s", last_event_id="41"))
        list(c.events("/s", headers={"last-event-id": "7"}))
    assert server.last_ids() == ["41", "7"]


def test_fetch_and_items_in_batch_mode() -> None:
    json_type = {"content-type": "application/json"}
    body = b'{"items": [{"i": 0}, {"i": 1}]}'
    server = Server((500, {}, [b"oops"], False), (200, json_type, [body], False))
    with client(server) as c:
        assert list(c.items("/s", batch=True)) == [{"i": 0}, {"i": 1}]
    assert [r.headers["accept"] for r in server.requests] == ["application/json"] * 2
    server = Server((200, json_type, [b"[1, 2]"], False), (200, json_type, [b"{}"], False))
    with client(server) as c:
        assert list(c.items("/s", batch=True, key=None)) == [1, 2]
        with pytest.raises(ClientError, match="list of items"):
            list(c.items("/s", batch=True))
    server = Server((200, SSE_TYPE, items(0), False), (204, {}, [], False))
    with client(server) as c:
        with pytest.raises(ClientError, match="expected a JSON body"):
            c.fetch("/s")
        assert c.fetch("/s") is None
    server = Server((200, SSE_TYPE, [b'data: "x"\n\ndata: y\n\n'], False))
    with client(server) as c:
        assert list(c.items("/s", decode=False)) == ['"x"', "y"]


def test_lost_connections_while_fetching_are_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"items": []})

    http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://t")
    with http, Client(http=http, retry=FAST) as c:
        assert c.fetch("/s", method="POST", json={"q": 1}) == {"items": []}
    assert len(calls) == 3 and calls[0].content == b'{"q":1}'


def test_client_options_are_checked() -> None:
    with httpx.Client() as http, pytest.raises(ValueError):
        Client("http://x", http=http)
