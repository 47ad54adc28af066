"""Plain responses for handlers that answer once: JSON and empty."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

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
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.body = body
        self.status = status
        raw = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
        ]
        if media_type is not None:
            raw.insert(0, (b"content-type", media_type.encode("latin-1")))
        if status not in (204, 304):
            raw.append((b"content-length", b"%d" % len(body)))
        self.headers = raw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


class JSONResponse(Response):
    """``content`` serialized with orjson."""

    def __init__(
        self, content: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(
            orjson.dumps(content), status=status, media_type="application/json", headers=headers
        )
