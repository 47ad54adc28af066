"""Fixtures for every test. Plain helpers that test apps import too are in ``tests/helpers.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.redis_server import RedisServer
from tests.redis_server import redis_server as start_redis
from tests.stores import BACKENDS, Stores, open_stores


@pytest.fixture
def anyio_backend() -> str:
    """``@pytest.mark.anyio`` tests run on asyncio: the library's responses need it."""
    return "asyncio"


@pytest.fixture(params=["asyncio", "trio"])
def each_event_loop(request: pytest.FixtureRequest) -> str:
    """For the core's backend-agnostic tests: a module runs them on both loops with
    ``anyio_backend = each_event_loop`` (``hypercorn -k trio`` serves apps under trio). The
    pattern stores (Redis's asyncio client among them) stay on asyncio."""
    return str(request.param)


@pytest.fixture(params=BACKENDS)
async def stores(request: pytest.FixtureRequest, anyio_backend: str) -> AsyncIterator[Stores]:
    """The stores of each backend in turn (``tests/stores.py``), for the shared pattern tests;
    Redis's run on the session's redis-server, under a key prefix of their own."""

    def redis_url() -> str:
        server: RedisServer = request.getfixturevalue("redis_server")
        return server.url

    async with open_stores(request.param, redis_url) as stores:
        yield stores


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session, on a free port, stopped by its pid at the end.

    Tests that stop, kill or flush Redis start their own with ``tests.redis_server``.
    """
    with start_redis() as server:
        yield server
