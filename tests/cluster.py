"""Several demo processes sharing one redis-server: the scale-out deployment, on one machine.

``cluster(redis_url)`` starts ``processes`` uvicorn processes of ``examples.demo:app`` (two
hosts behind a load balancer, each on its own port) configured with ``ASGISTREAM_REDIS_URL``
and a key prefix of their own, so that tests sharing one redis-server never see each
other's keys. ``workers=N`` starts one uvicorn with ``--workers N`` instead (one port, the
kernel spreads connections). A process can be killed (SIGKILL, as a crash) and started
again on its port.
"""

from __future__ import annotations

import contextlib
import signal
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from tests.server import Server, serve

DEMO = "examples.demo:app"


@dataclass
class Cluster:
    """The processes of one deployment and what they share."""

    redis_url: str
    prefix: str
    app: str
    env: dict[str, str]
    args: tuple[str, ...]
    servers: list[Server] = field(default_factory=list)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def start(self, index: int | None = None, *, port: int | None = None) -> Server:
        """Start one more process (or process ``index`` again, on its old port)."""
        if index is not None:
            port = self.servers[index].port
        server = self._stack.enter_context(serve(self.app, env=self.env, args=self.args, port=port))
        if index is None:
            self.servers.append(server)
        else:
            self.servers[index] = server
        return server

    def kill(self, index: int) -> None:
        """End process ``index`` with SIGKILL: no shutdown, no lifespan, as in a crash."""
        process = self.servers[index].process
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop(self, index: int) -> float:
        """Stop process ``index`` gracefully (SIGTERM); how long it took, in seconds."""
        return self.servers[index].stop()

    def restart(self, index: int) -> Server:
        """Stop process ``index`` gracefully, then start it again on the same port."""
        self.stop(index)
        return self.start(index)


@contextlib.contextmanager
def cluster(
    redis_url: str,
    *,
    processes: int = 2,
    workers: int | None = None,
    app: str = DEMO,
    env: Mapping[str, str] | None = None,
    prefix: str | None = None,
) -> Iterator[Cluster]:
    """``processes`` servers (or one with ``workers``) of ``app`` on one Redis, stopped by
    their pids when the block ends."""
    prefix = prefix or f"test-{uuid.uuid4().hex[:12]}"
    child_env = {
        "ASGISTREAM_REDIS_URL": redis_url,
        "ASGISTREAM_REDIS_PREFIX": prefix,
        **(env or {}),
    }
    args = ("--workers", str(workers)) if workers else ()
    deployment = Cluster(redis_url, prefix, app, child_env, args)
    with deployment._stack:
        for _ in range(1 if workers else processes):
            deployment.start()
        yield deployment
