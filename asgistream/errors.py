"""HTTP errors with a JSON body, and the one shape every asgistream error takes.

Every error the library answers has the body ``{"error": {"type": ..., "message": ..., ...}}``
so that a client can handle all of them the same way, whichever part raised them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ._types import Receive, Scope, Send

__all__ = ["HTTPError", "error_body", "send_error"]


class HTTPError(Exception):
    """An error that becomes an HTTP response with a JSON body.

    Raise it from an endpoint (or before the first event of a stream) to answer ``status``
    with ``{"error": {"type": type, "message": message, **detail}}``.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        detail: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _DEFAULT_TYPES.get(status, "http_error")
        self.detail: Mapping[str, Any] = detail or {}
        self.headers: Mapping[str, str] = headers or {}

    def body(self) -> bytes:
        """The JSON body of this error."""
        return error_body(self.type, self.message, self.detail)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_error(send, self)


_DEFAULT_TYPES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "timeout",
    413: "payload_too_large",
    500: "internal_error",
    503: "unavailable",
    504: "timeout",
}


def error_body(type: str, message: str, detail: Mapping[str, Any] | None = None) -> bytes:
    """Encode ``{"error": {"type", "message", **detail}}`` as JSON bytes."""
    error: dict[str, Any] = {"type": type, "message": message}
    if detail:
        error.update(detail)
    return orjson.dumps({"error": error}, default=str)


async def send_error(
    send: Send, error: HTTPError, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Send ``error`` as a complete response."""
    body = error.body()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("latin-1")),
    ]
    headers.extend(
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()
    )
    if extra_headers:
        headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
