"""What the client raises: every error is a :class:`ClientError`."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["ClientError", "ResumeError", "RetryError", "StatusError", "StreamError"]


class ClientError(Exception):
    """Base of every error the client raises."""


class StatusError(ClientError):
    """The server answered with an error status.

    ``body`` is the decoded JSON body (or the text, if it is not JSON); ``type`` and
    ``message`` come from an asgistream error body ``{"error": {"type", "message"}}``.
    """

    def __init__(self, status: int, body: Any, *, retry_after: float | None = None) -> None:
        self.status = status
        self.body = body
        self.retry_after = retry_after
        error = _error_object(body)
        self.type = str(error.get("type") or "http_error")
        self.message = str(error.get("message") or (body if isinstance(body, str) else ""))
        super().__init__(f"HTTP {status} {self.type}: {self.message}".rstrip(": "))


class StreamError(ClientError):
    """The server ended the stream with an ``error`` event.

    ``type`` and ``message`` are the event's; ``error`` is its whole ``"error"`` object.
    """

    def __init__(self, error: dict[str, Any]) -> None:
        self.error = error
        self.type = str(error.get("type") or "error")
        self.message = str(error.get("message") or "")
        super().__init__(f"{self.type}: {self.message}" if self.message else self.type)


class RetryError(ClientError):
    """Gave up after ``attempts`` failed attempts in a row; ``__cause__`` is the last one."""

    def __init__(self, attempts: int, last: BaseException) -> None:
        self.attempts = attempts
        self.last = last
        plural = "s" if attempts != 1 else ""
        super().__init__(f"gave up after {attempts} failed attempt{plural}: {last!r}")


class ResumeError(ClientError):
    """The connection was lost after events arrived, and the stream gave no id to resume from.

    Reconnecting would start the stream over and repeat events; pass ``replay=True`` to the
    client to allow it.
    """


def _error_object(body: Any) -> dict[str, Any]:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return error
    return {}


def error_event(data: str) -> dict[str, Any] | None:
    """The ``"error"`` object of an asgistream ``error`` event's data, or ``None``."""
    try:
        error = _error_object(orjson.loads(data))
    except orjson.JSONDecodeError:
        return None
    return error if isinstance(error.get("type"), str) else None
