"""Routing: the step between the app and the endpoint.

The :class:`Router` matches the path (``{param}`` and ``{param:path}``) and the method to an
endpoint (:mod:`asgistream.endpoint`) or a mounted ASGI app, puts ``path_params`` in the
scope, and answers JSON 404 and 405 itself. It knows nothing of modes: negotiation happens in
the endpoint, once it is known which modes that endpoint offers.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field

from ._types import ASGIApp, Receive, Scope, Send
from .errors import HTTPError
from .request import scope_state

__all__ = ["Mount", "Route", "Router"]

_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(:path)?}")


def compile_path(path: str) -> re.Pattern[str]:
    """``/jobs/{id}`` to a pattern; ``{name}`` matches one segment, ``{name:path}`` the rest."""
    if not path.startswith("/"):
        raise ValueError(f"route paths start with '/': {path!r}")
    pattern = ""
    end = 0
    for match in _PARAM.finditer(path):
        pattern += re.escape(path[end : match.start()])
        segment = ".+" if match.group(2) else "[^/]+"
        pattern += f"(?P<{match.group(1)}>{segment})"
        end = match.end()
    pattern += re.escape(path[end:])
    return re.compile(f"^{pattern}$")


@dataclass
class Route:
    """``endpoint`` answers ``methods`` on ``path``."""

    path: str
    endpoint: ASGIApp
    methods: Collection[str] = ("GET",)
    pattern: re.Pattern[str] = field(init=False)
    static: bool = field(init=False)
    """The path has no parameters: it matches by comparison alone."""

    def __post_init__(self) -> None:
        self.methods = frozenset(m.upper() for m in self.methods)
        self.pattern = compile_path(self.path)
        self.static = _PARAM.search(self.path) is None


@dataclass
class Mount:
    """``app`` answers every path under ``prefix`` (it sees the rest as its path)."""

    prefix: str
    app: ASGIApp

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise ValueError(
                f"mount prefixes start with '/' and do not end with it: {self.prefix!r}"
            )


class Router:
    """Dispatches HTTP requests to routes and mounts, in the order they were added."""

    def __init__(self) -> None:
        self.routes: list[Route | Mount] = []

    def add_route(self, path: str, endpoint: ASGIApp, methods: Collection[str] = ("GET",)) -> None:
        self.routes.append(Route(path, endpoint, methods))

    def mount(self, prefix: str, app: ASGIApp) -> None:
        self.routes.append(Mount(prefix, app))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app, scope = self.resolve(scope)
        await app(scope, receive, send)

    def resolve(self, scope: Scope) -> tuple[ASGIApp, Scope]:
        """The app that answers the request in ``scope``, and the scope to give it.

        A route's endpoint gets ``scope`` itself, with ``path_params`` and ``route`` set; a
        mounted app gets a copy with the rest of the path; no match gets a JSON 404 or 405.
        """
        path: str = scope["path"]
        allowed: set[str] | None = None
        for route in self.routes:
            if isinstance(route, Mount):
                prefix = route.prefix
                if path == prefix or path.startswith(prefix + "/"):
                    scope_state(scope)  # a mounted app reads scope["state"] itself
                    child = dict(scope)
                    child["path"] = path[len(prefix) :] or "/"
                    child["root_path"] = scope.get("root_path", "") + prefix
                    return route.app, child
                continue
            if route.static:
                if path != route.path:
                    continue
                params: dict[str, str] = {}
            else:
                match = route.pattern.match(path)
                if match is None:
                    continue
                params = match.groupdict()
            if scope["method"] not in route.methods:
                if allowed is None:
                    allowed = set()
                allowed.update(route.methods)
                continue
            scope["path_params"] = params
            scope["route"] = route.path
            return route.endpoint, scope
        if allowed:
            methods = ", ".join(sorted(allowed))
            error = HTTPError(
                405,
                f"Method {scope['method']} is not allowed here; allowed: {methods}",
                detail={"allowed": sorted(allowed)},
                headers={"allow": methods},
            )
            return error, scope
        return HTTPError(404, f"No route matches {path}"), scope
