"""The shutdown module: signals end the open streams, then do what they did before; and a
stream the server cancels still tells its client. Both event loops (hypercorn -k trio)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest

from asgistream import EventStreamResponse
from asgistream.shutdown import Shutdown
from tests.helpers import FakeClient, until
from tests.server import ROOT

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend(each_event_loop: str) -> str:
    return each_event_loop


class Stream:
    """Stands for an open stream: counts the calls of ``shutdown``."""

    def __init__(self) -> None:
        self.stopped = 0

    def shutdown(self) -> None:
        self.stopped += 1


@pytest.fixture
def sigterm() -> Iterator[list[int]]:
    """SIGTERM handled by a recording handler, as a server's would; restored afterwards."""
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    yield received
    signal.signal(signal.SIGTERM, previous)


async def test_a_signal_ends_the_streams_then_runs_the_servers_handler(
    sigterm: list[int],
) -> None:
    registry, stream = Shutdown(), Stream()
    registry.register(stream)
    server_handler = signal.getsignal(signal.SIGTERM)
    async with anyio.create_task_group() as tasks:
        await tasks.start(registry.handle_signals)
        ours = signal.getsignal(signal.SIGTERM)
        assert callable(ours) and ours is not server_handler
        signal.raise_signal(signal.SIGTERM)
        assert sigterm == [signal.SIGTERM]  # at once, as before
        await until(lambda: stream.stopped)
        assert registry.triggered
        tasks.cancel_scope.cancel()
    assert signal.getsignal(signal.SIGTERM) is server_handler
    assert callable(ours)
    ours(signal.SIGTERM, None)  # still called from a handler chained in front of it
    assert sigterm == [signal.SIGTERM] * 2
    late = Stream()
    registry.register(late)
    assert late.stopped == 1  # a stream that opens after the signal ends at once


async def test_an_ignored_signal_still_ends_the_streams() -> None:
    registry, stream = Shutdown(), Stream()
    registry.register(stream)
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        async with anyio.create_task_group() as tasks:
            await tasks.start(registry.handle_signals)
            signal.raise_signal(signal.SIGTERM)
            await until(lambda: stream.stopped)
            tasks.cancel_scope.cancel()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_off_the_main_thread_signals_are_left_alone(anyio_backend: str) -> None:
    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            await tasks.start(Shutdown().handle_signals)
            tasks.cancel_scope.cancel()

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=anyio.run, args=(main,), kwargs={"backend": anyio_backend})
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    assert signal.getsignal(signal.SIGTERM) is before


_DEFAULT_ACTION = """
import signal, sys, anyio
from asgistream.shutdown import Shutdown

class Stream:
    def shutdown(self):
        async def told():
            await anyio.sleep(0.2)  # the final message takes a while to go out
            print("told", flush=True)
            registry.unregister(self)
        tasks.start_soon(told)

async def main():
    global registry, tasks
    registry = Shutdown()
    async with anyio.create_task_group() as tasks:
        registry.register(Stream())
        await tasks.start(registry.handle_signals)
        signal.raise_signal(signal.SIGTERM)
        await anyio.sleep(5)
    print("still running", flush=True)

anyio.run(main, backend=sys.argv[1])
"""


def test_the_default_action_waits_for_the_streams_then_ends_the_process(
    anyio_backend: str,
) -> None:
    """A hypercorn worker's SIGTERM (and any under trio) had the default action: the process
    must still end by it, once its streams have told their clients."""
    done = subprocess.run(
        [sys.executable, "-c", _DEFAULT_ACTION, anyio_backend],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert done.stdout == "told\n", done.stderr


async def test_a_stream_the_server_cancels_tells_its_client() -> None:
    """hypercorn cancels the open responses once its graceful timeout has passed, daphne as it
    stops: the client still gets the final ``shutdown`` error, and the producer's ``finally``
    runs."""
    closed: list[bool] = []

    async def producer() -> AsyncIterator[Any]:
        try:
            yield {"n": 1}
            await anyio.sleep_forever()
        finally:
            closed.append(True)

    client = FakeClient()
    response = EventStreamResponse(producer())
    cancelled: list[bool] = []

    async def serve() -> None:
        try:
            await response({"type": "http"}, client.receive, client.send)
        except anyio.get_cancelled_exc_class():
            cancelled.append(True)  # the cancellation goes on once the client is told
            raise

    async with anyio.create_task_group() as server:
        server.start_soon(serve)
        await until(lambda: client.bodies)
        server.cancel_scope.cancel()
    assert cancelled == [True]
    assert closed == [True]
    assert client.status == 200
    assert client.body.endswith(
        b'event: error\ndata: {"error":{"type":"shutdown",'
        b'"message":"The server is shutting down"}}\n\n'
    )
    assert client.messages[-1]["more_body"] is False
