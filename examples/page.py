"""The demo's page: a live stream and a batch fetch of one endpoint, side by side.

``static/index.html`` streams ``/items`` with ``EventSource`` next to a ``fetch`` of the same
URL as one JSON batch, streams chat tokens from ``POST /v1/chat/completions`` with ``fetch``
(``EventSource`` can only GET) and shows a job's progress from ``/jobs/{id}``. It uses no
library and no build step. Browsers ask for HTML (``wants_html``); the demo serves them this
page at ``/`` and everyone else its JSON index.
"""

from __future__ import annotations

from pathlib import Path

from asgistream import App, Request
from asgistream.responses import Response

__all__ = ["PAGE_PATH", "install", "page", "page_response", "wants_html"]

PAGE_PATH = Path(__file__).with_name("static") / "index.html"


def page_response() -> Response:
    """The page, read anew each time so that edits show on reload."""
    return Response(
        PAGE_PATH.read_bytes(),
        media_type="text/html; charset=utf-8",
        headers={"cache-control": "no-cache", "vary": "Accept"},
    )


async def page(request: Request) -> Response:
    """A route handler that answers with the page."""
    return page_response()


def install(app: App, *, path: str = "/page") -> None:
    """Serve the page on ``path`` (the demo also serves it at ``/`` to browsers)."""
    app.route(path)(page)


def wants_html(request: Request) -> bool:
    """Whether ``Accept`` names ``text/html`` with a weight above zero, as browsers do when
    they load a page (``*/*`` alone does not count: curl sends it)."""
    for member in request.headers.get("accept", "").split(","):
        media_type, *params = (part.strip().lower() for part in member.split(";"))
        if media_type == "text/html":
            return all(_weight(param) != 0.0 for param in params)
    return False


def _weight(param: str) -> float | None:
    """The value of a ``q=`` parameter (``None`` for other parameters and bad values)."""
    name, _, value = param.partition("=")
    if name.strip() != "q":
        return None
    try:
        return float(value)
    except ValueError:
        return None
