"""Negotiation: the query parameters, the Accept header (RFC 9110 §12.5.1) and the middleware."""

from __future__ import annotations

import itertools
import math
import random
import re
from typing import Any

import anyio
import orjson
import pytest

from asgistream._types import Message, Receive, Scope, Send
from asgistream.middleware.negotiation import NegotiationMiddleware
from asgistream.negotiation import (
    SCOPE_KEY,
    Mode,
    NegotiationError,
    Negotiator,
    get_mode,
    negotiate,
    negotiate_scope,
)
from tests.helpers import FakeClient

B, S = Mode.BATCH, Mode.STREAM
BOTH = (B, S)
NOT_ACCEPTABLE = 406


def outcome(
    query: bytes | str,
    accept: Any,
    default: Mode = B,
    available: tuple[Mode, ...] = BOTH,
) -> Mode | int:
    """The mode ``negotiate`` decides, or the status of the error it raises."""
    try:
        return negotiate(query, accept, default=default, available=available)
    except NegotiationError as exc:
        assert exc.status in (400, 406)
        return exc.status


def error_of(query: bytes | str, accept: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(NegotiationError) as info:
        negotiate(query, accept, **kwargs)
    body: dict[str, Any] = orjson.loads(info.value.body())["error"]
    return info.value.status, body


# -- the Accept header ---------------------------------------------------------------------

ACCEPT_CASES: list[tuple[str | None, Mode, Mode | int]] = [
    # no preference
    (None, B, B),
    (None, S, S),
    ("", S, S),
    ("   ", B, B),
    (" \t ", S, S),
    (";;;,,,", S, S),
    ("garbage", S, S),
    ("*/json", S, S),
    ("*", B, B),
    ("q=NaN", S, S),
    ("*/*;q=NaN", S, S),
    ("application/json;foo", S, S),
    ("app lication/json", S, S),
    ("\u00e9/\u00e9", S, S),
    # the common exact values
    ("*/*", B, B),
    ("*/*", S, S),
    ("application/json", S, B),
    ("text/event-stream", B, S),
    # q-values
    ("application/json;q=0.5, text/event-stream", B, S),
    ("application/json, text/event-stream;q=0.999", S, B),
    ("application/json;q=0.5, text/event-stream;q=0.5", S, S),
    ("application/json;q=0.5, text/event-stream;q=0.500", B, B),
    ("application/json;q=1.000, text/event-stream;q=0.999", S, B),
    ("application/json;q=0.001, text/event-stream;q=0", S, B),
    ("application/json;q=0., text/event-stream;q=1.", B, S),
    ("text/event-stream;q=0.1, text/html", B, S),
    # q=0 means not acceptable
    ("*/*;q=0", B, NOT_ACCEPTABLE),
    ("text/event-stream;q=0, */*", S, B),
    ("application/json;q=0, */*", B, S),
    ("application/json;q=0, text/event-stream;q=0", B, NOT_ACCEPTABLE),
    ("text/html", B, NOT_ACCEPTABLE),
    ("text/html, application/xml;q=0.9", S, NOT_ACCEPTABLE),
    ("text/*;q=0, application/*;q=0", S, NOT_ACCEPTABLE),
    # invalid q: the member is ignored
    ("application/json;q=2, text/event-stream;q=0.1", B, S),
    ("application/json;q=-1, text/event-stream;q=0.1", B, S),
    ("application/json;q=0.1234, text/event-stream;q=0.1", B, B),
    ("application/json;q=.5, text/event-stream;q=0.1", B, B),
    ("application/json;q=0.1239, text/event-stream;q=0.123", S, S),
    ("application/json;q=1.5, text/event-stream;q=0.1", B, S),
    ("application/json;q=NaN, text/event-stream;q=0.1", B, S),
    ("application/json;q=, text/event-stream;q=0.1", B, S),
    ("application/json;q=0.5x, text/event-stream;q=0.1", B, S),
    ('application/json;q="0.5", text/event-stream;q=0.1', B, S),
    ("application/json;q=0.\u0665, text/event-stream;q=0.1", B, S),
    ("*/*;q=NaN, text/html", S, NOT_ACCEPTABLE),
    # the most specific range supplies the weight
    ("*/*;q=0.1, text/*;q=0.5, text/event-stream;q=0.2", B, S),
    ("*/*, text/*;q=0.5, text/event-stream;q=0.2", S, B),
    ("text/*;q=0.9, application/*;q=0.8", S, S),
    ("text/*, application/json;q=0", B, S),
    ("text/event-stream;q=0.1, text/*;q=0.9, */*;q=0.5", S, B),
    ("application/*;q=0, */*", B, S),
    ("*/*;q=0, application/json", S, B),
    ("text/event-stream;charset=utf-8;q=0.3, text/event-stream;q=0.9, */*;q=0.5", S, B),
    ("text/event-stream;charset=utf-8;q=0, text/event-stream", S, NOT_ACCEPTABLE),
    ("text/event-stream;charset=utf-8;q=0, text/event-stream, */*;q=0.1", S, B),
    ("text/event-stream;charset=latin-1, */*;q=0.1", S, S),
    ("text/event-stream;charset=latin-1", S, NOT_ACCEPTABLE),
    ("application/json;charset=UTF-8;q=0.8, text/event-stream;q=0.7", S, B),
    ('application/json;charset="utf-8";q=0.8, text/event-stream;q=0.7', S, B),
    ('application/json;charset="ut\\f-8";q=0.8, text/event-stream;q=0.7', S, B),
    ("application/json;version=2, text/event-stream;q=0.1", B, S),
    ("*/*;charset=utf-8;q=0.2, */*;q=0.9", B, B),
    ("text/*;charset=utf-8;q=0.2, */*;q=0.9", B, B),
    # equally specific duplicates: the highest weight
    ("application/json;q=0, application/json;q=0.4, text/event-stream;q=0.3", S, B),
    ("text/event-stream;q=0.4, text/event-stream;q=0", B, S),
    # accept extensions after the weight are ignored
    ("application/json;q=0.5;ext=1, text/event-stream;q=0.4", S, B),
    ("application/json;q=0.5;ext, text/event-stream;q=0.4", S, B),
    ("application/json;q=0.5;;;, text/event-stream;q=0.4", S, B),
    # case and whitespace
    ("APPLICATION/JSON;Q=0.5, Text/Event-Stream;q=0.4", S, B),
    ("  text/event-stream  ;  q  =  0.9  ,\tapplication/json ; q=0.1 ", B, S),
    ("text / event-stream", B, S),
    ("\ttext/event-stream\t", B, S),
    ("TEXT/*", B, S),
    ("application/json;CHARSET=Utf-8;Q=1", S, B),
    # empty members and parameters
    (",,application/json;;,,", S, B),
    ("text/event-stream;;q=0.3;, application/json;q=0.2", B, S),
    # malformed members are ignored, the rest still counts
    ("text/event-stream;q=0.5, ;;;, garbage, */json, a/b/c, application/json;q=oops", B, S),
    ("text/event-stream;q=0.5, application/json;x", B, S),
    ('text/event-stream;q=0.5, application/json;x="unterminated', B, S),
    ('text/event-stream;q=0.5, application/json;x="a"b', B, S),
    ("text/event-stream;q=0.5, application/json;x=a b", B, S),
    # quoted strings may hide commas and semicolons
    ('application/json;foo="a,b;q=0", text/event-stream;q=0.1', B, S),
    ('application/json;charset="utf-8,";q=0.9, text/event-stream;q=0.1', B, S),
    ('text/html;x="a\\",b", text/event-stream', B, S),
    ('text/html;x="a,b", application/json', S, B),
    # real clients
    ("application/json, text/plain, */*", S, S),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8", S, S),
    # Java's default Accept: q=.2 is outside RFC 9110's grammar but must not give a 406.
    ("text/html, image/gif, image/jpeg, *; q=.2, */*; q=.2", B, B),
]


@pytest.mark.parametrize(("accept", "default", "expected"), ACCEPT_CASES)
def test_accept(accept: str | None, default: Mode, expected: Mode | int) -> None:
    assert outcome(b"", accept, default) == expected
    assert reference(accept, default, BOTH) == expected


@pytest.mark.parametrize(
    ("accept", "default", "available", "expected"),
    [
        (None, B, (S,), S),
        (None, S, (B,), B),
        ("*/*", B, (S,), S),
        ("*/*", S, (B,), B),
        ("application/json", B, (S,), NOT_ACCEPTABLE),
        ("text/event-stream", S, (B,), NOT_ACCEPTABLE),
        ("text/event-stream;q=0, */*", S, (S,), NOT_ACCEPTABLE),
        ("text/event-stream;q=0, */*", S, (B,), B),
        ("application/json, text/event-stream;q=0.001", B, (S,), S),
        ("text/event-stream, application/json;q=0.1", S, (B,), B),
        ("application/json;q=0.5, text/event-stream", B, (B, S), S),
        ("application/json;q=0.5, text/event-stream", B, [S, B], S),
        ("text/html", B, (S,), NOT_ACCEPTABLE),
    ],
)
def test_accept_against_available_modes(
    accept: str | None, default: Mode, available: tuple[Mode, ...], expected: Mode | int
) -> None:
    assert outcome(b"", accept, default, available) == expected


def test_several_accept_values_are_one_list() -> None:
    two = ["application/json;q=0.5", "text/event-stream;q=0.6"]
    assert negotiate(b"", two) is S
    assert negotiate(b"", tuple(two), default=B) is S
    assert negotiate(b"", ["text/event-stream;q=0", "*/*"], default=S) is B
    assert negotiate(b"", ["", " "], default=S) is S
    assert negotiate(b"", [], default=S) is S
    assert negotiate(b"", ["*/*"], default=S) is S
    assert negotiate(b"", ["application/json"], default=S) is B
    assert outcome(b"", ["text/html", "image/png"]) == NOT_ACCEPTABLE


def test_not_acceptable_body_lists_the_available_media_types() -> None:
    status, error = error_of(b"", "text/html")
    assert status == 406
    assert error["type"] == "not_acceptable"
    assert error["available"] == ["application/json", "text/event-stream"]
    assert "application/json" in error["message"]
    status, error = error_of(b"", "application/json", available=(S,))
    assert (status, error["available"]) == (406, ["text/event-stream"])
    status, error = error_of(b"", "*/*;q=0", available=(B,))
    assert (status, error["available"]) == (406, ["application/json"])


def test_no_modes_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="at least one mode"):
        negotiate(b"", None, available=())


# -- the query string ----------------------------------------------------------------------

QUERY_CASES: list[tuple[bytes | str, str | None, Mode | int]] = [
    (b"", "text/event-stream", S),
    (b"n=3&x=y", "text/event-stream", S),
    (b"format=stream", "application/json", S),
    (b"format=batch", "text/event-stream", B),
    (b"format=STREAM", None, S),
    (b"format=%20Batch%20", "text/event-stream", B),
    (b"format=+stream+", None, S),
    (b"format=auto", "text/event-stream", S),
    (b"format=auto", None, B),
    (b"format=auto&stream=1", "application/json", S),
    (b"stream=1&format=auto", "application/json", S),
    (b"format=batch&stream=true", None, B),
    (b"stream=true&format=batch", None, B),
    (b"format=stream&stream=false", None, S),
    (b"stream=true", "application/json", S),
    (b"stream=TRUE", None, S),
    (b"stream=1", None, S),
    (b"stream=false", "text/event-stream", B),
    (b"stream=0", "text/event-stream", B),
    (b"stream=False", "text/event-stream", B),
    (b"stream", "application/json", S),
    (b"stream=", "application/json", S),
    (b"stream=%20", "application/json", S),
    (b"n=1&stream&m=2", "application/json", S),
    (b"%66ormat=stream", "application/json", S),
    (b"%73tream=1", "application/json", S),
    (b"streaming=1&formats=x", "text/event-stream", S),
    (b"Format=xml&STREAM=maybe", "text/event-stream", S),
    (b"x=format&y=stream", "application/json", B),
    (b"format=stream&format=STREAM", None, S),
    (b"stream=1&stream=true&stream=", None, S),
    (b"stream=0&stream=false", None, B),
    ("format=stream", None, S),
    ("stream", None, S),
    ("", "text/event-stream", S),
    # the query beats even a 406 Accept
    (b"format=batch", "text/html", B),
    (b"stream=1", "*/*;q=0", S),
    (b"format=auto", "*/*;q=0", NOT_ACCEPTABLE),
    # 400s
    (b"stream=maybe", None, 400),
    (b"stream=yes", None, 400),
    (b"format=xml", None, 400),
    (b"format=", None, 400),
    (b"format", None, 400),
    (b"format=stream&stream=maybe", None, 400),
    (b"stream=1&stream=0", None, 400),
    (b"stream=true&stream=false", None, 400),
    (b"stream&stream=false", None, 400),
    (b"format=stream&format=batch", None, 400),
    (b"format=auto&format=stream", None, 400),
    (b"stream=%ff", None, 400),
    (b"format=stre%00am", None, 400),
]


@pytest.mark.parametrize(("query", "accept", "expected"), QUERY_CASES)
def test_query(query: bytes | str, accept: str | None, expected: Mode | int) -> None:
    assert outcome(query, accept) == expected


@pytest.mark.parametrize(
    ("query", "param", "accepted"),
    [
        (b"stream=maybe", "stream", ["true", "false", "1", "0"]),
        (b"format=xml", "format", ["stream", "batch", "auto"]),
        (b"format=", "format", ["stream", "batch", "auto"]),
        (b"stream=1&stream=0", "stream", ["true", "false", "1", "0"]),
        (b"format=auto&format=batch", "format", ["stream", "batch", "auto"]),
    ],
)
def test_invalid_parameter_body(query: bytes, param: str, accepted: list[str]) -> None:
    status, error = error_of(query, None)
    assert status == 400
    assert error["type"] == "invalid_parameter"
    assert error["param"] == param
    assert error["accepted"] == accepted
    assert f"?{param}" in error["message"]


def test_invalid_value_is_quoted_and_cut_short() -> None:
    _, error = error_of(b"stream=maybe", None)
    assert "'maybe'" in error["message"]
    _, error = error_of(b"stream=" + b"x" * 10_000, None)
    assert len(error["message"]) < 200
    _, error = error_of("stream=\ud800", None)  # a lone surrogate still gives valid JSON
    assert "stream" in error["message"]


@pytest.mark.parametrize(
    ("query", "available", "param", "accepted"),
    [
        (b"format=batch", (S,), "format", ["stream", "auto"]),
        (b"stream=false", (S,), "stream", ["true", "1"]),
        (b"stream=0", (S,), "stream", ["true", "1"]),
        (b"format=stream", (B,), "format", ["batch", "auto"]),
        (b"stream", (B,), "stream", ["false", "0"]),
        (b"format=auto&stream=1", (B,), "stream", ["false", "0"]),
    ],
)
def test_explicit_mode_the_endpoint_lacks_is_a_400(
    query: bytes, available: tuple[Mode, ...], param: str, accepted: list[str]
) -> None:
    status, error = error_of(query, "*/*", available=available)
    assert status == 400
    assert error["type"] == "invalid_parameter"
    assert (error["param"], error["accepted"]) == (param, accepted)
    assert error["available"] == [available[0].value]
    assert f"only in {available[0].value} mode" in error["message"]


def test_explicit_mode_the_endpoint_has() -> None:
    assert negotiate(b"format=auto", None, default=B, available=(S,)) is S
    assert negotiate(b"format=stream", "application/json", available=(S,)) is S
    assert negotiate(b"stream=0", "text/event-stream", available=(B,)) is B


# -- a reference implementation, written independently, on many Accept headers -------------

_REF_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
# RFC 9110's qvalue, plus what real clients send: a leading dot and more than three decimals.
_REF_QVALUE = re.compile(r"0(\.[0-9]*)?|\.[0-9]+|1(\.0*)?")
_REF_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_REF_REPRESENTATIONS = {B: ("application", "json"), S: ("text", "event-stream")}


def _ref_split(text: str, separator: str) -> list[str]:
    """``text`` split on ``separator`` outside (possibly unterminated) quoted strings."""
    parts = [""]
    pattern = rf'"(?:[^"\\]|\\.)*"?|[^{separator}"]+|{separator}'
    for token in re.findall(pattern, text, flags=re.DOTALL):
        if token == separator:
            parts.append("")
        else:
            parts[-1] += token
    return parts


def _ref_ranges(header: str) -> list[tuple[str, str, list[tuple[str, str]], float]]:
    """The valid media ranges of a header, each (type, subtype, params, q)."""
    ranges = []
    for member in _ref_split(header, ","):
        pieces = [piece.strip(" \t") for piece in _ref_split(member, ";")]
        if pieces[0].count("/") != 1:
            continue
        type_, subtype = (part.strip(" \t").lower() for part in pieces[0].split("/"))
        if not (_REF_TOKEN.fullmatch(type_) and _REF_TOKEN.fullmatch(subtype)):
            continue
        if type_ == "*" and subtype != "*":
            continue
        params: list[tuple[str, str]] = []
        q = 1.0
        valid = True
        for piece in pieces[1:]:
            if not piece:
                continue
            name, equals, value = piece.partition("=")
            name, value = name.strip(" \t").lower(), value.strip(" \t")
            if not equals or not _REF_TOKEN.fullmatch(name):
                valid = False
                break
            if name == "q":
                valid = bool(_REF_QVALUE.fullmatch(value))
                q = math.floor(round(float(value) * 1000, 6)) / 1000 if valid else q
                break
            quoted = _REF_QUOTED.fullmatch(value)
            if quoted:
                value = re.sub(r"\\(.)", r"\1", quoted[1])
            elif not _REF_TOKEN.fullmatch(value):
                valid = False
                break
            params.append((name, value))
        if valid:
            ranges.append((type_, subtype, params, q))
    return ranges


def reference(accept: Any, default: Mode, available: tuple[Mode, ...]) -> Mode | int:
    """What RFC 9110 §12.5.1 says, computed the slow and obvious way."""
    if accept is None:
        return default if default in available else available[0]
    header = accept if isinstance(accept, str) else ",".join(accept)
    ranges = _ref_ranges(header)
    if not ranges:
        return default if default in available else available[0]

    def weight(mode: Mode) -> float:
        best: tuple[int, bool, float] | None = None
        representation = _REF_REPRESENTATIONS[mode]
        for type_, subtype, params, q in ranges:
            if (type_, subtype) == ("*", "*"):
                level = 0
            elif (type_, subtype) == (representation[0], "*"):
                level = 1
            elif (type_, subtype) == representation:
                level = 2
            else:
                continue
            if any(name != "charset" or value.lower() != "utf-8" for name, value in params):
                continue
            key = (level, bool(params), q)
            if best is None or key > best:
                best = key
        return 0.0 if best is None else best[2]

    weights = {mode: weight(mode) for mode in available}
    top = max(weights.values())
    if top == 0:
        return NOT_ACCEPTABLE
    tied = [mode for mode, q in weights.items() if q == top]
    if default in tied:
        return default
    return B if B in tied else tied[0]


MEMBERS = [
    "*/*",
    "application/json",
    "text/event-stream",
    "text/*",
    "application/*",
    "text/html",
    "application/xml",
    "*/*;q=0",
    "application/json;q=0",
    "text/event-stream;q=0",
    "text/*;q=0.5",
    "application/*;q=0.3",
    "*/*;q=0.1",
    "application/json;q=0.9",
    "text/event-stream;q=0.9",
    "text/event-stream;q=0.90",
    "application/json;charset=utf-8",
    "text/event-stream;charset=UTF-8;q=0.2",
    "application/json;charset=latin-1",
    "text/event-stream;version=2",
    'application/json;charset="utf-8";q=0.4',
    "text/*;charset=utf-8;q=0",
    "*/*;charset=utf-8;q=0.6",
    "application/json;q=0.5;ext=1",
    "application/json;;q=0.6",
    "*/*;q=1.000",
    "*/*;q=0.",
    " TEXT/Event-Stream ; Q=0.7 ",
    "application/json;q=2",
    "application/json;q=NaN",
    "text/event-stream;q=0.1234",
    "text/event-stream;foo",
    "*/json",
    "garbage",
    "",
    'text/html;x="a,b"',
    'application/json;x="a\\",q=0";q=0.2',
    'text/event-stream;charset="utf\\-8";q=0.3',
    'text/event-stream;x="unterminated',
]


def _headers() -> list[str]:
    rng = random.Random(9110)
    headers = [", ".join(pair) for pair in itertools.product(MEMBERS, repeat=2)]
    headers += [",".join(rng.sample(MEMBERS, rng.randint(3, 6))) for _ in range(600)]
    return headers


def test_matches_the_reference_on_many_headers() -> None:
    checked = 0
    for header in _headers():
        for available in (BOTH, (B,), (S,)):
            for default in BOTH:
                expected = reference(header, default, available)
                assert outcome(b"", header, default, available) == expected, (header, default)
                checked += 1
        parts = header.split(",")
        assert outcome(b"", parts, S) == reference(parts, S, BOTH), parts
    assert checked > 10_000


def _random_member(rng: random.Random) -> str:
    def ows() -> str:
        return rng.choice(["", "", "", " ", "\t", "  "])

    type_ = rng.choice(["*", "text", "application", "TEXT", "Application", "image", "", "a b"])
    subtype = rng.choice(["*", "json", "event-stream", "JSON", "Event-Stream", "html", ""])
    member = ows() + type_ + rng.choice(["/", "/", "/", " / ", "//", ""]) + subtype + ows()
    qvalue = rng.choice(["0", "1", "0.5", "0.55", "0.555", "0.5555", "1.0", "1.01", ".5", ""])
    charset = rng.choice(["utf-8", "UTF-8", '"utf-8"', '"utf\\-8"', "latin-1", '"utf-8', ""])
    params = ["q=" + qvalue, "Q=" + qvalue, "charset=" + charset, "x=y", "", "x", 'x="a,b"']
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        member += ";" + ows() + rng.choice(params) + ows()
    return member


def test_matches_the_reference_on_random_headers() -> None:
    rng = random.Random(12)
    outcomes = set()
    for _ in range(3000):
        members = [_random_member(rng) for _ in range(rng.randint(1, 4))]
        header = ",".join(members)
        for default in BOTH:
            got = outcome(b"", header, default)
            assert got == reference(header, default, BOTH), header
            outcomes.add(got)
    assert outcomes == {B, S, NOT_ACCEPTABLE}


# -- nothing in a header or a query string gives anything but a NegotiationError ----------

HOSTILE = [
    b"",
    b"\xff\xfe\x00\x01",
    b";;;,,,",
    b"q=NaN",
    b"*/*;q=NaN",
    b"*/*;q=1e3",
    b"*/*;q=inf",
    b"*/*;q=0x1",
    b"/",
    b"//",
    b"*/*/*",
    b";q=0",
    b"=",
    b'"',
    b'*/*;a="',
    b'*/*;a="\\',
    b"\\",
    b"\x00/\x00",
    b"\xc3\xa9/\xc3\xa9",
    b"text/event-stream;q=0.5" * 1000,
    b"a/b;" * 10_000,
    b"," * 20_000,
    b"*/*;q=" + b"9" * 10_000,
]


def test_hostile_values_never_raise_anything_else() -> None:
    rng = random.Random(42)
    alphabet = b' \t,;=/*"\\q0.1abcjsontextvent-stream%&+\x00\xff\xe9'
    values = list(HOSTILE)
    values += [bytes(rng.choices(alphabet, k=rng.randint(0, 40))) for _ in range(3000)]
    values += [rng.randbytes(rng.randint(0, 40)) for _ in range(1000)]
    for value in values:
        for available in (BOTH, (B,), (S,)):
            scope = {"type": "http", "query_string": value, "headers": [(b"accept", value)]}
            try:
                assert negotiate_scope(scope, available=available) in available
            except NegotiationError as exc:
                assert exc.status in (400, 406)
                assert orjson.loads(exc.body())["error"]["type"]


# -- negotiate_scope and get_mode ----------------------------------------------------------


def http_scope(query: bytes = b"", *headers: tuple[bytes, bytes]) -> Scope:
    return {"type": "http", "path": "/", "query_string": query, "headers": list(headers)}


def test_negotiate_scope_reads_headers_and_query_and_stores_the_mode() -> None:
    scope = http_scope(b"", (b"host", b"x"), (b"accept", b"text/event-stream"))
    assert get_mode(scope) is None
    assert negotiate_scope(scope) is S
    assert scope[SCOPE_KEY] is S and get_mode(scope) is S
    scope = http_scope(b"stream=0", (b"accept", b"text/event-stream"))
    assert negotiate_scope(scope) is B and get_mode(scope) is B
    scope = http_scope(b"")
    assert negotiate_scope(scope, default=S) is S
    assert negotiate_scope({"type": "http"}, default=S) is S


def test_negotiate_scope_combines_several_accept_headers() -> None:
    scope = http_scope(
        b"",
        (b"accept", b"application/json;q=0.5"),
        (b"user-agent", b"x"),
        (b"Accept", b"text/event-stream;q=0.6"),
    )
    assert negotiate_scope(scope) is S
    scope = http_scope(b"", (b"accept", b"text/event-stream;q=0"), (b"accept", b"*/*"))
    assert negotiate_scope(scope, default=S) is B
    scope = http_scope(b"", (b"ACCEPT", b"text/html"), (b"accept", b"image/png"))
    with pytest.raises(NegotiationError) as info:
        negotiate_scope(scope)
    assert info.value.status == 406
    assert SCOPE_KEY not in scope


def test_negotiate_scope_keeps_a_stored_mode_the_endpoint_offers() -> None:
    scope = http_scope(b"", (b"accept", b"application/json"))
    scope[SCOPE_KEY] = S
    assert negotiate_scope(scope) is S
    assert negotiate_scope(scope, available=(S,)) is S


@pytest.mark.parametrize(
    ("query", "accept", "available", "expected"),
    [
        (b"", b"*/*", (S,), S),
        (b"", b"application/json;q=0.5, text/event-stream;q=0.1", (S,), S),
        (b"", b"application/json", (S,), 406),
        (b"format=batch", b"*/*", (S,), 400),
        (b"stream", b"*/*", (B,), 400),
        (b"", b"text/event-stream", (B,), 406),
    ],
)
def test_negotiate_scope_renegotiates_a_stored_mode_the_endpoint_lacks(
    query: bytes, accept: bytes, available: tuple[Mode, ...], expected: Mode | int
) -> None:
    scope = http_scope(query, (b"accept", accept))
    scope[SCOPE_KEY] = B if available == (S,) else S
    try:
        got: Mode | int = negotiate_scope(scope, available=available)
    except NegotiationError as exc:
        got = exc.status
    assert got == expected
    if isinstance(expected, Mode):
        assert scope[SCOPE_KEY] is expected


def _decided(negotiator: Negotiator, query: bytes, accept: list[bytes]) -> Mode | int:
    scope = http_scope(query, *((b"accept", value) for value in accept))
    try:
        return negotiator(scope)
    except NegotiationError as exc:
        return exc.status


@pytest.mark.parametrize("cache_size", [0, 3, 64])
def test_a_negotiator_decides_as_negotiate_scope_whatever_it_remembers(cache_size: int) -> None:
    rng = random.Random(7)
    headers = [h.encode() for h in _headers()[:150]] + [b"*/*", b"", b"x" * 600]
    queries = [b"", b"n=1", b"format=stream", b"stream=0", b"format=bad"]
    for available in (BOTH, (B,), (S,)):
        for default in available:
            negotiator = Negotiator(default=default, available=available, cache_size=cache_size)
            for _ in range(400):  # values come back, as clients repeat theirs
                query = rng.choice(queries)
                accept = [rng.choice(headers) for _ in range(rng.choice([0, 1, 1, 1, 2]))]
                scope = http_scope(query, *((b"accept", value) for value in accept))
                try:
                    expected: Mode | int = negotiate_scope(
                        scope, default=default, available=available
                    )
                except NegotiationError as exc:
                    expected = exc.status
                assert _decided(negotiator, query, accept) == expected, (query, accept)
            assert len(negotiator._decisions) <= cache_size
            assert all(len(key) <= 512 for key in negotiator._decisions)


def test_a_negotiator_raises_a_fresh_406_each_time() -> None:
    negotiator = Negotiator(available=(S,))
    errors = []
    for _ in range(2):
        with pytest.raises(NegotiationError) as info:
            negotiator(http_scope(b"", (b"accept", b"application/json")))
        errors.append(info.value)
    assert errors[0] is not errors[1] and errors[1].status == 406
    assert orjson.loads(errors[1].body())["error"]["available"] == ["text/event-stream"]


def test_a_negotiator_remembers_short_values_only() -> None:
    negotiator = Negotiator()
    long = b"text/event-stream;q=0.5, " + b"x" * 600
    assert negotiator(http_scope(b"", (b"accept", long))) is S
    assert negotiator(http_scope(b"", (b"accept", b"text/event-stream;q=0.5"))) is S
    assert list(negotiator._decisions) == [b"text/event-stream;q=0.5"]


def test_a_negotiator_takes_accept_lines_as_bytes_or_bytearray() -> None:
    negotiator = Negotiator()
    lines = [(b"Accept", bytearray(b"text/event-stream")), (b"accept", b"application/json;q=0.5")]
    for _ in range(2):  # weighed, then remembered under the same key
        assert negotiator(http_scope(b"", *lines)) is S
    assert list(negotiator._decisions) == [b"text/event-stream,application/json;q=0.5"]


def test_a_negotiator_needs_a_mode() -> None:
    with pytest.raises(ValueError, match="at least one mode"):
        Negotiator(available=())


def test_get_mode_ignores_what_is_not_a_mode() -> None:
    assert get_mode({"type": "http", SCOPE_KEY: "stream"}) is None
    assert get_mode({"type": "http", SCOPE_KEY: B}) is B


def test_mode_is_a_string() -> None:
    assert isinstance(Mode.STREAM, str) and Mode("stream") is Mode.STREAM
    assert f"{Mode.BATCH}" == "batch"
    assert orjson.dumps({"mode": Mode.STREAM}) == b'{"mode":"stream"}'


# -- the middleware, driven as an ASGI app -------------------------------------------------


class Recorder:
    """An app that records the scope it saw and answers with the given headers."""

    def __init__(self, headers: list[tuple[bytes, bytes]] | tuple[()] = ()) -> None:
        self.headers = headers
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": b'{"ok":true}'})


def run(app: Any, scope: Scope) -> list[Message]:
    client = FakeClient()
    anyio.run(app, scope, client.receive, client.send)
    return client.messages


def test_middleware_stores_the_mode_and_adds_vary() -> None:
    inner = Recorder()
    sent = run(NegotiationMiddleware(inner), http_scope(b"", (b"accept", b"text/event-stream")))
    assert inner.scopes[0][SCOPE_KEY] is S
    assert sent[0]["status"] == 200
    assert sent[0]["headers"] == [(b"vary", b"Accept")]
    assert sent[1] == {"type": "http.response.body", "body": b'{"ok":true}'}


def test_middleware_default_and_query() -> None:
    inner = Recorder()
    run(NegotiationMiddleware(inner, default=S), http_scope())
    run(NegotiationMiddleware(inner, default=S), http_scope(b"format=batch"))
    run(NegotiationMiddleware(inner), http_scope(b"stream"))
    assert [scope[SCOPE_KEY] for scope in inner.scopes] == [S, B, S]


def test_middleware_merges_vary_without_touching_the_apps_list() -> None:
    own = [(b"content-type", b"application/json"), (b"vary", b"Accept-Encoding")]
    inner = Recorder(own)
    app = NegotiationMiddleware(inner)
    for _ in range(2):
        sent = run(app, http_scope())
        assert sent[0]["headers"] == [
            (b"content-type", b"application/json"),
            (b"vary", b"Accept-Encoding, Accept"),
        ]
    assert own == [(b"content-type", b"application/json"), (b"vary", b"Accept-Encoding")]
    sent = run(NegotiationMiddleware(Recorder([(b"vary", b"*")])), http_scope())
    assert sent[0]["headers"] == [(b"vary", b"*")]


@pytest.mark.parametrize(
    ("query", "accept", "status", "error_type"),
    [
        (b"stream=maybe", b"*/*", 400, "invalid_parameter"),
        (b"format=xml", b"*/*", 400, "invalid_parameter"),
        (b"", b"text/html", 406, "not_acceptable"),
        (b"", b"*/*;q=0", 406, "not_acceptable"),
    ],
)
def test_middleware_answers_negotiation_errors(
    query: bytes, accept: bytes, status: int, error_type: str
) -> None:
    inner = Recorder()
    sent = run(NegotiationMiddleware(inner), http_scope(query, (b"accept", accept)))
    assert inner.scopes == []
    start, body = sent
    assert start["status"] == status
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"vary"] == b"Accept"
    assert int(headers[b"content-length"]) == len(body["body"])
    assert orjson.loads(body["body"])["error"]["type"] == error_type


def test_middleware_passes_other_scopes_through() -> None:
    inner = Recorder()
    app = NegotiationMiddleware(inner)
    for scope_type in ("websocket", "lifespan"):
        scope: Scope = {"type": scope_type, "query_string": b"stream=maybe", "headers": []}
        assert run(app, scope) == []
        assert SCOPE_KEY not in scope
    assert len(inner.scopes) == 2


def test_middleware_include() -> None:
    inner = Recorder()
    app = NegotiationMiddleware(inner, include=lambda scope: scope["path"] != "/health")
    health = {**http_scope(b"stream=maybe"), "path": "/health"}
    sent = run(app, health)
    assert sent[0]["status"] == 200 and sent[0]["headers"] == ()
    assert SCOPE_KEY not in inner.scopes[0]
    sent = run(app, http_scope(b"stream=maybe"))
    assert sent[0]["status"] == 400
