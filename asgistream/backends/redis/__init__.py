"""The stateful patterns' stores on Redis, shared by every process of a deployment.

Needs the ``redis`` extra (redis-py's asyncio client). One :class:`RedisBackend` per process
holds the connection and the background readers; each store takes it::

    backend = RedisBackend("redis://127.0.0.1:6379/0", prefix="myapp")
    app = App(lifespan=backend.lifespan)
"""

from .connection import RedisBackend, RedisUnavailable, check_name

__all__ = ["RedisBackend", "RedisUnavailable", "check_name"]
