"""Content negotiation: does a request want one JSON body (batch) or an SSE stream?

This module knows headers and query strings and nothing of events. The decision, in order of
precedence:

1. ``?format=stream|batch|auto`` (``auto`` defers to the next rule);
2. ``?stream=true|false|1|0`` (present without a value, ``?stream`` means true);
3. the ``Accept`` header, weighed as RFC 9110 §12.5.1 says, where batch is
   ``application/json`` and stream is ``text/event-stream`` (both ``charset=utf-8``);
4. the endpoint's default.

A bad parameter is a 400 and an ``Accept`` header that rules out every mode the endpoint offers
is a 406, both raised as :class:`NegotiationError`. Nothing in a header or a query string can
raise anything else.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Sequence
from urllib.parse import parse_qsl

from ._types import Scope
from .errors import HTTPError

__all__ = [
    "SCOPE_KEY",
    "Mode",
    "NegotiationError",
    "add_vary_accept",
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
    weights = _accept_weights(accept)
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


# -- the Accept header (RFC 9110 §12.5.1) --------------------------------------------------

# Weights (batch, stream) for the values nearly every client sends, found without parsing.
_COMMON_ACCEPT: dict[str, tuple[int, int]] = {
    "*/*": (1000, 1000),
    "application/json": (1000, 0),
    "text/event-stream": (0, 1000),
}

_OWS = " \t"
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# A media range with at most a weight: what nearly every member looks like.
_SIMPLE_RANGE = re.compile(
    rf"[ \t]*({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]*"
    r"(?:;[ \t]*[qQ][ \t]*=[ \t]*(0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)[ \t]*)?"
)
_TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_DIGITS = "0123456789"

# Parameters of a media range: none, only ones both representations have, or others too.
_NO_PARAMS, _OUR_PARAMS, _OTHER_PARAMS = 0, 1, 2


def _accept_weights(accept: Sequence[str] | str | None) -> tuple[int, int] | None:
    """The qvalues (in thousandths) of batch and stream, or ``None`` for no preference."""
    if accept is None:
        return None
    if isinstance(accept, str):
        header = accept
    elif len(accept) == 1:
        header = accept[0]
    elif accept:
        header = ",".join(accept)
    else:
        return None
    common = _COMMON_ACCEPT.get(header)
    if common is not None:
        return common
    return _parse_accept(header)


def _parse_accept(header: str) -> tuple[int, int] | None:
    """Weigh both representations against every media range in ``header``.

    The most specific range that matches a representation gives its weight (the highest
    weight among equally specific ones). ``None`` if no member of ``header`` is a valid range.
    """
    parsed = False
    batch_rank = stream_rank = -1
    batch_q = stream_q = 0
    for member in _split(header, ","):
        media_range = _parse_media_range(member)
        if media_range is None:
            continue
        parsed = True
        type_, subtype, params, q = media_range
        if params == _OTHER_PARAMS:
            continue
        # */* < */*;charset < type/* < type/*;charset < type/subtype < type/subtype;charset
        if type_ == "*":
            rank = 0
            batch = stream = True
        elif subtype == "*":
            rank = 2
            batch, stream = type_ == "application", type_ == "text"
        else:
            rank = 4
            batch = type_ == "application" and subtype == "json"
            stream = type_ == "text" and subtype == "event-stream"
        rank += params
        if batch and (rank > batch_rank or (rank == batch_rank and q > batch_q)):
            batch_rank, batch_q = rank, q
        if stream and (rank > stream_rank or (rank == stream_rank and q > stream_q)):
            stream_rank, stream_q = rank, q
    return (batch_q, stream_q) if parsed else None


def _parse_media_range(member: str) -> tuple[str, str, int, int] | None:
    """``(type, subtype, params, q)`` of one member, or ``None`` if it is not valid."""
    simple = _SIMPLE_RANGE.fullmatch(member)
    if simple is not None:
        type_, subtype, qvalue = simple.groups()
        type_, subtype = type_.lower(), subtype.lower()
        if type_ == "*" and subtype != "*":
            return None
        return type_, subtype, _NO_PARAMS, 1000 if qvalue is None else _thousandths(qvalue)

    semicolon = member.find(";")
    media_range = member if semicolon < 0 else member[:semicolon]
    slash = media_range.find("/")
    if slash < 0:
        return None
    type_ = media_range[:slash].strip(_OWS).lower()
    subtype = media_range[slash + 1 :].strip(_OWS).lower()
    if not _is_token(type_) or not _is_token(subtype) or (type_ == "*" and subtype != "*"):
        return None

    params = _NO_PARAMS
    q = 1000
    if semicolon >= 0:
        for param in _split(member[semicolon + 1 :], ";"):
            equals = param.find("=")
            if equals < 0:
                if param.strip(_OWS):
                    return None  # a parameter without a value
                continue  # empty parameters are allowed
            name = param[:equals].strip(_OWS).lower()
            value = param[equals + 1 :].strip(_OWS)
            if not _is_token(name):
                return None
            if name == "q":
                parsed_q = _parse_qvalue(value)
                if parsed_q is None:
                    return None
                q = parsed_q
                break  # what follows the weight are extensions, ignored
            if value[:1] == '"':
                unquoted = _unquote(value)
                if unquoted is None:
                    return None
                value = unquoted
            elif not _is_token(value):
                return None
            if name == "charset" and value.lower() == "utf-8":
                params = max(params, _OUR_PARAMS)
            else:
                params = _OTHER_PARAMS
    return type_, subtype, params, q


def _is_token(text: str) -> bool:
    # Stripping every token character from both ends leaves nothing only if all of them are.
    return bool(text) and not text.strip(_TCHARS)


def _parse_qvalue(text: str) -> int | None:
    """A qvalue in thousandths, or ``None`` if ``text`` is not one.

    Beyond the grammar of RFC 9110 §12.4.2 this takes what real clients send: a leading dot
    (``q=.2``, in Java's default Accept) and more than three decimals (cut to three).
    """
    whole, _, fraction = text.partition(".")
    if whole not in ("", "0", "1") or not (whole or fraction) or fraction.strip(_DIGITS):
        return None
    if whole == "1" and fraction.strip("0"):
        return None
    return 1000 if whole == "1" else int(fraction[:3].ljust(3, "0"))


def _thousandths(qvalue: str) -> int:
    """A valid qvalue (``0``, ``0.5``, ``1.00``...) in thousandths."""
    if qvalue[0] == "1":
        return 1000
    return int(qvalue[2:].ljust(3, "0")) if len(qvalue) > 2 else 0


def _split(text: str, separator: str) -> list[str]:
    """``text`` split on ``separator``, except inside quoted strings."""
    if '"' not in text:
        return text.split(separator)
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == separator:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _unquote(text: str) -> str | None:
    """The content of the quoted string ``text``, or ``None`` if it is not exactly one."""
    chars: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 1
            if index == len(text):
                return None
            chars.append(text[index])
        elif char == '"':
            return "".join(chars) if index == len(text) - 1 else None
        else:
            chars.append(char)
        index += 1
    return None


# -- the response --------------------------------------------------------------------------


def add_vary_accept(headers: list[tuple[bytes, bytes]]) -> None:
    """Make ``headers`` say that the response varies with ``Accept``.

    ``Accept`` joins an existing ``Vary`` header unless it is already listed or the header is
    ``*``; without a ``Vary`` header, one is added.
    """
    first = -1
    for index, (name, value) in enumerate(headers):
        if name != b"vary" and (len(name) != 4 or name.lower() != b"vary"):
            continue
        for field in value.split(b","):
            field = field.strip(b" \t").lower()
            if field == b"accept" or field == b"*":
                return
        if first < 0:
            first = index
    if first < 0:
        headers.append((b"vary", b"Accept"))
        return
    name, value = headers[first]
    headers[first] = (name, value + b", Accept" if value.strip(b" \t") else b"Accept")
