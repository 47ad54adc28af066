"""Sockets for what httpx cannot express: a bare asyncio HTTP/1.1 client (thousands of open
streams, clients that stop reading, disconnects at exact points), and a load balancer that
cuts connections at random points."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketStream


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


@dataclass
class Balancer:
    """A load balancer on 127.0.0.1: each connection goes to the next of ``ports`` that
    accepts it (round robin), and with ``max_bytes``, is cut after a random number of response
    bytes, with a FIN or a RST. With one port it is a proxy that cuts connections."""

    ports: Sequence[int]
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    max_bytes: int | None = None
    port: int = 0
    served: list[int] = field(default_factory=list)
    """The port of each connection, in order."""
    cuts: int = 0
    resets: int = 0
    """Cuts made with a RST (the others with a FIN)."""
    _next: int = 0

    async def handle(self, client: SocketStream) -> None:
        async with client:
            upstream = None
            for _ in self.ports:
                target = self.ports[self._next % len(self.ports)]
                self._next += 1
                try:
                    upstream = await anyio.connect_tcp("127.0.0.1", target)
                    break
                except OSError:
                    continue
            if upstream is None:
                return
            self.served.append(target)
            budget = self.rng.randint(0, self.max_bytes) if self.max_bytes else math.inf
            async with upstream, anyio.create_task_group() as group:
                group.start_soon(self.forward, client, upstream)
                with contextlib.suppress(
                    anyio.BrokenResourceError, anyio.ClosedResourceError, OSError
                ):
                    async for data in upstream:
                        if len(data) >= budget:
                            await client.send(data[: int(budget)]) if budget else None
                            self.cut(client)
                            break
                        budget -= len(data)
                        await client.send(data)
                group.cancel_scope.cancel()

    def cut(self, client: SocketStream) -> None:
        self.cuts += 1
        if self.rng.random() < 0.5:
            self.resets += 1
            sock = client.extra(SocketAttribute.raw_socket)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    @staticmethod
    async def forward(source: SocketStream, sink: SocketStream) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            async for data in source:
                await sink.send(data)


@contextlib.asynccontextmanager
async def balancer(ports: Sequence[int], **options: Any) -> AsyncIterator[Balancer]:
    front = Balancer(ports, **options)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    front.port = listener.extra(SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, front.handle)
        try:
            yield front
        finally:
            group.cancel_scope.cancel()
