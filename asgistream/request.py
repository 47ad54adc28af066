"""The request an endpoint's function is given: headers, query, path parameters, body, JSON.

Everything is read lazily from the ASGI scope and ``receive``; the body is bounded in size and
in time. ``request.app`` is the :class:`~asgistream.App` serving it, ``request.state`` the
lifespan state.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload
from urllib.parse import parse_qsl

import orjson

from ._types import Receive, Scope
from .disconnect import timeout
from .errors import HTTPError

if TYPE_CHECKING:
    from .app import App
    from .negotiation import Mode

__all__ = [
    "APP_SCOPE_KEY",
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_MAX_BODY_SIZE",
    "Headers",
    "QueryParams",
    "Request",
    "scope_state",
]

_T = TypeVar("_T")

APP_SCOPE_KEY = "asgistream.app"
"""Where an :class:`~asgistream.App` puts itself in the scope of each request it serves."""

_STATE_OF = "asgistream.state_of"
"""The app whose state ``scope["state"]`` already holds (see :func:`scope_state`)."""

DEFAULT_MAX_BODY_SIZE = 1024 * 1024
"""Bytes of request body read at most; more gives 413."""

DEFAULT_BODY_TIMEOUT = 30.0
"""Seconds a client may take to send the whole body; longer gives 408."""


class Headers(Mapping[str, str]):
    """Request headers, case-insensitive; repeated headers are joined with ``, ``."""

    __slots__ = ("_raw", "_values")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        values: dict[str, str] = {}
        for name, value in raw:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            values[key] = f"{values[key]}, {text}" if key in values else text
        self._values = values

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    @overload
    def get(self, name: str, /) -> str | None: ...
    @overload
    def get(self, name: str, /, default: str | _T) -> str | _T: ...
    def get(self, name: str, /, default: object = None) -> object:
        # Mapping's own get() raises and catches a KeyError for every absent name.
        return self._values.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def getlist(self, name: str) -> list[str]:
        """Every value of ``name``, one per header line, in order."""
        key = name.lower().encode("latin-1")
        return [v.decode("latin-1") for k, v in self._raw if k.lower() == key]

    def __repr__(self) -> str:
        return f"Headers({self._values!r})"


class QueryParams(Mapping[str, str]):
    """Query string parameters; ``q[name]`` is the first value, ``getlist`` gives all."""

    __slots__ = ("_items", "_values")

    def __init__(self, query_string: bytes | str) -> None:
        if isinstance(query_string, bytes):
            query_string = query_string.decode("latin-1")
        self._items = _parse_query(query_string)
        values: dict[str, str] = {}
        for key, value in self._items:
            values.setdefault(key, value)
        self._values = values

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    @overload
    def get(self, name: str, /) -> str | None: ...
    @overload
    def get(self, name: str, /, default: str | _T) -> str | _T: ...
    def get(self, name: str, /, default: object = None) -> object:
        # Mapping's own get() raises and catches a KeyError for every absent name.
        return self._values.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def getlist(self, name: str) -> list[str]:
        """Every value of ``name``, in order."""
        return [value for key, value in self._items if key == name]

    def __repr__(self) -> str:
        return f"QueryParams({self._items!r})"


class Request:
    """One HTTP request, read lazily from the ASGI ``scope`` and ``receive``."""

    __slots__ = ("_body", "_headers", "_query", "body_timeout", "max_body_size", "receive", "scope")

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        *,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.max_body_size = max_body_size
        self.body_timeout = body_timeout
        self._headers: Headers | None = None
        self._query: QueryParams | None = None
        self._body: bytes | None = None

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    @property
    def path(self) -> str:
        return str(self.scope["path"])

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(self.scope["headers"])
        return self._headers

    @property
    def query(self) -> QueryParams:
        if self._query is None:
            self._query = QueryParams(self.scope.get("query_string", b""))
        return self._query

    @property
    def path_params(self) -> dict[str, str]:
        params: dict[str, str] = self.scope.get("path_params", {})
        return params

    @property
    def app(self) -> App:
        """The :class:`~asgistream.App` serving this request.

        Raises ``RuntimeError`` when there is none: an endpoint mounted directly in another
        framework (Starlette, FastAPI) has no asgistream app around it.
        """
        app: App | None = self.scope.get(APP_SCOPE_KEY)
        if app is None:
            raise RuntimeError(
                "request.app: no asgistream App serves this request (the endpoint is not "
                "inside an App); reach shared objects another way, e.g. request.state"
            )
        return app

    @property
    def state(self) -> dict[str, Any]:
        """The request's copy of the lifespan state: the app's entries over the server's."""
        return scope_state(self.scope)

    @property
    def mode(self) -> Mode | None:
        """The negotiated mode of a dual-mode endpoint, if any."""
        from .negotiation import get_mode

        return get_mode(self.scope)

    @property
    def last_event_id(self) -> str | None:
        """The ``Last-Event-ID`` header a reconnecting SSE client sends, if any."""
        for name, value in self.scope["headers"]:
            if name.lower() == b"last-event-id":
                # Browsers send back the id they were given, as UTF-8.
                try:
                    return str(value.decode("utf-8"))
                except UnicodeDecodeError:
                    return str(value.decode("latin-1"))
        return None

    async def body(self) -> bytes:
        """The whole body.

        413 if it is larger than ``max_body_size``; 408 if it takes longer than
        ``body_timeout`` seconds to arrive (a client that stalls half-way holds nothing).
        """
        if self._body is not None:
            return self._body
        limit = self.max_body_size
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        chunks: list[bytes] = []
        size = 0
        try:
            async with timeout(self.body_timeout):
                while True:
                    message = await self.receive()
                    if message["type"] == "http.disconnect":
                        raise HTTPError(
                            400,
                            "The client disconnected while sending the body",
                            type="client_disconnected",
                        )
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(limit)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise HTTPError(
                408,
                f"The request body did not arrive within {self.body_timeout} s",
                detail={"limit": self.body_timeout},
            ) from None
        self._body = b"".join(chunks)
        return self._body

    async def json(self) -> Any:
        """The body parsed as JSON; 400 if it is not valid JSON."""
        body = await self.body()
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HTTPError(
                400, f"The request body is not valid JSON: {exc}", type="invalid_json"
            ) from None


def scope_state(scope: Scope) -> dict[str, Any]:
    """``scope["state"]``, made the first time it is asked for in a request an
    :class:`~asgistream.App` serves: a copy of the server's lifespan state with the app's own
    entries over it, so that what the request writes stays its own.

    Made on demand, as most requests never look at it; a request no app serves gets the
    server's state as it is.
    """
    app: App | None = scope.get(APP_SCOPE_KEY)
    if app is None:
        state: dict[str, Any] = scope.setdefault("state", {})
        return state
    if scope.get(_STATE_OF) is not app:
        server_state = scope.get("state")
        scope["state"] = {**server_state, **app.state} if server_state else app.state.copy()
        scope[_STATE_OF] = app
    merged: dict[str, Any] = scope["state"]
    return merged


def _parse_query(query: str) -> list[tuple[str, str]]:
    """``parse_qsl(query, keep_blank_values=True)``, with no decoding to do when nothing in
    ``query`` is escaped (the common case)."""
    if "%" in query or "+" in query:
        return parse_qsl(query, keep_blank_values=True, errors="replace")
    pairs: list[tuple[str, str]] = []
    for field in query.split("&"):
        if field:
            name, _, value = field.partition("=")
            pairs.append((name, value))
    return pairs


def _too_large(limit: int) -> HTTPError:
    return HTTPError(413, f"The request body is larger than {limit} bytes", detail={"limit": limit})
