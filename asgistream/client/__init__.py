"""A client for dual-mode endpoints that never loses an event.

Reads a Server-Sent Events stream (parsed per the WHATWG rules) and reconnects after a lost
connection or a retryable status, sending ``Last-Event-ID`` and honouring the server's
``retry:`` hint, with exponential backoff, jitter and a cap; or fetches the same endpoint's
batch answer in one call. Needs httpx: ``pip install 'asgistream[client]'``.
"""

from __future__ import annotations

try:
    import httpx  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    # Named like the missing module, so that ``exc.name == "httpx"`` tells what is missing.
    raise ModuleNotFoundError(
        "asgistream.client needs httpx: pip install 'asgistream[client]'", name="httpx"
    ) from exc

from .errors import ClientError, ResumeError, RetryError, StatusError, StreamError
from .events import EventParser, ServerSentEvent
from .http import DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, DONE, AsyncClient, Client
from .retry import DEFAULT_RETRY, RETRYABLE_STATUSES, RetryPolicy

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_RETRY",
    "DONE",
    "RETRYABLE_STATUSES",
    "AsyncClient",
    "Client",
    "ClientError",
    "EventParser",
    "ResumeError",
    "RetryError",
    "RetryPolicy",
    "ServerSentEvent",
    "StatusError",
    "StreamError",
]
