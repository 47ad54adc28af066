"""Response headers: encoding them for ASGI, and saying that a response varies with ``Accept``.

Every response the library sends encodes its headers here, and every ``Vary: Accept`` is
added here, by merging with what the response already says rather than overwriting it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

__all__ = ["RawHeaders", "ResponseHeaders", "encode_headers", "with_vary_accept"]

RawHeaders = list[tuple[bytes, bytes]]
"""Headers as ASGI sends them: ``(name, value)`` byte pairs, names in lower case."""

ResponseHeaders = Mapping[str, str] | Sequence[tuple[bytes, bytes]]
"""Headers given to a response: names and values as text, or ASGI pairs already encoded."""


def encode_headers(headers: ResponseHeaders | None) -> RawHeaders:
    """A new ASGI header list: names lower-cased, names and values encoded as latin-1.

    Pairs that are already bytes are taken as they are (the list is copied).
    """
    if headers is None:
        return []
    if type(headers) is list:  # pairs already encoded, the common case
        return headers.copy()
    if isinstance(headers, Mapping):
        return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    return list(headers)


def with_vary_accept(headers: Iterable[tuple[bytes, bytes]] = ()) -> RawHeaders:
    """A copy of ``headers`` that says the response varies with ``Accept``.

    ``Accept`` joins the first ``Vary`` header (whatever the case of its name) unless some
    ``Vary`` header already lists it or is ``*``; without a ``Vary`` header, one is added.
    """
    merged = list(headers)
    first = -1
    for index, (name, value) in enumerate(merged):
        if name != b"vary" and (len(name) != 4 or name.lower() != b"vary"):
            continue
        for field in value.split(b","):
            field = field.strip(b" \t").lower()
            if field == b"accept" or field == b"*":
                return merged
        if first < 0:
            first = index
    if first < 0:
        merged.append((b"vary", b"Accept"))
        return merged
    name, value = merged[first]
    merged[first] = (name, value + b", Accept" if value.strip(b" \t") else b"Accept")
    return merged
