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
raise anything else.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from urllib.parse import parse_qsl

from ._accept import accept_weights
from ._types import Scope
from .errors import HTTPError

__all__ = ["SCOPE_KEY", "Mode", "NegotiationError", "get_mode", "negotiate", "negotiate_scope"]


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
    weights = accept_weights(accept)
    if weights is None:
        return default if default in available else _only_mode(available)
    return _choose(weights, default, available)


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
    accept: list[str] = []
    for name, value in scope.get("headers", ()):
        if name == b"accept" or (len(name) == 6 and name.lower() == b"accept"):
            accept.append(value.decode("latin-1"))
    mode = negotiate(
        scope.get("query_string", b""),
        accept or None,
        default=default,
        available=available,
    )
    scope[SCOPE_KEY] = mode
    return mode


def get_mode(scope: Scope) -> Mode | None:
    """The mode negotiated for the request in ``scope``, if any."""
    mode = scope.get(SCOPE_KEY)
    return mode if isinstance(mode, Mode) else None


def _only_mode(available: Collection[Mode]) -> Mode:
    return Mode.BATCH if Mode.BATCH in available else Mode.STREAM


def _choose(weights: tuple[int, int], default: Mode, available: Collection[Mode]) -> Mode:
    """The available mode with the highest weight; a tie goes to ``default``."""
    batch = weights[0] if Mode.BATCH in available else -1
    stream = weights[1] if Mode.STREAM in available else -1
    if batch <= 0 and stream <= 0:
        offered = [_MEDIA_TYPES[mode] for mode in _ALL_MODES if mode in available]
        raise NegotiationError(
            406,
            f"None of the media types this endpoint offers is acceptable: {', '.join(offered)}",
            type="not_acceptable",
            detail={"available": offered},
        )
    if batch == stream:  # both available, so ``default`` is one of them
        return default
    return Mode.BATCH if batch > stream else Mode.STREAM


# -- the query string ----------------------------------------------------------------------

# What each value of each parameter asks for; "auto" asks for nothing.
_FORMAT_CHOICES = {"stream": "stream", "batch": "batch", "auto": "auto"}
_STREAM_CHOICES = {"true": "stream", "1": "stream", "": "stream", "false": "batch", "0": "batch"}


def _query_mode(query_string: bytes | str, available: Collection[Mode]) -> Mode | None:
    """The mode the query string asks for explicitly, if any."""
    # A parameter's name is either spelled out or hidden behind percent-encoding.
    if isinstance(query_string, bytes):
        if not (b"format" in query_string or b"stream" in query_string or b"%" in query_string):
            return None
        query = query_string.decode("latin-1")
    elif "format" in query_string or "stream" in query_string or "%" in query_string:
        query = query_string
    else:
        return None

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
