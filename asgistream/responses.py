"""Plain responses for handlers that answer once: JSON and empty.

A handler of ``@app.route`` returns a dict or a list (sent as a :class:`JSONResponse`),
``None`` (a 204 :class:`Response`) or any ASGI app, these included. The dual-mode answers are
:class:`~asgistream.EventStreamResponse` and :class:`~asgistream.BatchResponse`.
"""

from __future__ import annotations

from typing import Any

import orjson

from ._headers import ResponseHeaders, encode_headers
from ._types import Receive, Scope, Send

__all__ = ["JSONResponse", "Response"]


class Response:
    """A complete response with a body of bytes."""

    def __init__(
        self,
        body: bytes = b"",
        *,
        status: int = 200,
        media_type: str | None = None,
        headers: ResponseHeaders | None = None,
    ) -> None:
        self.body = body
        self.status = status
        raw = encode_headers(None if media_type is None else {"content-type": media_type})
        raw += encode_headers(headers)
        if status not in (204, 304):
            raw.append((b"content-length", b"%d" % len(body)))
        self.headers = raw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


class JSONResponse(Response):
    """``content`` serialized with orjson."""

    def __init__(
        self, content: Any, *, status: int = 200, headers: ResponseHeaders | None = None
    ) -> None:
        super().__init__(
            orjson.dumps(content), status=status, media_type="application/json", headers=headers
        )
