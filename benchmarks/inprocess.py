"""In-process A/B measurements of the streaming hot path, steady on a shared machine.

``python benchmarks/inprocess.py paced [--root DIR]``: N streams of M events driven by a
stand-in server (uvicorn's ``receive``/``send`` shape, no sockets); each event comes after an
``await`` on a future that a ticker resolves once per loop turn, so no timer or wall clock
paces the run. Prints process CPU µs per event for raw ASGI, the asgistream app and
``EventStreamResponse`` alone.

``python benchmarks/inprocess.py idle [--root DIR]``: ``tracemalloc`` bytes per idle stream
(one event, then a producer that waits forever), grouped by where each block was allocated.

``--root`` imports ``asgistream`` from another checkout (a pristine clone for the A side of
an A/B); the benchmark apps always come from this one, so both sides run the same producer.
Run the sides alternately: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

Message = dict[str, Any]
ASGIApp = Callable[..., Coroutine[Any, Any, None]]

HERE = Path(__file__).resolve().parent


class _Cycle:
    """One request as uvicorn's RequestResponseCycle offers it to the app."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.body_sent = False
        self.events = 0
        self.first = asyncio.Event()

    async def receive(self) -> Message:
        if not self.body_sent:
            self.body_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.event.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body":
            self.events += message.get("body", b"").count(b"\n\n")
            self.first.set()


def _scope(path: str) -> Message:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"accept", b"text/event-stream")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


class _Ticker:
    """A future resolved once per loop turn: every stream's next item becomes ready."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.future = self.loop.create_future()
        self.running = True
        self.loop.call_soon(self._tick)

    def _tick(self) -> None:
        done, self.future = self.future, self.loop.create_future()
        done.set_result(None)
        if self.running:
            self.loop.call_soon(self._tick)


def _apps(events: int, ticker: list[_Ticker]) -> dict[str, ASGIApp]:
    """The contenders; ``ticker`` holds the running loop's :class:`_Ticker` (empty: none yet)."""
    from asgistream import App as Asgistream
    from asgistream import EventStreamResponse
    from benchmarks.apps import common, raw

    async def producer() -> AsyncGenerator[Any, None]:
        if not ticker:
            ticker.append(_Ticker())
        for i in range(events):
            await ticker[0].future
            yield common.item(i)

    app = Asgistream()

    @app.dual("/paced")
    async def paced(request: Any) -> AsyncIterator[Any]:
        return producer()

    @app.dual("/idle")
    async def idle(request: Any) -> AsyncIterator[Any]:
        return common.idle()

    async def raw_app(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        if scope["path"] == "/idle":
            await raw.app(scope, receive, send)
        else:
            await raw._watched(producer(), receive, send)

    async def response(scope: Message, receive: Any, send: Any) -> None:
        await receive()
        source = common.idle() if scope["path"] == "/idle" else producer()
        await EventStreamResponse(source)(scope, receive, send)

    return {"raw": raw_app, "asgistream": app, "response": response}


async def _open(
    app: ASGIApp, path: str, count: int
) -> tuple[list[_Cycle], list[asyncio.Task[None]]]:
    loop = asyncio.get_running_loop()
    cycles = [_Cycle() for _ in range(count)]
    tasks = [loop.create_task(app(_scope(path), c.receive, c.send)) for c in cycles]
    return cycles, tasks


async def _paced(app: ASGIApp, streams: int, events: int) -> float:
    _, warm = await _open(app, "/paced", 1)  # the app's start-up is not what is measured
    await asyncio.gather(*warm)
    started = time.process_time()
    cycles, tasks = await _open(app, "/paced", streams)
    await asyncio.gather(*tasks)
    spent = time.process_time() - started
    assert sum(c.events for c in cycles) >= streams * events
    return spent / (streams * events) * 1e6


async def _idle(app: ASGIApp, streams: int) -> Counter[str]:
    warm, warm_tasks = await _open(app, "/idle", 20)
    await asyncio.gather(*(c.first.wait() for c in warm))
    gc.collect()
    tracemalloc.start(25)
    before = tracemalloc.take_snapshot()
    cycles, tasks = await _open(app, "/idle", streams)
    await asyncio.gather(*(c.first.wait() for c in cycles))
    await asyncio.sleep(0.1)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    parts: Counter[str] = Counter()
    for diff in after.compare_to(before, "traceback"):
        parts[_part(diff.traceback)] += diff.size_diff
    for cycle in warm + cycles:
        cycle.event.set()
    await asyncio.gather(*warm_tasks, *tasks)
    return parts


def _part(traceback: tracemalloc.Traceback) -> str:
    """The innermost frame of this script, the benchmark apps or asgistream."""
    for frame in reversed(traceback):
        name = frame.filename
        if name == __file__:
            return "stand-in server (cycle, receive, request task)"
        if "/benchmarks/apps/" in name:
            return "benchmark app and producer"
        if "/asgistream/" in name:
            return f"asgistream/{name.rsplit('/asgistream/', 1)[1]}:{frame.lineno}"
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("paced", "idle"))
    parser.add_argument("--root", type=Path, help="import asgistream from this checkout")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--events", type=int, default=500)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent))
    if args.root is not None:
        sys.path.insert(0, str(args.root.resolve()))
    import asgistream

    ticker: list[_Ticker] = []
    apps = _apps(args.events, ticker)
    print(f"asgistream from {Path(asgistream.__file__).parent}")
    if args.mode == "paced":
        for name in ("raw", "asgistream", "response"):
            ticker.clear()  # one per event loop
            per_event = asyncio.run(_paced(apps[name], args.streams, args.events))
            print(f"{name:12s} {per_event:6.2f} µs per event ({args.streams} x {args.events})")
        return
    for name in ("raw", "asgistream"):
        parts = asyncio.run(_idle(apps[name], args.streams))
        total = sum(parts.values()) / args.streams
        print(f"{name}: {total:,.0f} B per idle stream")
        for part, size in parts.most_common():
            if size / args.streams >= 16:
                print(f"  {size / args.streams:7,.0f} B  {part}")


if __name__ == "__main__":
    main()
