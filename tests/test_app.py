"""The app in process: lifespan hooks and state, routing, request parsing, mounting."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager

from asgistream import (
    App,
    BatchOptions,
    HTTPError,
    JSONResponse,
    Mode,
    Request,
    StreamOptions,
)
from asgistream._types import Receive, Scope, Send
from asgistream.endpoint import Endpoint
from asgistream.routing import compile_path
from tests.helpers import FakeClient, until

pytestmark = pytest.mark.anyio


def make_app() -> tuple[App, list[str]]:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        events.append("lifespan enter")
        app.state["db"] = "connected"
        yield
        events.append("lifespan exit")

    app = App(lifespan=lifespan)

    @app.on_startup
    async def startup(app: App) -> None:
        events.append("startup")

    @app.on_shutdown
    async def shutdown(app: App) -> None:
        events.append("shutdown")

    @app.route("/users/{user_id}")
    async def user(request: Request) -> dict[str, Any]:
        return {"id": request.path_params["user_id"], "db": request.state["db"]}

    @app.route("/files/{path:path}")
    async def files(request: Request) -> dict[str, Any]:
        return {"path": request.path_params["path"]}

    @app.route("/nothing", methods=["DELETE"])
    async def nothing(request: Request) -> None:
        return None

    @app.route("/teapot")
    async def teapot(request: Request) -> JSONResponse:
        return JSONResponse({"short": "stout"}, status=418, headers={"x-kind": "teapot"})

    @app.route("/boom")
    async def boom(request: Request) -> None:
        raise RuntimeError("secret")

    @app.route("/denied")
    async def denied(request: Request) -> None:
        raise HTTPError(403, "not yours")

    inner = App()

    @inner.route("/")
    async def inner_root(request: Request) -> dict[str, str]:
        return {"root_path": request.scope["root_path"], "path": request.path}

    app.mount("/inner", inner)
    return app, events


async def test_lifespan_hooks_state_and_routes() -> None:
    app, events = make_app()
    async with LifespanManager(app) as manager:
        assert events == ["lifespan enter", "startup"]
        assert app.tasks is not None
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/users/42")).json() == {"id": "42", "db": "connected"}
            assert (await client.get("/files/a/b/c.txt")).json() == {"path": "a/b/c.txt"}
            assert (await client.delete("/nothing")).status_code == 204
            teapot = await client.get("/teapot")
            assert teapot.status_code == 418 and teapot.headers["x-kind"] == "teapot"
            boom = await client.get("/boom")
            assert boom.status_code == 500 and "secret" not in boom.text
            assert (await client.get("/denied")).json()["error"]["type"] == "http_error"
            assert (await client.get("/inner")).json() == {"root_path": "/inner", "path": "/"}
            missing = await client.get("/users")
            assert missing.status_code == 404
            assert missing.json()["error"]["message"] == "No route matches /users"
            wrong = await client.post("/users/1")
            assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"
    assert events == ["lifespan enter", "startup", "shutdown", "lifespan exit"]
    with pytest.raises(RuntimeError, match="lifespan"):
        app.tasks  # noqa: B018


async def test_failing_startup_is_reported_to_the_server() -> None:
    app = App()

    @app.on_startup
    async def broken(app: App) -> None:
        raise ConnectionError("database unreachable")

    with pytest.raises(ConnectionError, match="database unreachable"):
        async with LifespanManager(app):
            pass


def test_compile_path() -> None:
    assert compile_path("/a/{x}/b").match("/a/1/b").groupdict() == {"x": "1"}  # type: ignore[union-attr]
    assert compile_path("/a/{x}").match("/a/1/2") is None
    assert compile_path("/a.b").match("/aXb") is None
    with pytest.raises(ValueError):
        compile_path("no-slash")


async def test_app_tasks_live_from_startup_until_before_shutdown_hooks() -> None:
    import anyio

    app = App()
    order: list[str] = []

    async def background() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            order.append("task cancelled")

    @app.on_startup
    async def start(app: App) -> None:
        app.tasks.start_soon(background)

    @app.on_shutdown
    async def stop(app: App) -> None:
        await anyio.sleep(0.01)  # not cancelled: the hooks run after the tasks ended
        order.append("shutdown hook")

    async with LifespanManager(app):
        await anyio.sleep(0.01)
    assert order == ["task cancelled", "shutdown hook"]


async def test_request_app_is_the_app_serving_it() -> None:
    app = App()
    seen: list[App] = []

    @app.route("/who")
    async def who(request: Request) -> None:
        seen.append(request.app)

    async def handler(request: Request) -> None:
        request.app  # noqa: B018

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/who")).status_code == 204
        # An endpoint served without an App around it has none, and says so.
        alone = httpx.ASGITransport(app=Endpoint(handler))
        async with httpx.AsyncClient(transport=alone, base_url="http://t") as bare:
            assert (await bare.get("/")).status_code == 500
    assert seen == [app]
    with pytest.raises(RuntimeError, match="no asgistream App"):
        Request({"type": "http", "headers": []}, _no_receive).app  # noqa: B018


async def _no_receive() -> dict[str, Any]:
    raise AssertionError


async def test_dual_keeps_the_users_vary_and_adds_accept_once() -> None:
    app = App()

    async def items(request: Request) -> AsyncIterator[int]:
        yield 1

    app.dual("/lower", headers={"vary": "Origin"})(items)
    app.dual("/upper", headers={"Vary": "Accept-Encoding", "X-Kind": "k"})(items)
    app.dual("/single", modes=(Mode.STREAM,), default=Mode.STREAM, headers={"vary": "Origin"})(
        items
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for accept in ("application/json", "text/event-stream"):
            r = await client.get("/lower", headers={"accept": accept})
            assert r.headers.get_list("vary") == ["Origin, Accept"]
            r = await client.get("/upper", headers={"accept": accept})
            assert r.headers.get_list("vary") == ["Accept-Encoding, Accept"]
            assert r.headers["x-kind"] == "k"
        # One mode: the answer does not vary with Accept; a 406 does, and says so.
        assert (await client.get("/single")).headers.get_list("vary") == ["Origin"]
        refused = await client.get("/single", headers={"accept": "application/json"})
        assert refused.status_code == 406
        assert refused.headers.get_list("vary") == ["Origin, Accept"]


async def test_an_error_is_logged_once_and_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    app = App()

    @app.route("/handler")
    async def handler(request: Request) -> None:
        raise RuntimeError("secret in the handler")

    @app.dual("/function")
    async def function(request: Request) -> AsyncIterator[int]:
        raise RuntimeError("secret in the producer function")

    @app.dual("/producer")
    async def producer(request: Request) -> AsyncIterator[int]:
        yield 1
        raise RuntimeError("secret in the producer")

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("secret in a mounted app")

    app.mount("/mounted", broken)
    expected = {"error": {"type": "internal_error", "message": "Internal server error"}}
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for path in ("/handler", "/function", "/producer", "/mounted"):
            caplog.clear()
            r = await client.get(path, headers={"accept": "application/json"})
            assert (r.status_code, r.json()) == (500, expected), path
            assert len(caplog.records) == 1, (path, caplog.records)
            assert caplog.records[0].name == "asgistream" and caplog.records[0].exc_info
        caplog.clear()
        r = await client.get("/producer", headers={"accept": "text/event-stream"})
        assert r.text.endswith(
            'event: error\ndata: {"error":{"type":"internal_error",'
            '"message":"Internal server error"}}\n\n'
        )
        assert "secret" not in r.text
        assert len(caplog.records) == 1


def test_options_are_typed_and_checked_when_declared() -> None:
    app = App()

    async def items(request: Request) -> AsyncIterator[int]:
        yield 1

    with pytest.raises(TypeError, match="StreamOptions"):
        app.dual("/x", stream={"heartbeat": 1})(items)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_items"):
        BatchOptions(max_items=-1)
    endpoint = app.dual("/y", stream=StreamOptions(heartbeat=0))(items)
    assert endpoint.stream.heartbeat is None  # 0 means off, stored as None
    assert endpoint.max_body_size == app.max_body_size
    assert app.dual("/z", body_timeout=None)(items).body_timeout is None


# -- lifespans the server mangles or never runs -------------------------------------------


def _scope(path: str, state: dict[str, Any] | None = None) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [],
    }
    if state is not None:
        scope["state"] = state
    return scope


def _stateful_app() -> tuple[App, list[str]]:
    """An app whose start-up opens a resource in ``app.state`` that requests and the
    shut-down hook use, and a task in ``app.tasks``."""
    app = App()
    events: list[str] = []

    @app.on_startup
    async def open_resource(app: App) -> None:
        await anyio.sleep(0.05)  # long enough for requests to arrive meanwhile
        events.append("startup")
        app.state["resource"] = "open"
        app.tasks.start_soon(anyio.sleep_forever)

    @app.on_shutdown
    async def close_resource(app: App) -> None:
        events.append(f"shutdown with {app.state['resource']}")

    @app.route("/resource")
    async def resource(request: Request) -> dict[str, Any]:
        request.state["written by a request"] = True  # its own copy
        return {"resource": request.state["resource"], "tasks": request.app.tasks is not None}

    return app, events


async def test_app_state_is_its_own_when_the_server_clears_its_state() -> None:
    # granian clears the lifespan state dict before it sends lifespan.shutdown.
    app, events = _stateful_app()
    server_state: dict[str, Any] = {}
    to_app: list[dict[str, Any]] = [{"type": "lifespan.startup"}]
    from_app: list[str] = []
    stop = anyio.Event()

    async def receive() -> dict[str, Any]:
        if to_app:
            return to_app.pop(0)
        await stop.wait()
        return {"type": "lifespan.shutdown"}

    async def send(message: Any) -> None:
        from_app.append(message["type"])

    lifespan_scope = {"type": "lifespan", "state": server_state}
    async with anyio.create_task_group() as tg:
        tg.start_soon(app, lifespan_scope, receive, send)
        await until(lambda: from_app)
        assert app.state is not server_state and app.state["resource"] == "open"
        client = FakeClient()
        await app(_scope("/resource", dict(server_state)), client.receive, client.send)
        assert json.loads(client.body) == {"resource": "open", "tasks": True}
        assert "written by a request" not in app.state
        server_state.clear()
        stop.set()
    assert from_app == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert events == ["startup", "shutdown with open"]


async def test_without_a_lifespan_the_first_requests_wait_for_one_start_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # daphne runs no lifespan: requests come first, with no state in their scope.
    app, events = _stateful_app()
    clients = [FakeClient() for _ in range(5)]
    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(app, _scope("/resource"), client.receive, client.send)
    for client in clients:
        assert json.loads(client.body) == {"resource": "open", "tasks": True}
    assert events == ["startup"]  # once, and no shut-down: nothing will ask for it
    assert "written by a request" not in app.state
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].name == "asgistream"
    assert "shut-down hooks will not run" in warnings[0].getMessage()
    later = FakeClient()
    await app(_scope("/resource"), later.receive, later.send)
    assert later.status == 200 and events == ["startup"]


async def test_without_a_lifespan_a_failed_start_up_answers_500s_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()

    @app.on_startup
    async def broken(app: App) -> None:
        await anyio.sleep(0.01)
        raise ConnectionError("secret: database unreachable")

    @app.route("/")
    async def root(request: Request) -> dict[str, Any]:
        raise AssertionError("never served")

    clients = [FakeClient() for _ in range(3)]
    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(app, _scope("/"), client.receive, client.send)
    later = FakeClient()
    await app(_scope("/"), later.receive, later.send)
    for client in [*clients, later]:
        assert client.status == 500
        assert json.loads(client.body) == {
            "error": {"type": "startup_failed", "message": "The app failed to start"}
        }
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "secret" in str(errors[0].exc_info[1])


async def test_request_state_is_made_when_first_read_and_mounted_apps_get_it() -> None:
    app = App()
    app.state["db"] = "app's"
    inner = App()
    inner.state["cache"] = "inner's"
    seen: dict[str, Any] = {}

    @app.route("/quiet")
    async def quiet(request: Request) -> None:
        seen["quiet"] = request.scope.get("state")

    @app.route("/reads")
    async def reads(request: Request) -> dict[str, Any]:
        request.state["mine"] = True
        return dict(request.state)

    @inner.route("/")
    async def inner_reads(request: Request) -> dict[str, Any]:
        return dict(request.state)

    async def foreign(scope: Scope, receive: Receive, send: Send) -> None:
        seen["foreign"] = scope["state"]
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app.mount("/inner", inner)
    app.mount("/foreign", foreign)
    app._ready = True  # as after a lifespan start-up
    server_state = {"db": "server's", "pool": 1}
    for path, expected in [
        ("/reads", {"db": "app's", "pool": 1, "mine": True}),
        ("/inner", {"db": "app's", "pool": 1, "cache": "inner's"}),
    ]:
        client = FakeClient()
        await app(_scope(path, dict(server_state)), client.receive, client.send)
        assert json.loads(client.body) == expected
    untouched = dict(server_state)
    client = FakeClient()
    await app(_scope("/quiet", untouched), client.receive, client.send)
    assert seen["quiet"] is untouched  # nothing read it: no copy was made
    client = FakeClient()
    await app(_scope("/foreign", dict(server_state)), client.receive, client.send)
    assert client.status == 204 and seen["foreign"] == {"db": "app's", "pool": 1}
    assert app.state == {"db": "app's"} and inner.state == {"cache": "inner's"}
