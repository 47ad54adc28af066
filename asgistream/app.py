"""The application: where a request enters, and what lives as long as the server.

The data path, one module per step: :meth:`App.__call__` marks the request's scope (the app
itself, for ``request.app``; its :class:`~asgistream.shutdown.Shutdown`) and hands it to the
:class:`~asgistream.routing.Router`, which finds the endpoint (:mod:`asgistream.endpoint`).
A dual-mode endpoint negotiates the mode (:mod:`asgistream.negotiation`) and runs its producer
through :mod:`asgistream.streaming` (SSE) or :mod:`asgistream.batch` (JSON), which ``send``.
Besides requests, the app runs the lifespan: hooks, ``state``, its task group, and ending the
open streams when the server shuts down. A server that runs no lifespan (daphne) gets the
start-up anyway, run once before the first request is served; its shut-down never comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import importlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import anyio.abc
from anyio.abc import TaskGroup

from . import shutdown as _shutdown
from ._headers import ResponseHeaders
from ._types import ASGIApp, Message, Receive, Scope, Send
from .endpoint import DualEndpoint, Endpoint, Handler, ProducerFunction
from .errors import HTTPError, as_http_error, send_error
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
    server's lifespan; ``state`` is the app's own dict, shared with every request
    (``request.state``); ``tasks`` is a task group that lives as long as the app, for work
    that outlives one request.

    When no lifespan reaches the app (daphne runs none; an app mounted in another gets none),
    the start-up (``lifespan``, the start-up hooks, ``tasks``) runs once before the first
    request is served, which every request arriving meanwhile waits for, with a warning on
    the ``asgistream`` logger if the app declared any; the shut-down hooks never run there.
    If the start-up fails, it is logged once and every request gets a JSON 500.

    With ``shutdown_signals`` (the default), SIGINT/SIGTERM first end every open stream with
    a final ``event: error`` of type ``shutdown``, then do what they did before, so the server
    (or the worker signalled) exits promptly (:mod:`asgistream.shutdown`).
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
        # The start-up, once: the server's lifespan runs it, or the first request when no
        # lifespan comes. None until it begins, set when it has ended; _ready if it succeeded.
        self._started: anyio.Event | None = None
        self._ready = False
        self._own_lifespan: object = None  # the task running it when the server does not

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
        if kind == "lifespan":
            await self._run_lifespan(scope, receive, send)
            return
        if not self._ready and not await self._start_without_lifespan():
            if kind == "http":
                await send_error(send, _STARTUP_FAILED)
            return
        # Requests see the app's state over the server's, copied when first read
        # (request.scope_state): this mark is what it is made from.
        scope[APP_SCOPE_KEY] = self
        if kind == "http":
            scope[_shutdown.SCOPE_KEY] = self.shutdown
            try:
                answer, scope = self.router.resolve(scope)
                await answer(scope, receive, send)
            except Exception as exc:
                # Endpoints answer their own errors; this is a last resort for mounted apps.
                await send_error(send, as_http_error(exc, "unhandled error"))
        else:
            await self.router(scope, receive, send)

    async def _start_without_lifespan(self) -> bool:
        """Wait for the start-up, beginning it first if no lifespan has; True if it succeeded.

        The start-up runs in a task of its own (a lifespan that no server will ever ask to
        shut down), so that ``app.tasks`` outlives the request that began it.
        """
        if self._started is None:
            if self._lifespan is not None or self._startup or self._shutdown_hooks:
                logger.warning(
                    "no lifespan reached the app (the server runs none, or the app is mounted "
                    "in another): it starts before its first request, and its shut-down hooks "
                    "will not run"
                )
            self._started = anyio.Event()
            self._own_lifespan = _spawn(self._lifespan_of_its_own)
        await self._started.wait()
        return self._ready

    async def _lifespan_of_its_own(self) -> None:
        """The lifespan as a server would run it, but with no ``lifespan.shutdown`` to come."""
        to_app, from_server = anyio.create_memory_object_stream[Message](1)
        with to_app, from_server, contextlib.suppress(Exception):  # logged; requests get 500s
            to_app.send_nowait({"type": "lifespan.startup"})
            await self._run_lifespan({"type": "lifespan"}, from_server.receive, _discard)

    async def _run_lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        if self._started is None:
            self._started = anyio.Event()
        started = self._started
        phase = "startup"
        try:
            async with anyio.create_task_group() as owner:
                # The app's tasks live in a group of their own, open before the hooks run (so
                # they can use app.tasks) and closed before the shut-down hooks run.
                tasks_done = anyio.Event()
                self._tasks = await owner.start(_own_tasks, tasks_done)
                async with self._hooks():
                    if self.shutdown_signals:
                        await owner.start(self.shutdown.handle_signals)
                    self._ready = True
                    started.set()
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
            started.set()  # a start-up that failed or was cancelled: requests answer 500s
            self._tasks = None
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


_STARTUP_FAILED = HTTPError(500, "The app failed to start", type="startup_failed")


def _spawn(function: Callable[[], Coroutine[Any, Any, None]]) -> object:
    """Run ``function`` in a task that belongs to no request; return what keeps it alive."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # trio, the other backend anyio runs on
        importlib.import_module("trio").lowlevel.spawn_system_task(function)
        return None
    return loop.create_task(function())


def _single(error: Exception) -> Exception:
    """The one exception inside task-group wrappers, or ``error`` itself."""
    while isinstance(error, ExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


async def _discard(message: Message) -> None:
    return None
