"""The stateful patterns' stores on Redis, shared by every process of a deployment.

Needs the ``redis`` extra (redis-py's asyncio client). One :class:`RedisBackend` per process
holds the connections and the background readers; each store takes it::

    backend = RedisBackend("redis://127.0.0.1:6379/0", prefix="myapp")
    app = App(lifespan=backend.lifespan)
    log = RedisEventLog(backend)                       # resumable topics
    broker = Broker(RedisFanout(backend, "news"))      # fan-out across processes
    jobs = JobManager(app.tasks, store=RedisJobStore(backend))
    limiter = Limiter(slots=RedisSlots(backend, "upstream", 100))
"""

from .connection import RedisBackend, RedisUnavailable, check_name
from .eventlog import RedisEventLog
from .fanout import RedisFanout
from .jobs import RedisJobStore
from .slots import RedisSlots

__all__ = [
    "RedisBackend",
    "RedisEventLog",
    "RedisFanout",
    "RedisJobStore",
    "RedisSlots",
    "RedisUnavailable",
    "check_name",
]
