"""``python -m asgistream URL``: print the events of a stream as they arrive.

Reconnects like :class:`asgistream.client.Client` (messages on stderr), ``--batch`` fetches
the batch answer instead, ``--json`` prints one JSON object per event, and a job stream whose
events carry a ``progress`` field gets a progress bar on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO, TypeGuard

import httpx
import orjson

from . import DEFAULT_READ_TIMEOUT, DEFAULT_RETRY, Client, ClientError, ServerSentEvent
from .retry import RetryPolicy

__all__ = ["main"]

_BAR_WIDTH = 30


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failed, 130 interrupted)."""
    args = _parser().parse_args(argv)
    if not args.quiet:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("asgistream: %(message)s"))
        logger = logging.getLogger("asgistream.client")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    try:
        with Client(
            headers=dict(args.header),
            retry=None if args.retries == 0 else _policy(args.retries),
            read_timeout=args.read_timeout or None,
            follow=args.follow,
        ) as client:
            if args.batch:
                _print_batch(client, args)
            else:
                _print_stream(client, args, _Progress(sys.stderr) if progress else None)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep Python from complaining
        # again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ClientError, httpx.HTTPError) as exc:
        print(f"asgistream: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asgistream",
        description="Print the events of a Server-Sent Events stream as they arrive, "
        "reconnecting with Last-Event-ID when the connection is lost.",
    )
    parser.add_argument("url", help="the endpoint, e.g. http://127.0.0.1:8000/items?n=5")
    parser.add_argument("--json", action="store_true", help="print one JSON object per event")
    parser.add_argument("--batch", action="store_true", help="fetch the batch answer instead")
    parser.add_argument("--last-event-id", metavar="ID", help="resume after this event id")
    parser.add_argument("-X", "--method", help="the HTTP method (default GET, POST with -d)")
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        type=_header,
        metavar="'NAME: VALUE'",
        help="a request header (repeatable)",
    )
    parser.add_argument("-d", "--data", type=_json, metavar="JSON", help="a JSON request body")
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=DEFAULT_READ_TIMEOUT,
        metavar="SECONDS",
        help=f"longest silence before reconnecting (default {DEFAULT_READ_TIMEOUT:g}, 0: none)",
    )
    parser.add_argument(
        "--retries",
        type=_count,
        default=None,
        metavar="N",
        help="failures in a row to retry before giving up (0: never retry)",
    )
    parser.add_argument("--follow", action="store_true", help="reconnect after a clean end too")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw a progress bar for events with a progress field (default: on a terminal)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no reconnection messages")
    return parser


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"a header is 'Name: value', not {text!r}")
    return name.strip(), value.strip()


def _json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, not {text!r}")
    return int(text)


def _policy(retries: int | None) -> RetryPolicy:
    return DEFAULT_RETRY if retries is None else RetryPolicy(max_attempts=retries + 1)


def _request(args: argparse.Namespace) -> dict[str, Any]:
    method = args.method or ("POST" if args.data is not None else "GET")
    return {"method": method.upper(), "json": args.data}


def _print_batch(client: Client, args: argparse.Namespace) -> None:
    body = client.fetch(args.url, **_request(args))
    option = 0 if args.json else orjson.OPT_INDENT_2
    _write(sys.stdout, orjson.dumps(body, option=option).decode() + "\n")


def _print_stream(client: Client, args: argparse.Namespace, progress: _Progress | None) -> None:
    events = client.events(args.url, last_event_id=args.last_event_id, **_request(args))
    try:
        for event in events:
            shown = progress is not None and progress.update(event)
            if (args.json or not shown) and progress is not None:
                progress.make_room(sys.stdout)
            if args.json:
                _write(sys.stdout, _event_json(event))
            elif not shown:
                prefix = "" if event.event == "message" else f"[{event.event}] "
                _write(sys.stdout, f"{prefix}{event.data}\n")
    finally:
        if progress is not None:
            progress.close()


def _event_json(event: ServerSentEvent) -> str:
    try:
        data = event.json()
    except ValueError:
        data = event.data
    line: dict[str, Any] = {"event": event.event, "id": event.id or None, "data": data}
    if event.retry is not None:
        line["retry"] = event.retry
    return orjson.dumps(line).decode() + "\n"


def _write(stream: TextIO, text: str) -> None:
    stream.write(text)
    stream.flush()


class _Progress:
    """A progress bar on a terminal (redrawn in place), or one line per update elsewhere."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.drawn = False

    def update(self, event: ServerSentEvent) -> bool:
        """Draw the event's progress; True if the bar says all the event had to say."""
        try:
            data = event.json()
        except ValueError:
            return False
        fraction = progress_fraction(data)
        if fraction is None:
            return False
        filled = round(fraction * _BAR_WIDTH)
        message = data.get("message") or data.get("status") or ""
        line = f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {fraction:4.0%} {message}".rstrip()
        if self.tty:
            _write(self.stream, f"\r{line}\x1b[K")
            self.drawn = True
        else:
            _write(self.stream, line + "\n")
        return event.event == "progress" or (event.event == "message" and "result" not in data)

    def make_room(self, output: TextIO) -> None:
        """End the bar's line before ``output`` writes to the same terminal."""
        if self.drawn and output.isatty():
            self.close()

    def close(self) -> None:
        if self.drawn:
            _write(self.stream, "\n")
            self.drawn = False


def progress_fraction(data: Any) -> float | None:
    """How far a job is, from 0 to 1, if ``data`` is an object with a ``progress`` field.

    ``progress`` counts against ``total`` when there is one; otherwise a float up to 1 is a
    fraction (asgistream jobs) and anything else a percentage.
    """
    if not isinstance(data, dict):
        return None
    value = data.get("progress")
    if not _is_number(value):
        return None
    total = data.get("total")
    if _is_number(total) and total > 0:
        fraction = value / total
    elif isinstance(value, float) and value <= 1.0:
        fraction = value
    else:
        fraction = value / 100
    return min(max(float(fraction), 0.0), 1.0)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value
