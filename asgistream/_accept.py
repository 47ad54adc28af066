"""Parsing the ``Accept`` header (RFC 9110 §12.5.1) into two weights.

:func:`accept_weights` weighs the two representations asgistream offers,
``application/json`` and ``text/event-stream`` (both ``charset=utf-8``), against the media
ranges of an ``Accept`` header, as qvalues in thousandths. It knows media types, not modes:
:mod:`asgistream.negotiation` turns the weights into a decision. Malformed members are skipped;
nothing in a header can make it raise.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["accept_weights"]

# Weights (json, event-stream) for the values nearly every client sends, found without parsing.
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


def accept_weights(accept: Sequence[str] | str | None) -> tuple[int, int] | None:
    """The qvalues (in thousandths) of ``application/json`` and ``text/event-stream``.

    ``None`` means no preference: no header, or no valid media range in it.
    """
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
    Below, ``batch`` is ``application/json`` and ``stream`` is ``text/event-stream``.
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
