"""The proxy's pieces in-process: SSE line parsing, options, backoff (fast unit coverage)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from asgistream import App, Event, Request
from asgistream._types import ASGIApp
from asgistream.patterns.proxy import Upstream, _Parser


def parse(lines: list[str]) -> list[object]:
    parser = _Parser()
    return [e for e in (parser.feed(line) for line in lines) if e is not None]


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


@pytest.mark.parametrize(
    "options",
    [
        {"max_streams": 0},
        {"retries": -1},
        {"queue_timeout": -1.0},
        {"read_timeout": float("nan")},
    ],
)
def test_bad_options_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Upstream("http://127.0.0.1:1", **options)  # type: ignore[arg-type]


def test_backoff_grows_is_jittered_and_capped() -> None:
    upstream = Upstream("http://x", backoff=0.1, max_backoff=0.5)
    for attempt, full in ((0, 0.1), (1, 0.2), (2, 0.4), (5, 0.5)):
        delays = [upstream._backoff(attempt, None) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
    # A Retry-After from the upstream is honoured, up to max_backoff.
    assert upstream._backoff(0, 0.3) >= 0.3
    assert upstream._backoff(0, 60) == 0.5
    assert Upstream("http://x", queue_timeout=2.5).retry_after == 3


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
