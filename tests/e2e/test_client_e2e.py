"""asgistream.client and its command line over real sockets: uvicorn serving the demo, a
proxy that cuts connections at random bytes, and servers killed and restarted mid-stream."""

from __future__ import annotations

import contextlib
import logging
import os
import pty
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from anyio.from_thread import start_blocking_portal

from asgistream.client import AsyncClient, Client, RetryError, RetryPolicy, StatusError, StreamError
from tests.e2e.sockets import balancer
from tests.server import ROOT, Server, free_port, serve

pytestmark = pytest.mark.e2e

QUICK = RetryPolicy(initial=0.005, cap=0.05, max_attempts=50)


def item(i: int) -> dict[str, Any]:
    return {"id": i, "value": f"item-{i}"}


@pytest.fixture(scope="module")
def client_server() -> Iterator[Server]:
    with serve("tests.apps.client_app:app") as server:
        yield server


# -- the demo, both modes ----------------------------------------------------------------


def test_events_items_and_batch_agree(demo_server: Server) -> None:
    with Client(demo_server.url) as client:
        events = list(client.events("/items?n=5"))
        assert [(e.event, e.id, e.json()) for e in events] == [
            ("message", str(i), item(i)) for i in range(5)
        ]
        assert client.fetch("/items?n=5") == {"items": [item(i) for i in range(5)]}
        for batch in (False, True):
            assert list(client.items("/items?n=5", batch=batch)) == [item(i) for i in range(5)]
        assert [e.id for e in client.events("/items?n=5", last_event_id="2")] == ["3", "4"]
        with pytest.raises(StatusError) as info:
            list(client.events("/items?n=oops"))
        assert (info.value.status, info.value.type) == (400, "invalid_parameter")
        with pytest.raises(StatusError):
            client.fetch("/items?n=oops")


@pytest.mark.anyio
async def test_async_client_on_the_demo(demo_server: Server) -> None:
    async with AsyncClient(demo_server.url) as client:
        events = client.events("/items?n=4")
        assert [e.json() async for e in events] == [item(i) for i in range(4)]
        assert [x async for x in client.items("/items?n=4", batch=True)] == [
            item(i) for i in range(4)
        ]
        # Leaving early and closing frees the connection at once.
        async with contextlib.aclosing(client.events("/ticker?interval=0.01")) as ticks:
            async for tick in ticks:
                assert tick.json() == {"seq": 0}
                break


# -- what servers do -------------------------------------------------------------------------


def test_statuses_error_events_done_and_204(client_server: Server) -> None:
    with Client(client_server.url, retry=QUICK) as client:
        key = f"k{random.random()}"
        started = time.monotonic()
        assert [e.json() for e in client.events(f"/flaky?key={key}&fail=2")] == [
            {"i": i} for i in range(3)
        ]
        assert time.monotonic() - started < 2
        assert list(client.items(f"/flaky?key={key}b&fail=1", batch=True)) == [
            {"i": i} for i in range(3)
        ]
        got: list[Any] = []
        with pytest.raises(StreamError) as info:
            got.extend(client.items("/broken"))
        assert got == [{"i": 0}, {"i": 1}]
        assert (info.value.type, info.value.message) == ("conflict", "The thing changed under us")
        assert [e.data for e in client.events("/done")] == ['{"i":0}', '{"i":1}', '{"i":2}']
        assert list(client.events("/gone")) == []


def test_retry_after_is_honoured(client_server: Server) -> None:
    policy = RetryPolicy(initial=0.0, jitter=0.0, cap=5.0)
    with Client(client_server.url, retry=policy) as client:
        started = time.monotonic()
        got = list(client.items(f"/flaky?key=after{random.random()}&fail=1&after=1"))
        assert got == [{"i": i} for i in range(3)]
        assert time.monotonic() - started >= 1.0


def test_read_timeout_is_per_chunk_not_per_stream(client_server: Server) -> None:
    # 3 events 0.4 s apart with heartbeats every 0.1 s: 1.2 s in all, never 0.3 s of silence.
    with Client(client_server.url, read_timeout=0.3, retry=RetryPolicy(max_attempts=1)) as c:
        assert [e.id for e in c.events("/slow?n=3&gap=0.4")] == ["0", "1", "2"]
    # The same stream without heartbeats is 0.4 s of silence: a lost connection, every time.
    policy = RetryPolicy(initial=0.0, max_attempts=2)
    with (
        Client(client_server.url, read_timeout=0.3, retry=policy) as c,
        pytest.raises(RetryError) as info,
    ):
        list(c.events("/slow-silent?n=3&gap=0.4"))
    assert type(info.value.__cause__).__name__ == "ReadTimeout"


# -- connections cut at random points --------------------------------------------------------


N_CUT = 300  # about 14 kB of events: a handful of cuts per pass at up to 3 kB per connection


@pytest.mark.anyio
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_async_client_survives_random_cuts(demo_server: Server, seed: int) -> None:
    async with (
        balancer([demo_server.port], rng=random.Random(seed), max_bytes=3000) as proxy,
        AsyncClient(f"http://127.0.0.1:{proxy.port}", retry=QUICK) as client,
    ):
        got = [e.json() async for e in client.events(f"/items?n={N_CUT}")]
    assert got == [item(i) for i in range(N_CUT)]
    assert proxy.cuts >= 3 and len(proxy.served) > proxy.cuts
    print(f"seed {seed}: {len(proxy.served)} connections, {proxy.cuts} cut, {proxy.resets} reset")


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_sync_client_survives_random_cuts(demo_server: Server, seed: int) -> None:
    with start_blocking_portal() as portal:
        manager = balancer([demo_server.port], rng=random.Random(seed), max_bytes=3000)
        with (
            portal.wrap_async_context_manager(manager) as proxy,
            Client(f"http://127.0.0.1:{proxy.port}", retry=QUICK) as client,
        ):
            got = list(client.items(f"/items?n={N_CUT}"))
    assert got == [item(i) for i in range(N_CUT)]
    assert proxy.cuts >= 3 and proxy.resets >= 1
    print(f"seed {seed}: {len(proxy.served)} connections, {proxy.cuts} cut, {proxy.resets} reset")


# -- servers killed and restarted --------------------------------------------------------


def test_server_killed_and_restarted_twice_mid_stream(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    policy = RetryPolicy(initial=0.05, cap=0.3, max_attempts=60)
    got: list[Any] = []
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(serve("examples.demo:app", port=port))]

        def restart() -> None:
            time.sleep(0.3)  # long enough for the client to find nobody listening
            servers.append(stack.enter_context(serve("examples.demo:app", port=port)))

        restarts: list[threading.Thread] = []
        with (
            caplog.at_level(logging.INFO, logger="asgistream.client"),
            Client(f"http://127.0.0.1:{port}", retry=policy) as client,
        ):
            for event in client.events("/items?n=40&delay=0.02"):
                got.append(event.json())
                if len(got) in (10, 25):
                    for thread in restarts:
                        thread.join()
                    servers[-1].process.kill()
                    servers[-1].process.wait()
                    restarts.append(threading.Thread(target=restart))
                    restarts[-1].start()
        for thread in restarts:
            thread.join()
    assert got == [item(i) for i in range(40)]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("ConnectError" in m for m in messages) >= 2, messages
    assert any("Last-Event-ID '9'" in m for m in messages), messages


@pytest.mark.anyio
async def test_server_shut_down_gracefully_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    got: list[Any] = []
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(serve("examples.demo:app", port=port))]

        def restart() -> None:
            servers[-1].stop()
            servers.append(stack.enter_context(serve("examples.demo:app", port=port)))

        policy = RetryPolicy(initial=0.05, cap=0.3, max_attempts=60)
        with caplog.at_level(logging.INFO, logger="asgistream.client"):
            async with (
                anyio.create_task_group() as group,
                AsyncClient(f"http://127.0.0.1:{port}", retry=policy) as client,
            ):
                async for event in client.events("/items?n=30&delay=0.02"):
                    got.append(event.json())
                    if len(got) == 10:
                        group.start_soon(anyio.to_thread.run_sync, restart)
    assert got == [item(i) for i in range(30)]
    assert any("shutdown" in r.getMessage() for r in caplog.records)


# -- the command line ----------------------------------------------------------------------


PYTHON_M = (sys.executable, "-m", "asgistream")
SCRIPT = (str(Path(sys.executable).with_name("asgistream")),)  # the console script


def cli(
    *args: str,
    stderr: int | None = subprocess.PIPE,
    program: tuple[str, ...] = PYTHON_M,
    path: tuple[Path, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Run the command line (``python -m asgistream`` by default) with ``path`` in front of
    ``PYTHONPATH``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (*path, ROOT)))}
    return subprocess.run(
        [*program, *args],
        capture_output=stderr is subprocess.PIPE,
        stderr=None if stderr is subprocess.PIPE else stderr,
        stdout=None if stderr is subprocess.PIPE else subprocess.PIPE,
        text=True,
        timeout=30,
        env=env,
        cwd=ROOT,
    )


def test_cli_prints_events_json_and_batch(demo_server: Server) -> None:
    url = f"{demo_server.url}/items?n=3"
    plain = cli(url)
    assert plain.returncode == 0, plain.stderr
    assert [orjson.loads(line) for line in plain.stdout.splitlines()] == [item(i) for i in range(3)]
    lines = cli(url, "--json", "--last-event-id", "0").stdout.splitlines()
    assert [orjson.loads(line) for line in lines] == [
        {"event": "message", "id": str(i), "data": item(i)} for i in (1, 2)
    ]
    batch = cli(url, "--batch")
    assert batch.returncode == 0 and batch.stdout.count("\n") > 3  # pretty-printed
    assert orjson.loads(batch.stdout) == {"items": [item(i) for i in range(3)]}
    assert (
        cli(url, "--batch", "--json").stdout
        == '{"items":' + orjson.dumps([item(i) for i in range(3)]).decode() + "}\n"
    )
    bad = cli(f"{demo_server.url}/items?n=oops")
    assert bad.returncode == 1 and bad.stdout == ""
    assert "400 invalid_parameter" in bad.stderr


@pytest.mark.parametrize("program", [PYTHON_M, SCRIPT], ids=["python -m asgistream", "script"])
def test_cli_without_httpx_names_the_extra(program: tuple[str, ...], tmp_path: Path) -> None:
    # A sitecustomize that makes `import httpx` fail as it does when httpx is not installed.
    (tmp_path / "sitecustomize.py").write_text("import sys\n\nsys.modules['httpx'] = None\n")
    assert Path(program[0]).exists(), f"{program[0]} is missing: reinstall the package"
    result = cli("http://127.0.0.1:1/items", program=program, path=(tmp_path,))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "asgistream: the command-line client needs the 'client' extra: "
        "pip install 'asgistream[client]'\n"
    )


def test_cli_prints_events_as_they_arrive(demo_server: Server) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [*PYTHON_M, f"{demo_server.url}/ticker?interval=0.3&n=3"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as process:
        assert process.stdout is not None
        first = process.stdout.readline()
        seen_at = time.monotonic()
        rest = process.stdout.read()
        assert process.wait(10) == 0
    assert time.monotonic() - seen_at >= 0.4  # the first line came before the stream ended
    assert [orjson.loads(line) for line in [first, *rest.splitlines()]] == [
        {"seq": i} for i in range(3)
    ]


def test_cli_progress_bar(client_server: Server) -> None:
    done = cli(f"{client_server.url}/job?n=4", "--progress")
    assert done.returncode == 0, done.stderr
    # Progress events are drawn, not printed; the result is printed.
    assert done.stdout.splitlines() == [
        '[result] {"status":"succeeded","progress":1.0,"result":{"steps":4}}'
    ]
    bars = done.stderr.splitlines()
    assert [bar.split("]")[1].split()[0] for bar in bars] == ["0%", "25%", "50%", "75%", "100%"]
    assert bars[2] == f"[{'#' * 15}{'.' * 15}]  50% step 3 of 4"
    as_json = cli(f"{client_server.url}/job?n=2", "--json", "--no-progress")
    assert [orjson.loads(line)["event"] for line in as_json.stdout.splitlines()] == [
        "progress",
        "progress",
        "result",
    ]
    assert as_json.stderr == ""


def test_cli_progress_bar_redraws_in_place_on_a_terminal(client_server: Server) -> None:
    controller, terminal = pty.openpty()
    try:
        done = cli(f"{client_server.url}/job?n=4", stderr=terminal)
        os.close(terminal)
        terminal = -1
        screen = b""
        with contextlib.suppress(OSError):  # EIO once the terminal side is closed and drained
            while chunk := os.read(controller, 4096):
                screen += chunk
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert done.returncode == 0
    assert screen.count(b"\r[") == 5 and b"\x1b[K" in screen and screen.endswith(b"\n")
    assert b"100% succeeded" in screen


def test_cli_usage_errors() -> None:
    bad = cli("http://127.0.0.1:1/x", "-H", "no colon")
    assert bad.returncode == 2 and "Name: value" in bad.stderr
    refused = cli("http://127.0.0.1:1/x", "--retries", "0")
    assert refused.returncode == 1 and "asgistream: error:" in refused.stderr
