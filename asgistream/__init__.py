"""asgistream: dual-mode ASGI endpoints.

One async generator answers either as one JSON body (batch) or as a Server-Sent Events
stream, chosen per request by content negotiation.
"""

from .app import App
from .batch import (
    BatchResponse,
    Reducer,
    ReducerFactory,
    collect,
    collect_items,
    collect_last,
    collect_text,
)
from .broker import Broker
from .chat import ChatCompletions, ChatModel
from .endpoint import DualEndpoint, Endpoint
from .errors import HTTPError
from .eventlog import EventLog, MemoryEventLog
from .jobs import JobManager
from .limiter import Limiter, by_mode
from .merge import merge
from .metrics import MetricsMiddleware, PrometheusSink, Sink
from .negotiation import Mode, NegotiationError, NegotiationMiddleware, get_mode, negotiate
from .request import Headers, QueryParams, Request
from .responses import JSONResponse, Response
from .sse import Event
from .streaming import StreamingResponse

__all__ = [
    "App",
    "BatchResponse",
    "Broker",
    "ChatCompletions",
    "ChatModel",
    "DualEndpoint",
    "Endpoint",
    "Event",
    "EventLog",
    "HTTPError",
    "Headers",
    "JSONResponse",
    "JobManager",
    "Limiter",
    "MemoryEventLog",
    "MetricsMiddleware",
    "Mode",
    "NegotiationError",
    "NegotiationMiddleware",
    "PrometheusSink",
    "QueryParams",
    "Reducer",
    "ReducerFactory",
    "Request",
    "Response",
    "Sink",
    "StreamingResponse",
    "by_mode",
    "collect",
    "collect_items",
    "collect_last",
    "collect_text",
    "get_mode",
    "merge",
    "negotiate",
]

__version__ = "0.1.0"
