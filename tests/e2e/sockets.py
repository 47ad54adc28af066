"""A bare asyncio HTTP/1.1 client for what httpx cannot express: thousands of open streams,
clients that stop reading, and disconnects at exact points."""

from __future__ import annotations

import asyncio
import contextlib


async def open_stream(
    port: int, path: str, headers: str = "Accept: text/event-stream\r\n"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
    await writer.drain()
    return reader, writer


async def read_headers(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()
