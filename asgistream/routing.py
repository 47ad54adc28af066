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
from .errors import HTTPError, send_error

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

    def __post_init__(self) -> None:
        self.methods = frozenset(m.upper() for m in self.methods)
        self.pattern = compile_path(self.path)


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
        path: str = scope["path"]
        allowed: set[str] = set()
        for route in self.routes:
            if isinstance(route, Mount):
                prefix = route.prefix
                if path == prefix or path.startswith(prefix + "/"):
                    child = dict(scope)
                    child["path"] = path[len(prefix) :] or "/"
                    child["root_path"] = scope.get("root_path", "") + prefix
                    await route.app(child, receive, send)
                    return
                continue
            match = route.pattern.match(path)
            if match is None:
                continue
            if scope["method"] not in route.methods:
                allowed.update(route.methods)
                continue
            scope["path_params"] = match.groupdict()
            scope["route"] = route.path
            await route.endpoint(scope, receive, send)
            return
        if allowed:
            methods = ", ".join(sorted(allowed))
            await send_error(
                send,
                HTTPError(
                    405,
                    f"Method {scope['method']} is not allowed here; allowed: {methods}",
                    detail={"allowed": sorted(allowed)},
                    headers={"allow": methods},
                ),
            )
            return
        await send_error(send, HTTPError(404, f"No route matches {path}"))
