"""Headless Chromium for tests, through playwright and Debian's ``chromium``.

``chromium()`` launches one browser: a context manager, to wrap in a module-scoped fixture
(launching costs about a second). ``open_page(browser)`` gives a fresh page in its own
context and fails the test on any uncaught JavaScript error. ``blank_page(page, origin)``
loads an empty document at ``origin``, so that scripts run there are same-origin with a
server that has no page of its own.

A missing browser fails the tests that need it (``make browser`` installs it): it never
skips them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = os.environ.get("ASGISTREAM_CHROMIUM", "/usr/bin/chromium")
"""The browser binary; playwright's own downloads are not used (there is no network)."""

CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
"""Flags for a quiet browser that talks to nothing but the test servers on loopback."""

DEFAULT_TIMEOUT = 15.0
"""Seconds any one playwright action or wait may take before the test fails."""


@contextlib.contextmanager
def chromium(*, timeout: float = DEFAULT_TIMEOUT, args: tuple[str, ...] = ()) -> Iterator[Browser]:
    """Launch headless Chromium with ``CHROMIUM_ARGS`` and ``args``; close it when the block
    ends."""
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"{CHROMIUM} is not installed: run `make browser` (Debian's chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *args], timeout=timeout * 1000
        )
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def open_page(
    browser: Browser,
    *,
    width: int = 1280,
    height: int = 800,
    timeout: float = DEFAULT_TIMEOUT,
) -> Iterator[Page]:
    """A page in a fresh context; raises if the page threw an uncaught JavaScript error."""
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(timeout * 1000)
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        yield page
    finally:
        context.close()
    assert not errors, f"uncaught JavaScript errors: {errors}"


def blank_page(page: Page, origin: str) -> None:
    """Show an empty document at ``origin`` without asking the server for it."""
    url = f"{origin}/__blank__"
    page.route(url, lambda route: route.fulfill(body="<!doctype html>", content_type="text/html"))
    try:
        page.goto(url)
    finally:
        page.unroute(url)
