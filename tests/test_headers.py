"""Response headers: encoding for ASGI, and ``Vary: Accept`` merged with what is there."""

from __future__ import annotations

import pytest

from asgistream._headers import encode_headers, with_vary_accept


def test_encode_headers_lowers_names_and_encodes_latin_1() -> None:
    assert encode_headers({"X-Name": "caf\u00e9", "Cache-Control": "no-store"}) == [
        (b"x-name", b"caf\xe9"),
        (b"cache-control", b"no-store"),
    ]
    assert encode_headers(None) == []


def test_encoded_pairs_pass_through_as_a_copy() -> None:
    raw = [(b"x", b"y")]
    encoded = encode_headers(raw)
    assert encoded == raw and encoded is not raw


def test_a_header_outside_latin_1_is_refused() -> None:
    with pytest.raises(UnicodeEncodeError):
        encode_headers({"x": "\u2603"})


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ([], [(b"vary", b"Accept")]),
        ([(b"x", b"y")], [(b"x", b"y"), (b"vary", b"Accept")]),
        ([(b"vary", b"Accept-Encoding")], [(b"vary", b"Accept-Encoding, Accept")]),
        ([(b"Vary", b"Origin")], [(b"Vary", b"Origin, Accept")]),
        ([(b"vary", b"")], [(b"vary", b"Accept")]),
        ([(b"vary", b"accept")], [(b"vary", b"accept")]),
        ([(b"vary", b"Origin, ACCEPT ")], [(b"vary", b"Origin, ACCEPT ")]),
        ([(b"vary", b"*")], [(b"vary", b"*")]),
        ([(b"vary", b"Origin, *")], [(b"vary", b"Origin, *")]),
        ([(b"vary", b"Accept-Language")], [(b"vary", b"Accept-Language, Accept")]),
        (
            [(b"vary", b"Origin"), (b"vary", b"Accept")],
            [(b"vary", b"Origin"), (b"vary", b"Accept")],
        ),
        (
            [(b"vary", b"Origin"), (b"x", b"y"), (b"vary", b"Cookie")],
            [(b"vary", b"Origin, Accept"), (b"x", b"y"), (b"vary", b"Cookie")],
        ),
    ],
)
def test_with_vary_accept(
    before: list[tuple[bytes, bytes]], after: list[tuple[bytes, bytes]]
) -> None:
    headers = list(before)
    assert with_vary_accept(headers) == after
    assert headers == before  # a copy: the caller's list is left alone
