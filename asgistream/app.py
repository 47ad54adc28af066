"""The application: where a request enters, and what lives as long as the server.

The data path, one module per step: :meth:`App.__call__` marks the request's scope (the app
itself, for ``request.app``; its :class:`~asgistream.shutdown.Shutdown`) and hands it to the
:class:`~asgistream.routing.Router`, which finds the endpoint (:mod:`asgistream.endpoint`).
A dual-mode endpoint negotiates the mode (:mod:`asgistream.negotiation`) and runs its producer
through :mod:`asgistream.streaming` (SSE) or :mod:`asgistream.batch` (JSON), which ``send``.
Besides requests, the app runs the lifespan: hooks, ``state``, its task group, and ending the
open streams when the server shuts down.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import anyio.abc
from anyio.abc import TaskGroup

from . import shutdown as _shutdown
from ._headers import ResponseHeaders
from ._types import ASGIApp, Receive, Scope, Send
from .endpoint import DualEndpoint, Endpoint, Handler, ProducerFunction
from .errors import as_http_error, send_error
from .negotiation import Mode
from .options import BatchOptions, StreamOptions
from .request import APP_SCOPE_KEY, DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY_SIZE
from .routing import Router

__all__ = ["App"]

logger = logging.getLogger("asgistream")

Hook = Callable[["App"], Awaitable[None]]
Lifespan = Callable[["App"], AbstractAsyncContextManager[None]]


class _AppDefault(enum.Enum):
    """The app's own value of a setting (``App(max_body_size=..., body_timeout=...)``)."""

    APP = "the app's"

    def __repr__(self) -> str:
        return "<the app's>"


_APP = _AppDefault.APP


class App:
    """A minimal ASGI application.

    ``@app.dual(path)`` serves an async generator as a dual-mode endpoint;
    ``@app.route(path)`` serves a handler that answers once; ``app.mount(prefix, asgi_app)``
    embeds any ASGI app. ``on_startup``/``on_shutdown`` hooks and ``lifespan`` run with the
    server's lifespan; ``state`` is shared with every request (``request.state``); ``tasks``
    is a task group that lives as long as the app, for work that outlives one request.

    With ``shutdown_signals`` (the default), SIGINT/SIGTERM first end every open stream with
    a final ``event: error`` of type ``shutdown``, so the server can exit promptly.
    """

    def __init__(
        self,
        *,
        lifespan: Lifespan | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
        shutdown_signals: bool = True,
    ) -> None:
        self.router = Router()
        self.max_body_size = max_body_size
        self.body_timeout = body_timeout
        self.shutdown_signals = shutdown_signals
        self.state: dict[str, Any] = {}
        self.shutdown = _shutdown.Shutdown()
        self._lifespan = lifespan
        self._startup: list[Hook] = []
        self._shutdown_hooks: list[Hook] = []
        self._tasks: TaskGroup | None = None

    # -- declaring -----------------------------------------------------------------------

    def route(
        self, path: str, *, methods: Collection[str] = ("GET",)
    ) -> Callable[[Handler], Endpoint]:
        """Serve ``async def handler(request)`` on ``path``; it returns what to answer."""

        def decorate(handler: Handler) -> Endpoint:
            endpoint = Endpoint(
                handler, max_body_size=self.max_body_size, body_timeout=self.body_timeout
            )
            self.router.add_route(path, endpoint, methods)
            return endpoint

        return decorate

    def dual(
        self,
        path: str,
        *,
        methods: Collection[str] = ("GET",),
        default: Mode = Mode.BATCH,
        modes: Collection[Mode] = (Mode.BATCH, Mode.STREAM),
        headers: ResponseHeaders | None = None,
        stream: StreamOptions = StreamOptions(),
        batch: BatchOptions = BatchOptions(),
        max_body_size: int | _AppDefault = _APP,
        body_timeout: float | _AppDefault | None = _APP,
    ) -> Callable[[ProducerFunction], DualEndpoint]:
        """Serve an async generator of a request on ``path``, as a stream or a batch.

        The keywords are those of :class:`~asgistream.DualEndpoint`; ``max_body_size`` and
        ``body_timeout`` are the app's unless given.
        """

        def decorate(producer: ProducerFunction) -> DualEndpoint:
            endpoint = DualEndpoint(
                producer,
                default=default,
                modes=modes,
                headers=headers,
                stream=stream,
                batch=batch,
                max_body_size=self.max_body_size if max_body_size is _APP else max_body_size,
                body_timeout=self.body_timeout if body_timeout is _APP else body_timeout,
            )
            self.router.add_route(path, endpoint, methods)
            return endpoint

        return decorate

    def mount(self, prefix: str, app: ASGIApp) -> None:
        """Let ``app`` answer every path under ``prefix``."""
        self.router.mount(prefix, app)

    def on_startup(self, hook: Hook) -> Hook:
        """Run ``await hook(app)`` when the server starts."""
        self._startup.append(hook)
        return hook

    def on_shutdown(self, hook: Hook) -> Hook:
        """Run ``await hook(app)`` when the server stops."""
        self._shutdown_hooks.append(hook)
        return hook

    @property
    def tasks(self) -> TaskGroup:
        """The app's task group; open while the lifespan runs."""
        if self._tasks is None:
            raise RuntimeError("app.tasks is only available while the app's lifespan runs")
        return self._tasks

    # -- serving -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            scope[APP_SCOPE_KEY] = self
            scope[_shutdown.SCOPE_KEY] = self.shutdown
            try:
                await self.router(scope, receive, send)
            except Exception as exc:
                # Endpoints answer their own errors; this is a last resort for mounted apps.
                await send_error(send, as_http_error(exc, "unhandled error"))
        elif kind == "lifespan":
            await self._run_lifespan(scope, receive, send)
        else:
            await self.router(scope, receive, send)

    async def _run_lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        state = scope.get("state")
        if isinstance(state, dict):
            self.state = state
        phase = "startup"
        restore_signals = _nothing
        try:
            async with anyio.create_task_group() as owner:
                # The app's tasks live in a group of their own, open before the hooks run (so
                # they can use app.tasks) and closed before the shut-down hooks run.
                tasks_done = anyio.Event()
                self._tasks = await owner.start(_own_tasks, tasks_done)
                async with self._hooks():
                    if self.shutdown_signals:
                        restore_signals = self.shutdown.install_signal_handlers()
                    await send({"type": "lifespan.startup.complete"})
                    phase = "shutdown"
                    await receive()
                    # Streams end first, then the app's tasks, then the shut-down hooks.
                    self.shutdown.trigger()
                    self.tasks.cancel_scope.cancel()
                    await tasks_done.wait()
                owner.cancel_scope.cancel()
        except Exception as group:
            exc = _single(group)
            logger.error("lifespan %s failed", phase, exc_info=exc)
            await send(
                {"type": f"lifespan.{phase}.failed", "message": f"{type(exc).__name__}: {exc}"}
            )
            # Servers that read the message (uvicorn) stop there; others need the exception.
            raise exc from None
        finally:
            self._tasks = None
            restore_signals()
        await send({"type": "lifespan.shutdown.complete"})

    @contextlib.asynccontextmanager
    async def _hooks(self) -> AsyncIterator[None]:
        """The ``lifespan`` context around the start-up and shut-down hooks."""
        async with contextlib.AsyncExitStack() as stack:
            if self._lifespan is not None:
                await stack.enter_async_context(self._lifespan(self))
            for hook in self._startup:
                await hook(self)
            yield
            for hook in reversed(self._shutdown_hooks):
                await hook(self)


async def _own_tasks(
    done: anyio.Event, *, task_status: anyio.abc.TaskStatus[TaskGroup] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Hold the app's task group open until it is cancelled, then set ``done``."""
    try:
        async with anyio.create_task_group() as tasks:
            task_status.started(tasks)
            await anyio.sleep_forever()
    finally:
        done.set()


def _single(error: Exception) -> Exception:
    """The one exception inside task-group wrappers, or ``error`` itself."""
    while isinstance(error, ExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def _nothing() -> None:
    return None
