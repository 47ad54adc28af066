"""Stopping each ASGI server, every way it is stopped in the field, with 20 open streams.

Each case serves ``tests/apps/servers_app.py`` and opens 20 SSE streams of ``/_paced`` (an
event every 0.1 s, forever), read concurrently by real clients over real sockets. Then the
server is stopped:

- ``main``: SIGTERM to the main process only (a container stop);
- ``group``: SIGTERM to the whole process group (systemd's default);
- ``sigint``: SIGINT to the whole process group (Ctrl-C in a terminal);
- ``worker``: SIGTERM to the worker serving the most streams (servers with worker
  processes), then, once that worker has exited, SIGTERM to the main process.

Every client must be told (a final ``event: error`` of type ``shutdown``), every producer's
``finally`` must run (recorded in a file, read once the server is gone), the server must exit
within 5 s of the signal that stops it, with nothing left of its process group, and its log
must hold no traceback (but one that CPython before 3.13 logs for hypercorn, see
``CANCELLED_CONNECTION``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import httpx_sse
import pytest

from tests.apps.servers_app import FINALLY_LOG
from tests.helpers import wait_for
from tests.servers import Running, serve_on

STREAMS = 20
EXIT_WITHIN = 5.0
"""Seconds from the signal that stops the server to the exit of its main process."""

CANCELLED_CONNECTION = re.compile(
    r"Exception in callback StreamReaderProtocol\.connection_made\.<locals>\.callback.*?"
    r"\nasyncio\.exceptions\.CancelledError\n",
    re.DOTALL,
)
"""What CPython before 3.13 logs for each connection task that hypercorn cancels once its
graceful timeout has passed (``asyncio/streams.py`` calls ``task.exception()`` on a cancelled
task; 3.13 checks ``task.cancelled()`` first): the server's own traceback, not the app's. It
comes when only hypercorn's main process is signalled: its worker learns of the shutdown from
a multiprocessing event that the app cannot see, so the open streams end (and tell their
clients) only when hypercorn cancels them."""

CASES = [
    ("uvicorn", "main"),
    ("uvicorn", "group"),
    ("uvicorn", "sigint"),
    ("uvicorn-w2", "main"),
    ("uvicorn-w2", "group"),
    ("uvicorn-w2", "worker"),
    ("uvicorn-w2", "sigint"),
    ("hypercorn", "main"),
    ("hypercorn", "group"),
    ("hypercorn", "worker"),
    ("hypercorn", "sigint"),
    ("hypercorn-w0", "main"),
    ("hypercorn-w0", "group"),
    ("hypercorn-w0", "sigint"),
    ("hypercorn-trio", "main"),
    ("hypercorn-trio", "group"),
    ("hypercorn-trio", "worker"),
    ("hypercorn-trio", "sigint"),
    ("hypercorn-trio-w0", "main"),
    ("hypercorn-trio-w0", "group"),
    ("hypercorn-trio-w0", "sigint"),
    ("granian", "main"),
    ("granian", "group"),
    ("granian", "worker"),
    ("granian", "sigint"),
    ("daphne", "main"),
    ("daphne", "group"),
    ("daphne", "sigint"),
]


@dataclass
class Reader:
    """What one client read from its stream."""

    tag: int
    pid: int = 0
    events: list[httpx_sse.ServerSentEvent] = field(default_factory=list)
    error: str = ""
    done: bool = False

    @property
    def told(self) -> bool:
        if not self.events or self.events[-1].event != "error":
            return False
        return bool(json.loads(self.events[-1].data)["error"]["type"] == "shutdown")


@pytest.fixture
def finally_log() -> Iterator[Path]:
    with tempfile.NamedTemporaryFile(prefix="asgistream-finally-", delete=False) as file:
        path = Path(file.name)
    yield path
    path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped by its parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def _read(client: httpx.AsyncClient, reader: Reader, opened: list[int]) -> None:
    try:
        async with httpx_sse.aconnect_sse(
            client, "GET", f"/_paced?tag={reader.tag}", headers={"Accept": "text/event-stream"}
        ) as source:
            async for event in source.aiter_sse():
                if not reader.events:
                    reader.pid = json.loads(event.data)["pid"]
                    opened.append(reader.tag)
                reader.events.append(event)
    except httpx.HTTPError as exc:  # the connection was cut: the reader was not told
        reader.error = repr(exc)
    finally:
        reader.done = True


async def _stop(server: Running, how: str, readers: list[Reader]) -> float | None:
    """Open the streams, stop the server ``how``; return how long its main process took to
    exit after the signal that stops it (None: still running after ``EXIT_WITHIN``)."""
    opened: list[int] = []
    exited: float | None = None
    limits = httpx.Limits(max_connections=STREAMS)
    timeout = httpx.Timeout(10, read=EXIT_WITHIN + 5)
    async with (
        httpx.AsyncClient(base_url=server.url, limits=limits, timeout=timeout) as client,
        anyio.create_task_group() as readers_group,
    ):
        for reader in readers:
            readers_group.start_soon(_read, client, reader, opened)
        with anyio.fail_after(10):
            while len(opened) < STREAMS:  # noqa: ASYNC110 (readers append, no event to wait on)
                await anyio.sleep(0.01)
        if how == "worker":
            pid, _ = Counter(reader.pid for reader in readers).most_common(1)[0]
            assert pid in server.workers(), (pid, server.workers())
            os.kill(pid, signal.SIGTERM)
            served = [reader for reader in readers if reader.pid == pid]
            with anyio.fail_after(EXIT_WITHIN):
                while _alive(pid) or not all(reader.done for reader in served):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            # Its clients were told before it exited; the other worker's streams go on.
            untold = [(r.tag, r.events[-1:], r.error) for r in served if not r.told]
            assert not untold, (untold, server.log())
            how = "main"
        signalled = time.monotonic()
        if how == "sigint":
            server.kill(signal.SIGINT, group=True)
        else:
            server.kill(signal.SIGTERM, group=how == "group")
        if await anyio.to_thread.run_sync(server.wait_exit, EXIT_WITHIN) is not None:
            exited = time.monotonic() - signalled
    return exited


@pytest.mark.parametrize(("name", "how"), CASES, ids=[f"{n}-{h}" for n, h in CASES])
def test_every_stream_is_told_and_the_server_exits(name: str, how: str, finally_log: Path) -> None:
    readers = [Reader(tag) for tag in range(STREAMS)]
    with serve_on(
        name, "tests.apps.servers_app:app", env={FINALLY_LOG: str(finally_log)}
    ) as server:
        took = anyio.run(_stop, server, how, readers)
        log = server.log()
        assert took is not None, f"{name} still running {EXIT_WITHIN} s after the signal\n{log}"
        assert wait_for(lambda: not server.group(), timeout=2), f"still running: {server.group()}"
    untold = [(r.tag, r.events[-1:], r.error) for r in readers if not r.told]
    assert not untold, (untold, log)
    finished = finally_log.read_text().split()
    assert sorted(map(int, finished)) == list(range(STREAMS)), (finished, log)
    if sys.version_info < (3, 13):
        log = CANCELLED_CONNECTION.sub("", log)
    assert "Traceback" not in log, log
