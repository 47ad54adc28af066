"""A streaming proxy to an upstream OpenAI-compatible server.

    uvicorn examples.chat:app --port 8000 &
    ASGISTREAM_UPSTREAM=http://127.0.0.1:8000 uvicorn examples.proxy:app --port 8001

``POST /v1/proxy/chat/completions`` forwards to ``$ASGISTREAM_UPSTREAM/v1/chat/completions``
(default ``http://127.0.0.1:$PORT``, ``PORT`` defaulting to 8000: the demo proxies to its own
mock model). Point an OpenAI client at ``base_url="http://127.0.0.1:8001/v1/proxy"``:

    curl -N http://127.0.0.1:8001/v1/proxy/chat/completions -H 'Content-Type: application/json' \\
      -d '{"model": "echo", "stream": true, "messages": [{"role": "user", "content": "Hi there"}]}'

One ``httpx.AsyncClient`` (inside the :class:`~asgistream.patterns.proxy.Upstream`) is opened
with the app and closed with it; the route only borrows it.
"""

from __future__ import annotations

import os

from asgistream import App, Request
from asgistream._types import ASGIApp
from asgistream.patterns.proxy import Upstream

UPSTREAM_ENV = "ASGISTREAM_UPSTREAM"


def upstream_url() -> str:
    """The upstream's base URL: ``$ASGISTREAM_UPSTREAM``, else this server's own port."""
    return os.environ.get(UPSTREAM_ENV) or f"http://127.0.0.1:{os.environ.get('PORT', '8000')}"


def install(
    app: App,
    upstream: Upstream | None = None,
    *,
    path: str = "/v1/proxy/chat/completions",
    upstream_path: str = "/v1/chat/completions",
) -> Upstream:
    """Forward ``POST path`` to ``upstream_path`` of ``upstream``, open while ``app`` runs.

    ``upstream`` defaults to ``Upstream(upstream_url())``; make your own to choose its limits,
    timeouts, retries (``retry=RetryPolicy(...)``) and stream options
    (``stream=StreamOptions(...)``).
    """
    target = upstream if upstream is not None else Upstream(upstream_url())

    @app.on_startup
    async def open_upstream(app: App) -> None:
        await target.open()

    @app.on_shutdown
    async def close_upstream(app: App) -> None:
        await target.aclose()

    @app.route(path, methods=("POST",))
    async def proxied(request: Request) -> ASGIApp:
        return target.forward(request, upstream_path)

    return target


app = App()
install(app)
