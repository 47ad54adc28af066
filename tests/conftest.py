"""Fixtures for every test. Plain helpers that test apps import too are in ``tests/helpers.py``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_server import RedisServer
from tests.redis_server import redis_server as start_redis
from tests.stores import BACKENDS, Stores


@pytest.fixture
def anyio_backend() -> str:
    """``@pytest.mark.anyio`` tests run on asyncio: the library's responses need it."""
    return "asyncio"


@pytest.fixture(params=sorted(BACKENDS))
def stores(request: pytest.FixtureRequest) -> Iterator[Stores]:
    """The stores of each backend in turn (``tests/stores.py``), for the shared pattern tests."""
    yield BACKENDS[request.param]()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session, on a free port, stopped by its pid at the end.

    Tests that stop, kill or flush Redis start their own with ``tests.redis_server``.
    """
    with start_redis() as server:
        yield server
