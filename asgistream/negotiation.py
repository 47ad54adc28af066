"""Content negotiation: does a request want one JSON body (batch) or an SSE stream?

The step of the data path after routing: a :class:`~asgistream.DualEndpoint` calls
:func:`negotiate_scope` before it runs its producer (or
:class:`~asgistream.middleware.negotiation.NegotiationMiddleware` already did, for any ASGI
app). This module knows headers and query strings and nothing of events. The decision, in order
of precedence:

1. ``?format=stream|batch|auto`` (``auto`` defers to the next rule);
2. ``?stream=true|false|1|0`` (present without a value, ``?stream`` means true);
3. the ``Accept`` header, weighed as RFC 9110 §12.5.1 says (by :mod:`asgistream._accept`),
   where batch is ``application/json`` and stream is ``text/event-stream`` (both
   ``charset=utf-8``);
4. the endpoint's default.

A bad parameter is a 400 and an ``Accept`` header that rules out every mode the endpoint offers
is a 406, both raised as :class:`NegotiationError`. Nothing in a header or a query string can
raise anything else. A :class:`Negotiator` (one per endpoint, one per middleware) makes the same
decision and remembers it for the ``Accept`` values it has seen.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Sequence
from urllib.parse import parse_qsl

from ._accept import accept_weights
from ._types import Scope
from .errors import HTTPError

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "SCOPE_KEY",
    "Mode",
    "NegotiationError",
    "Negotiator",
    "get_mode",
    "negotiate",
    "negotiate_scope",
]


class Mode(enum.StrEnum):
    """How an endpoint answers: one JSON body, or a stream of Server-Sent Events."""

    BATCH = "batch"
    STREAM = "stream"


SCOPE_KEY = "asgistream.mode"
"""The ASGI scope key under which the negotiated :class:`Mode` is stored."""

_ALL_MODES: tuple[Mode, ...] = (Mode.BATCH, Mode.STREAM)
_MEDIA_TYPES = {Mode.BATCH: "application/json", Mode.STREAM: "text/event-stream"}

_FORMAT_VALUES = ("stream", "batch", "auto")
_STREAM_VALUES = ("true", "false", "1", "0")


class NegotiationError(HTTPError):
    """The request asks for something the endpoint cannot answer: a 400 or a 406.

    A 400 (``invalid_parameter``) names the ``param`` and lists the ``accepted`` values; a 406
    (``not_acceptable``) lists the media types that are ``available``.
    """


# -- the decision --------------------------------------------------------------------------


def negotiate(
    query_string: bytes | str,
    accept: Sequence[str] | str | None,
    *,
    default: Mode = Mode.BATCH,
    available: Collection[Mode] = _ALL_MODES,
) -> Mode:
    """Decide the mode of one request from its query string and its ``Accept`` values.

    ``accept`` is one header value, or several (combined as one comma-separated list), or
    ``None`` when there is no ``Accept`` header. ``default`` answers when the request expresses
    no preference (or a tie); if the endpoint does not offer it, the mode it does offer does.

    Raises :class:`NegotiationError`: 400 for a bad ``format``/``stream`` parameter or one that
    asks for a mode not in ``available``, 406 when ``Accept`` rules out every available mode.
    """
    if not available:
        raise ValueError("an endpoint must offer at least one mode")
    if query_string:
        requested = _query_mode(query_string, available)
        if requested is not None:
            return requested
    return _decide(accept_weights(accept), default, available)


def negotiate_scope(
    scope: Scope, *, default: Mode = Mode.BATCH, available: Collection[Mode] = _ALL_MODES
) -> Mode:
    """The mode of the request in ``scope``, stored under :data:`SCOPE_KEY`.

    A mode already in the scope (put there by :class:`NegotiationMiddleware`) is kept if the
    endpoint offers it; otherwise the request is negotiated against ``available`` here, which
    raises :class:`NegotiationError` just as :func:`negotiate` does.
    """
    stored = scope.get(SCOPE_KEY)
    if isinstance(stored, Mode) and stored in available:
        return stored
    header = _accept_header(scope)
    accept = None if header is None else header.decode("latin-1")
    mode = negotiate(scope.get("query_string", b""), accept, default=default, available=available)
    scope[SCOPE_KEY] = mode
    return mode


DEFAULT_CACHE_SIZE = 64
"""``Accept`` values whose decision a :class:`Negotiator` remembers."""

_CACHED_LENGTH = 512  # longer Accept values are weighed every time, so the cache stays small


class Negotiator:
    """:func:`negotiate_scope` for one endpoint's ``default`` and ``available`` modes, which
    remembers the decision for the last ``cache_size`` distinct ``Accept`` values it weighed.

    Clients send few distinct ``Accept`` values, so a request is usually decided by one
    lookup; the decision is exactly :func:`negotiate`'s.
    """

    __slots__ = ("_decisions", "_fallback", "available", "cache_size", "default")

    def __init__(
        self,
        *,
        default: Mode = Mode.BATCH,
        available: Collection[Mode] = _ALL_MODES,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        if not available:
            raise ValueError("an endpoint must offer at least one mode")
        self.default = Mode(default)
        self.available = tuple(Mode(mode) for mode in available)
        self.cache_size = cache_size
        self._fallback = self.default if self.default in self.available else _only_mode(available)
        # Accept value -> the mode it chooses, or None where it rules out every mode (406).
        self._decisions: dict[bytes, Mode | None] = {}

    def __call__(self, scope: Scope) -> Mode:
        """The mode of the request in ``scope``, stored under :data:`SCOPE_KEY`."""
        stored = scope.get(SCOPE_KEY)
        if stored is not None and isinstance(stored, Mode) and stored in self.available:
            return stored
        query_string = scope.get("query_string")
        mode = _query_mode(query_string, self.available) if query_string else None
        if mode is None:
            mode = self._by_accept(scope)
        scope[SCOPE_KEY] = mode
        return mode

    def _by_accept(self, scope: Scope) -> Mode:
        # The header's bytes are the key, as they come: most requests are then decided
        # without decoding anything.
        header = _accept_header(scope)
        if header is None:
            return self._fallback
        decisions = self._decisions
        try:
            decision = decisions[header]
        except KeyError:
            decision = self._weigh(header.decode("latin-1"))
            if self.cache_size > 0 and len(header) <= _CACHED_LENGTH:
                if len(decisions) >= self.cache_size:
                    del decisions[next(iter(decisions))]  # the oldest goes
                decisions[header] = decision
        if decision is None:
            raise _not_acceptable(self.available)
        return decision

    def _weigh(self, header: str) -> Mode | None:
        try:
            return _decide(accept_weights(header), self.default, self.available)
        except NegotiationError:
            return None


def _accept_header(scope: Scope) -> bytes | None:
    """The request's ``Accept`` header as it came, several lines joined by commas (one
    comma-separated list, as RFC 9110 combines them); ``None`` if it has none."""
    header: bytes | None = None
    for name, value in scope.get("headers", ()):
        if name == b"accept" or (len(name) == 6 and name.lower() == b"accept"):
            header = value if header is None else header + b"," + value
    if header is not None and type(header) is not bytes:
        header = bytes(header)  # a bytearray from some middleware: not hashable
    return header


def get_mode(scope: Scope) -> Mode | None:
    """The mode negotiated for the request in ``scope``, if any."""
    mode = scope.get(SCOPE_KEY)
    return mode if isinstance(mode, Mode) else None


def _only_mode(available: Collection[Mode]) -> Mode:
    return Mode.BATCH if Mode.BATCH in available else Mode.STREAM


def _decide(weights: tuple[int, int] | None, default: Mode, available: Collection[Mode]) -> Mode:
    """The mode ``Accept``'s weights choose; without an ``Accept``, ``default`` if offered."""
    if weights is None:
        return default if default in available else _only_mode(available)
    return _choose(weights, default, available)


def _choose(weights: tuple[int, int], default: Mode, available: Collection[Mode]) -> Mode:
    """The available mode with the highest weight; a tie goes to ``default``."""
    batch = weights[0] if Mode.BATCH in available else -1
    stream = weights[1] if Mode.STREAM in available else -1
    if batch <= 0 and stream <= 0:
        raise _not_acceptable(available)
    if batch == stream:  # both available, so ``default`` is one of them
        return default
    return Mode.BATCH if batch > stream else Mode.STREAM


def _not_acceptable(available: Collection[Mode]) -> NegotiationError:
    offered = [_MEDIA_TYPES[mode] for mode in _ALL_MODES if mode in available]
    return NegotiationError(
        406,
        f"None of the media types this endpoint offers is acceptable: {', '.join(offered)}",
        type="not_acceptable",
        detail={"available": offered},
    )


# -- the query string ----------------------------------------------------------------------

_MAY_NAME_A_MODE = re.compile("format|stream|%")
_MAY_NAME_A_MODE_BYTES = re.compile(b"format|stream|%")

# What each value of each parameter asks for; "auto" asks for nothing.
_FORMAT_CHOICES = {"stream": "stream", "batch": "batch", "auto": "auto"}
_STREAM_CHOICES = {"true": "stream", "1": "stream", "": "stream", "false": "batch", "0": "batch"}


def _query_mode(query_string: bytes | str, available: Collection[Mode]) -> Mode | None:
    """The mode the query string asks for explicitly, if any."""
    # A parameter's name is either spelled out or hidden behind percent-encoding. (One
    # search: ``in`` on bytes first tries its operand as an int, which costs more than this.)
    if isinstance(query_string, bytes):
        if _MAY_NAME_A_MODE_BYTES.search(query_string) is None:
            return None
        query = query_string.decode("latin-1")
    elif _MAY_NAME_A_MODE.search(query_string) is None:
        return None
    else:
        query = query_string

    format_choice = stream_choice = None
    for name, value in parse_qsl(query, keep_blank_values=True, errors="replace"):
        if name == "format":
            format_choice = _choice(name, value, format_choice, _FORMAT_CHOICES, _FORMAT_VALUES)
        elif name == "stream":
            stream_choice = _choice(name, value, stream_choice, _STREAM_CHOICES, _STREAM_VALUES)

    for name, choice in (("format", format_choice), ("stream", stream_choice)):
        if choice is None or choice == "auto":
            continue
        mode = Mode(choice)
        if mode not in available:
            raise _unavailable(name, mode, available)
        return mode
    return None


def _choice(
    name: str,
    value: str,
    previous: str | None,
    choices: dict[str, str],
    accepted: tuple[str, ...],
) -> str:
    """What one occurrence of a parameter asks for, checked against earlier occurrences."""
    choice = choices.get(value.strip().lower())
    if choice is None:
        raise NegotiationError(
            400,
            f"Invalid value {_shorten(value)} for ?{name}: expected one of {', '.join(accepted)}",
            type="invalid_parameter",
            detail={"param": name, "accepted": list(accepted)},
        )
    if previous is not None and previous != choice:
        raise NegotiationError(
            400,
            f"?{name} is given more than once with conflicting values",
            type="invalid_parameter",
            detail={"param": name, "accepted": list(accepted)},
        )
    return choice


def _unavailable(name: str, mode: Mode, available: Collection[Mode]) -> NegotiationError:
    offered = [m for m in _ALL_MODES if m in available]
    if name == "format":
        accepted = [*(m.value for m in offered), "auto"]
    else:
        accepted = [v for v in _STREAM_VALUES if _STREAM_CHOICES[v] in offered]
    names = " or ".join(m.value for m in offered)
    return NegotiationError(
        400,
        f"This endpoint answers only in {names} mode: ?{name} cannot ask for {mode.value}",
        type="invalid_parameter",
        detail={"param": name, "accepted": accepted, "available": [m.value for m in offered]},
    )


def _shorten(value: str, limit: int = 64) -> str:
    """``value`` quoted for an error message, cut short if long."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + "..."
