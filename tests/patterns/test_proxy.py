"""The proxy's pieces in-process: relaying SSE blocks, options, backoff (fast unit coverage)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from asgistream import App, Event, Request, StreamOptions
from asgistream._types import ASGIApp
from asgistream.client import RetryPolicy
from asgistream.patterns.proxy import Upstream, _Relay


def parse(lines: list[str]) -> list[str | Event]:
    relay = _Relay()
    return relay.feed("".join(line + "\n" for line in lines).encode())


def test_parser_follows_the_whatwg_rules() -> None:
    assert parse(["data: a", "data:b", "data:  c", ""]) == ["a\nb\n c"]
    assert parse([": comment", "", "data: x", ""]) == ["x"]
    assert parse(["event: tick", "id: 3", "retry: 10", "data: {}", ""]) == [
        Event("{}", event="tick", id="3", retry=10)
    ]
    # An id without data waits for the next event; an event type does not.
    assert parse(["id: 5", "", "event: lost", "", "data: y", ""]) == [Event("y", id="5")]
    # Bad retry values and ids with NUL are ignored; unknown fields too.
    assert parse(["retry: 1x", "id: a\0b", "foo: bar", "data", ""]) == [""]
    # An unfinished event at the end is dropped.
    assert parse(["data: complete", "", "data: cut"]) == ["complete"]
    # Only CR, LF and CRLF end a line: U+2028 and NEL, which orjson writes as they are, stay
    # inside the data (a line splitter built on str.splitlines cuts the JSON in two).
    assert parse(['data: {"c": "a\u2028b\x85c"}', ""]) == ['{"c": "a\u2028b\x85c"}']


@pytest.mark.parametrize(
    "options",
    [
        {"max_streams": 0},
        {"queue_timeout": -1.0},
        {"read_timeout": float("nan")},
        {"stream": StreamOptions(done=True)},
    ],
)
def test_bad_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Upstream("http://127.0.0.1:1", **options)  # type: ignore[arg-type]


def test_backoff_grows_is_jittered_and_capped() -> None:
    # The proxy waits by the client's RetryPolicy: jitter only ever lengthens a wait.
    upstream = Upstream("http://x", retry=RetryPolicy(initial=0.1, cap=0.5, jitter=0.5))
    policy = upstream.retry
    for failures, full in ((1, 0.1), (2, 0.2), (3, 0.4), (6, 0.5)):
        delays = [policy.delay(failures) for _ in range(50)]
        assert all(full <= d <= min(0.5, full * 1.5) for d in delays)
        assert full == 0.5 or len(set(delays)) > 1
    # A Retry-After from the upstream is honoured, up to the cap.
    assert policy.delay(1, at_least=0.3) >= 0.3
    assert policy.delay(1, at_least=60) == 0.5
    assert Upstream("http://x", queue_timeout=2.5).retry_after == 3
    # The default retries every 5xx, three attempts in all; retry=None is one attempt.
    default = Upstream("http://x").retry
    assert 501 in default.statuses and 429 not in default.statuses
    assert [default.gives_up(n) for n in (2, 3)] == [False, True]
    assert Upstream("http://x", retry=None).retry.gives_up(1)


def test_forwarding_needs_an_open_upstream() -> None:
    upstream = Upstream("http://127.0.0.1:1")
    app = App()

    @app.route("/p")
    async def forward(request: Request) -> ASGIApp:
        return upstream.forward(request, "/")

    async def main() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return (await client.get("/p")).status_code

    assert asyncio.run(main()) == 500

    async def twice() -> None:
        async with upstream:
            assert upstream.in_use == 0
            with pytest.raises(RuntimeError):
                await upstream.open()

    asyncio.run(twice())


def test_errors_before_the_upstream_is_reached_are_openai_shaped() -> None:
    # Port 1 refuses connections: one attempt (retry=None), then a 502.
    upstream = Upstream("http://127.0.0.1:1", retry=None)
    app = App(max_body_size=8)

    @app.route("/p", methods=("POST",))
    async def forward(request: Request) -> ASGIApp:
        return upstream.forward(request, "/")

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with (
            upstream,
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            return [await client.post("/p", content=body) for body in (b"x" * 9, b"{}")]

    too_large, unreachable = asyncio.run(main())
    assert too_large.status_code == 413
    assert too_large.json()["error"] == {
        "message": too_large.json()["error"]["message"],
        "type": "invalid_request_error",
        "param": None,
        "code": "payload_too_large",
    }
    assert unreachable.status_code == 502
    assert unreachable.json()["error"]["code"] == "upstream_unavailable"
