from __future__ import annotations

import resource
from collections.abc import Iterator

import httpx
import pytest

from tests.server import Server, serve


def raise_open_files(wanted: int = 65536) -> int:
    """Raise the soft open-files limit (children inherit it); return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@pytest.fixture(scope="module")
def core_server() -> Iterator[Server]:
    raise_open_files()
    with serve("tests.apps.core_app:app") as server:
        yield server


@pytest.fixture(scope="module")
def demo_server() -> Iterator[Server]:
    with serve("examples.demo:app") as server:
        yield server


@pytest.fixture
def client(core_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=core_server.url, timeout=10) as c:
        yield c
