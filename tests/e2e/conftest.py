from __future__ import annotations

import resource
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser

from tests.browser import chromium
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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium, one per module that asks for it (launching costs about a second).

    While it runs, playwright keeps an event loop running in the main thread, so a module
    whose other tests call ``asyncio.run`` launches its own with ``tests.browser.chromium()``.
    """
    with chromium() as launched:
        yield launched
