"""The SSE encoder, checked against httpx-sse's independent WHATWG parser."""

from __future__ import annotations

import orjson
import pytest
from httpx_sse._decoders import SSEDecoder

from asgistream.sse import (
    DONE,
    HEARTBEAT,
    Event,
    encode,
    encode_comment,
    encode_data,
    encode_id_data,
)


def parse(raw: bytes) -> list[tuple[str, str, str, int | None]]:
    """Events as (event, data, id, retry), parsed line by line like a client does."""
    decoder = SSEDecoder()
    events = []
    text = raw.decode("utf-8")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    assert lines.pop() == "", "a stream ends with a line break"
    for line in lines:
        sse = decoder.decode(line)
        if sse is not None:
            events.append((sse.event, sse.data, sse.id, sse.retry))
    return events


@pytest.mark.parametrize(
    "text",
    [
        "plain",
        "",
        " leading space",
        "a\nb",
        "a\r\nb\rc\nd",
        "trailing\n",
        "\n\nevent: evil\nid: 666\n\n",
        "data: nested",
        "x\n\nevent: evil",
        "unicode ✓ \u2028 \x85 \x0b",
        ":not a comment",
        "nul\x00inside",
    ],
)
def test_text_payload_is_one_event_and_cannot_inject(text: str) -> None:
    events = parse(encode(text, event="msg", id="7"))
    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    assert events == [("msg", expected, "7", None)]


def test_bytes_payload_is_split_like_text() -> None:
    assert parse(encode(b"one\r\ntwo")) == [("message", "one\ntwo", "", None)]


def test_json_payload_is_one_data_line() -> None:
    value = {"text": "line1\nline2\r\n\n", "n": [1, 2.5, None, True]}
    raw = encode(value, id=3)
    assert raw == b"id: 3\ndata: " + orjson.dumps(value) + b"\n\n"
    assert orjson.loads(parse(raw)[0][1]) == value


def test_all_fields_and_comment() -> None:
    raw = encode({"a": 1}, event="update", id=42, retry=1500, comment="hello\nworld")
    assert raw == b': hello\n: world\nevent: update\nid: 42\nretry: 1500\ndata: {"a":1}\n\n'
    assert parse(raw) == [("update", '{"a":1}', "42", 1500)]


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b", "\r\n"])
def test_event_and_id_refuse_line_breaks_and_nul(bad: str) -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        encode(1, event=bad)
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        encode(1, id=bad)


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
def test_retry_must_be_non_negative_int(bad: object) -> None:
    with pytest.raises(ValueError, match="retry"):
        encode(1, retry=bad)  # type: ignore[arg-type]


def test_unserializable_data_raises_type_error() -> None:
    with pytest.raises(TypeError):
        encode(object())


def test_event_dataclass_and_fast_paths_agree() -> None:
    for data in ({"x": 1}, "text\nmore", b"raw", [1, 2], None, 3.5):
        assert Event(data, id=5).encode() == encode(data, id=5) == encode_id_data(5, data)
        assert Event(data).encode() == encode_data(data)


def test_comment_and_constants_dispatch_nothing() -> None:
    assert parse(encode_comment("ping\nline") + HEARTBEAT) == []
    assert parse(DONE) == [("message", "[DONE]", "", None)]


def test_event_cannot_be_subclassed() -> None:
    # Responses recognise exactly Event; a subclass would be sent as a JSON object.
    with pytest.raises(TypeError, match=r"cannot subclass asgistream\.Event"):

        class Progress(Event):  # type: ignore[misc]
            pass
