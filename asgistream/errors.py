"""HTTP errors with a JSON body, and the one policy for every exception a client could see.

Every error the library answers has the body ``{"error": {"type": ..., "message": ..., ...}}``
so that a client can handle all of them the same way, whichever part raised them.

:func:`as_http_error` is the policy, used wherever the library catches an exception (the app,
an endpoint, a stream, a batch): an :class:`HTTPError` is shown to the client as it is; any
other exception is logged once, with its traceback, on the ``asgistream`` logger, and the
client sees only a 500 of type ``internal_error``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

from ._headers import ResponseHeaders, encode_headers
from ._types import Receive, Scope, Send

__all__ = ["INTERNAL_ERROR_MESSAGE", "HTTPError", "as_http_error", "error_body", "send_error"]

logger = logging.getLogger("asgistream")

INTERNAL_ERROR_MESSAGE = "Internal server error"
"""All a client learns of an exception that is not an :class:`HTTPError`."""


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


def as_http_error(exc: BaseException, what: str) -> HTTPError:
    """What a client sees of ``exc``: the error policy.

    An :class:`HTTPError` is returned as it is. Anything else is logged here, once, as
    ``what`` with its traceback, and becomes a 500 ``internal_error`` that says nothing more.
    """
    if isinstance(exc, HTTPError):
        return exc
    logger.error("%s", what, exc_info=exc)
    return HTTPError(500, INTERNAL_ERROR_MESSAGE, type="internal_error")


def error_body(type: str, message: str, detail: Mapping[str, Any] | None = None) -> bytes:
    """Encode ``{"error": {"type", "message", **detail}}`` as JSON bytes."""
    error: dict[str, Any] = {"type": type, "message": message}
    if detail:
        error.update(detail)
    return orjson.dumps({"error": error}, default=str)


async def send_error(send: Send, error: HTTPError, headers: ResponseHeaders = ()) -> None:
    """Send ``error`` as a complete response, with its own headers and then ``headers``."""
    body = error.body()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        *encode_headers(error.headers),
        *encode_headers(headers),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
