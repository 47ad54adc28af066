"""What every contender serves, shared so that only the framework differs.

Each app builds its items from the same async generators and records, for the disconnect
scenario, when the producer's ``finally`` ran: ``time.monotonic()`` is one clock for every
process on the machine, so the client can subtract its own reading from it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

BATCH_SIZE = 100
"""Items in a batch body and events in a short stream."""

FINALLY_DIR_ENV = "BENCH_FINALLY_DIR"
"""Environment variable naming the folder where producers record their ``finally``."""

_CAP_CHECK_MASK = 1023  # look at the clock once every 1024 items


def item(i: int) -> dict[str, Any]:
    """The ``i``-th item: a small JSON object, the same for every contender."""
    return {"id": i, "name": f"item-{i}", "price": i * 1.25, "tags": ["a", "b"], "ok": True}


TOKEN = {"choices": [{"index": 0, "delta": {"content": " token"}}]}
"""One LLM-like chunk, OpenAI-shaped."""


def record_finally(run: str | None, reason: str) -> None:
    """Write when (monotonic seconds) and why a producer stopped, for run ``run``."""
    folder = os.environ.get(FINALLY_DIR_ENV)
    if not run or not folder:
        return
    stamp = time.monotonic()
    path = Path(folder) / f"{run}.txt"
    # Written aside and renamed, so a reader never sees half a line.
    partial = path.with_suffix(".part")
    partial.write_text(f"{stamp!r} {reason}\n")
    os.replace(partial, path)


async def items(
    n: int = BATCH_SIZE,
    cap: float = 30.0,
    run: str | None = None,
    make: Callable[[int], Any] = item,
) -> AsyncGenerator[Any, None]:
    """``n`` items (``n < 0``: endless) without awaiting anything, for at most ``cap`` s;
    ``make(i)`` builds the ``i``-th (an app that yields its own item type passes its own).

    A consumer that awaits only ``send`` between items is "send-only": it gives the event
    loop no chance to notice a disconnect unless the framework adds one.
    """
    deadline = time.monotonic() + cap
    reason = "stopped"
    try:
        i = 0
        while i != n:
            if not i & _CAP_CHECK_MASK and time.monotonic() > deadline:
                reason = "cap"
                return
            yield make(i)
            i += 1
        reason = "end"
    finally:
        record_finally(run, reason)


async def paced(
    delay: float,
    n: int = -1,
    start: float | None = None,
    cap: float = 30.0,
    run: str | None = None,
) -> AsyncGenerator[Any, None]:
    """``n`` items (``n < 0``: endless), item ``i`` due ``(i + 1) * delay`` s after ``start``
    (``time.monotonic()``; default: now), for at most ``cap`` s after ``start``.

    Each sleep lasts until the next item's due time, not ``delay`` after the previous item:
    an item is then late only by what the server did not get to in time, and lateness does
    not pile up over a long stream (``asyncio.sleep(delay)`` per item would add the event
    loop's timer slack every time). The client knows the schedule from the same ``start``.
    """
    begun = time.monotonic() if start is None else start
    deadline = begun + cap
    reason = "stopped"
    try:
        i = 0
        while i != n:
            due = begun + (i + 1) * delay
            if due > deadline:
                reason = "cap"
                return
            await asyncio.sleep(due - time.monotonic())
            yield item(i)
            i += 1
        reason = "end"
    finally:
        record_finally(run, reason)


async def idle() -> AsyncGenerator[Any, None]:
    """One item, then nothing until the client leaves."""
    yield item(0)
    await asyncio.Event().wait()


async def tokens(n: int, delay: float) -> AsyncGenerator[Any, None]:
    """``n`` LLM-like chunks, one every ``delay`` seconds."""
    for _ in range(n):
        await asyncio.sleep(delay)
        yield TOKEN
