"""A streaming proxy to an upstream OpenAI-compatible server.

    uvicorn examples.chat:app --port 8000 &
    ASGISTREAM_UPSTREAM=http://127.0.0.1:8000 uvicorn examples.proxy:app --port 8001

``POST /v1/proxy/chat/completions`` forwards to ``$ASGISTREAM_UPSTREAM/v1/chat/completions``
(default ``http://127.0.0.1:$PORT``, ``PORT`` defaulting to 8000: the demo proxies to its own
mock model). Point an OpenAI client at ``base_url="http://127.0.0.1:8001/v1/proxy"``:

    curl -N http://127.0.0.1:8001/v1/proxy/chat/completions -H 'Content-Type: application/json' \\
      -d '{"model": "echo", "stream": true, "messages": [{"role": "user", "content": "Hi there"}]}'

One ``httpx.AsyncClient`` is opened with the app and closed with it; the route only borrows it.
"""

from __future__ import annotations

import os
from typing import Any

from asgistream import App, Request
from asgistream._types import ASGIApp
from asgistream.patterns.proxy import Upstream

UPSTREAM_ENV = "ASGISTREAM_UPSTREAM"
STATE_KEY = "upstream"


def upstream_url() -> str:
    """The upstream's base URL: ``$ASGISTREAM_UPSTREAM``, else this server's own port."""
    return os.environ.get(UPSTREAM_ENV) or f"http://127.0.0.1:{os.environ.get('PORT', '8000')}"


def install(
    app: App,
    *,
    path: str = "/v1/proxy/chat/completions",
    upstream_path: str = "/v1/chat/completions",
    base_url: str | None = None,
    **options: Any,
) -> None:
    """Forward ``POST path`` to ``upstream_path`` of the upstream at ``base_url``.

    ``options`` are those of :class:`~asgistream.patterns.proxy.Upstream` (limits, timeouts,
    retries).
    """

    @app.on_startup
    async def open_upstream(app: App) -> None:
        upstream = Upstream(base_url or upstream_url(), **options)
        await upstream.open()
        app.state[STATE_KEY] = upstream

    @app.on_shutdown
    async def close_upstream(app: App) -> None:
        await app.state.pop(STATE_KEY).aclose()

    @app.route(path, methods=("POST",))
    async def proxied(request: Request) -> ASGIApp:
        upstream: Upstream = request.scope["asgistream.app"].state[STATE_KEY]
        return upstream.forward(request, upstream_path)


app = App()
install(app)
