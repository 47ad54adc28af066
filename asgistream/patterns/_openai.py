"""OpenAI's error shape, shared by the chat-completions endpoint and the upstream proxy.

OpenAI answers every error with ``{"error": {"message", "type", "param", "code"}}``; the
official SDK maps the status to an exception class and reads ``code`` and ``param``. Before a
stream starts, an error is an HTTP status with that body (:func:`openai_error`); after it, a
``data:`` chunk holding the same object (:func:`error_chunk`), which the SDK raises as
``APIError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import HTTPError

__all__ = ["as_openai", "error_chunk", "openai_error"]


def openai_error(
    status: int,
    message: str,
    *,
    type: str | None = None,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> HTTPError:
    """An :class:`~asgistream.HTTPError` whose body has OpenAI's shape.

    ``type`` defaults to ``invalid_request_error`` below 500 and ``server_error`` from 500 on.
    """
    if type is None:
        type = "invalid_request_error" if status < 500 else "server_error"
    return HTTPError(
        status, message, type=type, detail={"param": param, "code": code}, headers=headers
    )


def as_openai(error: HTTPError) -> HTTPError:
    """An asgistream error (bad JSON, body too large, negotiation) in OpenAI's shape.

    The status, message and headers are kept; asgistream's ``type`` becomes OpenAI's ``code``.
    """
    param = error.detail.get("param")
    return openai_error(
        error.status,
        error.message,
        param=param if isinstance(param, str) else None,
        code=error.type,
        headers=error.headers,
    )


def error_chunk(error: HTTPError) -> dict[str, Any]:
    """The stream chunk that reports ``error`` after streaming began: ``{"error": {...}}``."""
    detail = {"param": None, "code": None, **error.detail}
    return {"error": {"message": error.message, "type": error.type, **detail}}
