"""asgistream: dual-mode ASGI endpoints.

One async generator answers either as one JSON body (batch) or as a Server-Sent Events
stream, chosen per request by content negotiation.

The names here are the ones most apps need; everything else is imported from its module:
``asgistream.middleware`` (negotiation, limits, metrics), ``asgistream.patterns`` (chat,
proxy, jobs, topics, fan-out, merge), ``asgistream.backends`` (their stores) and
``asgistream.client``. ``import asgistream`` imports none of those.
"""

from .app import App
from .batch import BatchResponse, as_list, joined_text, last_item
from .endpoint import DualEndpoint
from .errors import HTTPError
from .negotiation import Mode, negotiate
from .options import BatchOptions, StreamOptions
from .request import Request
from .responses import JSONResponse
from .sse import Event
from .streaming import EventStreamResponse

__all__ = [
    "App",
    "BatchOptions",
    "BatchResponse",
    "DualEndpoint",
    "Event",
    "EventStreamResponse",
    "HTTPError",
    "JSONResponse",
    "Mode",
    "Request",
    "StreamOptions",
    "as_list",
    "joined_text",
    "last_item",
    "negotiate",
]

__version__ = "0.1.0"
