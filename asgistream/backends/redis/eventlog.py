"""An :class:`~asgistream.patterns.eventlog.EventLog` on Redis Streams, shared by every process.

Each topic ``T`` has two keys under the backend's prefix ``P`` (one hash tag, so one slot)::

    P:{topic:T}:meta   hash    epoch: a random token naming this history; seq: the last id given
    P:{topic:T}:log    stream  event N is the entry ``N-0``; fields d (JSON data), e (event name)

An append is one Lua script: it takes the next id from ``seq``, adds the entry with that
explicit id, trims the stream to the last ``capacity`` entries (exactly) and refreshes the TTL
of both keys, so a topic idle for ``ttl`` seconds disappears whole. Ids are the same on every
process and survive restarts of every process, since they live in Redis.

The epoch lives in the same hash as the counter, so both are lost together. A topic whose hash
is gone (flushed, evicted, expired, failed over to a replica that never had it) gets a new
epoch with its next append, and ids start at 1 again: a client holding ``OLD:ID`` gets a
``reset``, never other events under a reused id. A failover to a replica that kept the hash
but missed its last appends sends the counter back while the epoch stays; each process
remembers the newest id it saw per topic and epoch, and when Redis answers lower, the next
append or read starts a new epoch instead of reusing ids.

A read is one ``MULTI``: the hash, the first entry (the oldest retained id) and
``XRANGE log (ID-0 + COUNT limit``. A read never writes: an unknown topic reads as empty.
Identical reads in flight at once are one round trip: the followers of a topic wake together
and read after the same id, so a thousand of them on one process cost one read per event,
not a thousand (nor a thousand pooled connections). Each follower still reads at its own
pace, so there is no per-subscriber queue: a slow one falls behind in the log, and gets a
``reset`` if it falls behind the retained events.

Waiting for new events uses one reader per :class:`RedisBackend` (per process), shared by
every :class:`RedisEventLog` on it: a task that follows every topic someone waits on with
``XREAD COUNT 1 BLOCK backend.block_ms STREAMS k1 k2 ... id1 id2 ...`` on one connection of
its own, and releases a topic's waiters when its stream moves past the lowest id they wait
after. A blocked ``XREAD`` is never cancelled (that costs the connection): when the set of
topics changes, a waiter appends to this process's *wake* stream, which the reader follows too
(``P:{reader:PROCESS_ID}:wake``, a few entries, expiring after an hour unused). At most
``max_followed`` topics are followed (one ``XREAD`` names them all, so its cost grows with
them); waiters on further topics poll every :data:`POLL_INTERVAL` seconds. After a quiet
``XREAD``, and every ``block_ms`` at least, the reader checks that no followed topic went
back in time (flushed, expired), and wakes its waiters if one did, so they read the new
epoch. On Redis Cluster one ``XREAD`` can only name keys of one slot: this reader needs a
single Redis (with replicas, or Sentinel).

Redis unreachable: :meth:`~RedisEventLog.append` and :meth:`~RedisEventLog.read` raise
:class:`~asgistream.backends.redis.RedisUnavailable` (a 503 with ``Retry-After``); the reader
retries with a backoff (up to :data:`MAX_BACKOFF` seconds) and meanwhile every waiter raises
it, so that open streams end with ``event: error`` (type ``unavailable``) and clients come
back; when Redis answers again, everything works again.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import anyio
import orjson
from redis.asyncio import Redis
from redis.typing import KeyT, StreamIdT

from ...patterns.eventlog import LogEntry, LogPage, Position
from .connection import RedisBackend, RedisUnavailable, check_name, is_unavailable

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_MAX_FOLLOWED",
    "DEFAULT_TTL",
    "MAX_BACKOFF",
    "POLL_INTERVAL",
    "RECHECK_ROUNDS",
    "RedisEventLog",
]

logger = logging.getLogger("asgistream")

DEFAULT_CAPACITY = 1000
"""Events retained per topic; the oldest is trimmed first."""

DEFAULT_TTL = 7 * 24 * 3600.0
"""Seconds after its last append when a topic disappears with its history."""

DEFAULT_MAX_FOLLOWED = 1000
"""Topics the process's reader follows at most in its one ``XREAD``."""

POLL_INTERVAL = 0.5
"""Seconds a waiter on a topic beyond ``max_followed`` sleeps before it reads again."""

RECHECK_ROUNDS = 4
"""A waiter reads again after this many of the reader's blocking reads at most, woken or
not: a wake-up lost for any reason costs a few seconds, never a stream that stalls."""

MAX_BACKOFF = 1.0
"""Longest pause, in seconds, between the reader's attempts while Redis is unreachable."""

_LINGER = 5.0  # seconds a topic nobody waits on stays in the reader's XREAD
_WAKE_TTL_MS = 3_600_000
_WAKE_LENGTH = 8
_MAX_SEEN = 10_000  # topics whose newest id each process remembers

_APPEND = """
local meta, log = KEYS[1], KEYS[2]
local state = redis.call('HMGET', meta, 'epoch', 'seq')
local epoch, seq = state[1], tonumber(state[2])
if not epoch or not seq then
  -- a new topic, or one whose history Redis lost: a new epoch, ids from 1
  epoch, seq = ARGV[1], 0
  redis.call('DEL', log)
elseif epoch == ARGV[2] and seq < tonumber(ARGV[3]) then
  -- this process saw a higher id in this epoch (a failover to a stale replica)
  epoch = ARGV[1]
end
seq = seq + 1
local id = string.format('%d-0', seq)
local added
if ARGV[7] then
  added = redis.pcall('XADD', log, 'MAXLEN', ARGV[4], id, 'd', ARGV[6], 'e', ARGV[7])
else
  added = redis.pcall('XADD', log, 'MAXLEN', ARGV[4], id, 'd', ARGV[6])
end
if type(added) == 'table' and added.err then
  -- the stream is ahead of the counter: start a new history rather than skip ids
  epoch, seq, id = ARGV[1], 1, '1-0'
  redis.call('DEL', log)
  if ARGV[7] then
    redis.call('XADD', log, id, 'd', ARGV[6], 'e', ARGV[7])
  else
    redis.call('XADD', log, id, 'd', ARGV[6])
  end
end
redis.call('HSET', meta, 'epoch', epoch, 'seq', seq)
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  redis.call('PEXPIRE', meta, ttl)
  redis.call('PEXPIRE', log, ttl)
end
return {epoch, seq}
"""

_ROTATE = """
local state = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
if state[1] == ARGV[1] and tonumber(state[2]) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[3])
end
return 1
"""


def _new_epoch() -> str:
    return secrets.token_urlsafe(8)  # 11 characters of A-Z a-z 0-9 _ -


def _entry_id(raw: bytes | str) -> int:
    text = raw.decode() if isinstance(raw, bytes) else raw
    return int(text.partition("-")[0])


class RedisEventLog:
    """The last ``capacity`` events of each topic in Redis, the same for every process.

    ``backend``: the process's open :class:`RedisBackend`. ``capacity``: events retained per
    topic (trimmed exactly). ``ttl``: seconds after its last append when a topic expires
    (``None``: never). ``max_followed``: topics this process's reader follows at once.
    Topic names are checked (a 400 for anything but ``A-Z a-z 0-9 . _ ~ -``, at most 128).
    Event data must be JSON-serialisable; it comes back as JSON decodes it.
    """

    def __init__(
        self,
        backend: RedisBackend,
        *,
        capacity: int = DEFAULT_CAPACITY,
        ttl: float | None = DEFAULT_TTL,
        max_followed: int = DEFAULT_MAX_FOLLOWED,
    ) -> None:
        if capacity < 1 or max_followed < 1:
            raise ValueError("capacity and max_followed must be >= 1")
        if ttl is not None and not ttl > 0:
            raise ValueError("ttl must be None or > 0 seconds")
        self.backend = backend
        self.capacity = capacity
        self.ttl = ttl
        self.max_followed = max_followed
        self._ttl_ms = str(int(ttl * 1000)) if ttl is not None else "0"
        self._shared = backend.shared(_Shared)

    def _keys(self, topic: str) -> tuple[str, str]:
        check_name("topic", topic)
        return self.backend.key("topic", topic, "meta"), self.backend.key("topic", topic, "log")

    async def append(self, topic: str, data: Any, *, event: str | None = None) -> Position:
        keys = self._keys(topic)
        seen = self._shared.seen
        known_epoch, known_id = seen.get(topic)
        args: list[str | bytes] = [
            _new_epoch(),
            known_epoch,
            str(known_id),
            str(self.capacity),
            self._ttl_ms,
            orjson.dumps(data),
        ]
        if event is not None:
            args.append(event)
        sent = seen.now()
        backend = self.backend
        epoch, id = await backend.call(
            self._shared.append(keys=keys, args=args, client=backend.client)
        )
        seen.observe(topic, epoch.decode(), int(id), sent)
        return Position(int(id), epoch.decode())

    async def read(self, topic: str, after: int, *, limit: int) -> LogPage:
        # Readers asking the same question at once share one round trip: every follower of
        # a busy topic wakes for the same event and reads after the same id.
        self._keys(topic)
        flights = self._shared.flights
        question = (topic, after, limit)
        while (flight := flights.get(question)) is not None:
            await flight.done.wait()
            if flight.page is not None:
                return flight.page
            if flight.unavailable:
                raise self.backend.unavailable()
            # The first reader was cancelled or failed otherwise: ask again.
        flight = flights[question] = _Flight()
        try:
            flight.page = await self._read_fresh(topic, after, limit)
        except RedisUnavailable:
            flight.unavailable = True
            raise
        finally:
            del flights[question]
            flight.done.set()
        return flight.page

    async def _read_fresh(self, topic: str, after: int, limit: int) -> LogPage:
        page, regressed = await self._read(topic, after, limit)
        if regressed:
            # Redis answers a lower id than this process saw in the same epoch: those ids
            # would name other events. Start a new epoch, then read again.
            known_epoch, known_id = self._shared.seen.get(topic)
            logger.warning(
                "topic %r went back from id %d to %d in epoch %s: starting a new epoch",
                topic,
                known_id,
                page.newest,
                known_epoch,
            )
            meta, _ = self._keys(topic)
            args = [known_epoch, str(known_id), _new_epoch()]
            backend = self.backend
            await backend.call(self._shared.rotate(keys=[meta], args=args, client=backend.client))
            page, _ = await self._read(topic, after, limit)
        return page

    async def _read(self, topic: str, after: int, limit: int) -> tuple[LogPage, bool]:
        meta, log = self._keys(topic)
        pipe = self.backend.client.pipeline(transaction=True)
        pipe.hmget(meta, ["epoch", "seq"])
        pipe.xrange(log, "-", "+", count=1)
        if limit > 0:
            pipe.xrange(log, f"({after}-0", "+", count=limit)
        sent = self._shared.seen.now()
        replies = await self.backend.call(pipe.execute())
        raw_epoch, raw_seq = replies[0]
        if raw_epoch is None or raw_seq is None:
            return LogPage((), 1, 0), False  # no such topic (yet, or any more)
        epoch, newest = raw_epoch.decode(), int(raw_seq)
        first = replies[1]
        oldest = _entry_id(first[0][0]) if first else newest + 1
        entries = tuple(_entry(raw, fields) for raw, fields in replies[2]) if limit > 0 else ()
        regressed = self._shared.seen.observe(topic, epoch, newest, sent)
        return LogPage(entries, oldest, newest, epoch), regressed

    async def wait(self, topic: str, after: int) -> None:
        meta, log = self._keys(topic)
        await self._shared.reader.wait(log, meta, after, self.max_followed)


def _entry(raw: bytes, fields: dict[bytes, bytes]) -> LogEntry:
    name = fields.get(b"e")
    return LogEntry(_entry_id(raw), orjson.loads(fields[b"d"]), name.decode() if name else None)


class _Flight:
    """One read in flight, and its answer for everyone who asked the same meanwhile."""

    __slots__ = ("done", "page", "unavailable")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.page: LogPage | None = None
        self.unavailable = False


class _Shared:
    """What every :class:`RedisEventLog` on one backend shares: the scripts, the ids seen,
    the reads in flight and the reader."""

    def __init__(self, backend: RedisBackend) -> None:
        self.seen = _Seen(_MAX_SEEN)
        self.reader = _Reader(backend)
        self.flights: dict[tuple[str, int, int], _Flight] = {}
        self._scripts: dict[str, Any] = {}

    def append(self, *, keys: Sequence[str], args: Sequence[str | bytes], client: Redis) -> Any:
        return self._script(_APPEND, client)(keys=keys, args=args, client=client)

    def rotate(self, *, keys: Sequence[str], args: Sequence[str], client: Redis) -> Any:
        return self._script(_ROTATE, client)(keys=keys, args=args, client=client)

    def _script(self, source: str, client: Redis) -> Any:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = client.register_script(source)
        return script


class _Seen:
    """The newest id this process saw in each topic's epoch, to notice a topic that went back.

    An answer counts as going back only if its request was sent after the answer that showed
    the higher id arrived: a slow answer overtaken by a newer one is not a regression.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._clock = itertools.count()
        self._topics: OrderedDict[str, tuple[str, int, int]] = OrderedDict()

    def now(self) -> int:
        return next(self._clock)

    def get(self, topic: str) -> tuple[str, int]:
        """The epoch and newest id seen of ``topic`` (``("", 0)``: none)."""
        known = self._topics.get(topic)
        return (known[0], known[1]) if known is not None else ("", 0)

    def observe(self, topic: str, epoch: str, newest: int, sent: int) -> bool:
        """Record an answer; whether it shows ``topic`` went back within its epoch."""
        received = next(self._clock)
        topics = self._topics
        known = topics.get(topic)
        if known is not None and known[0] == epoch and newest < known[1]:
            return sent > known[2]
        topics[topic] = (epoch, newest, received)
        topics.move_to_end(topic)
        if len(topics) > self.limit:
            topics.popitem(last=False)
        return False


class _Round:
    """The waiters of one topic until the reader releases them together."""

    __slots__ = ("afters", "event", "failed")

    def __init__(self) -> None:
        self.afters: Counter[int] = Counter()
        self.event = anyio.Event()
        self.failed = False


class _Watch:
    """A topic the reader follows: ``cursor`` is the id it reads after, never above the id
    any waiter waits after."""

    __slots__ = ("cursor", "log", "meta", "round", "touched")

    def __init__(self, log: str, meta: str, cursor: int) -> None:
        self.log = log
        self.meta = meta
        self.cursor = cursor
        self.round = _Round()
        self.touched = time.monotonic()


class _Reader:
    """One ``XREAD`` loop per backend that follows every topic this process waits on."""

    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend
        self.wake_key = backend.key("reader", backend.process_id, "wake")
        self.name = f"asgistream-reader-{backend.process_id[:12]}"
        """The reader's connection's name in ``CLIENT LIST``."""
        self.watches: dict[str, _Watch] = {}
        self.running = False
        self.connected = False
        self._wake_id: bytes | str = "0-0"
        self._wake_pending = False
        self._in_flight: dict[str, int] | None = None
        self._work = anyio.Event()

    async def wait(self, log: str, meta: str, after: int, limit: int) -> None:
        watch = self.watches.get(log)
        if watch is None:
            if len(self.watches) >= limit and not self._forget_one():
                await anyio.sleep(POLL_INTERVAL)  # beyond the bound: the caller reads again
                return
            watch = self.watches[log] = _Watch(log, meta, after)
        elif after < watch.cursor:
            watch.cursor = after
        watch.touched = time.monotonic()
        current = watch.round
        current.afters[after] += 1
        self._start()
        self._work.set()
        try:
            in_flight = self._in_flight
            if in_flight is not None and in_flight.get(log, after + 1) > after:
                await self._wake()
            with anyio.move_on_after(RECHECK_ROUNDS * self.backend.block_ms / 1000):
                await current.event.wait()
        finally:
            if not current.event.is_set():
                current.afters[after] -= 1
                if current.afters[after] <= 0:
                    del current.afters[after]
        if current.failed:
            raise self.backend.unavailable()

    def _forget_one(self) -> bool:
        for log, watch in self.watches.items():
            if not watch.round.afters:
                del self.watches[log]
                return True
        return False

    def _start(self) -> None:
        if not self.running:
            self.backend.start_soon(self._run, "asgistream: redis event log reader")
            self.running = True

    async def _wake(self) -> None:
        """Make the blocked ``XREAD`` return, so the reader reads the new set of topics."""
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            pipe = self.backend.client.pipeline(transaction=False)
            pipe.xadd(self.wake_key, {"w": "1"}, maxlen=_WAKE_LENGTH, approximate=False)
            pipe.pexpire(self.wake_key, _WAKE_TTL_MS)
            await self.backend.call(pipe.execute())
        except BaseException:
            self._wake_pending = False
            raise

    def _release(self, watch: _Watch, *, failed: bool = False) -> None:
        current = watch.round
        if current.afters or failed:
            watch.round = _Round()
            current.failed = failed
            current.event.set()

    def _release_all(self, *, failed: bool) -> None:
        for watch in self.watches.values():
            self._release(watch, failed=failed)

    async def _run(self) -> None:
        connection = self.backend.client.client()  # one connection, held by this reader
        backoff = 0.05
        checked = time.monotonic()
        try:
            while True:
                streams = self._streams()
                if streams is None:
                    self._work = anyio.Event()
                    await self._work.wait()
                    continue
                try:
                    if not self.connected:
                        await connection.client_setname(self.name)
                    reply = await connection.xread(streams, count=1, block=self.backend.block_ms)
                    self._in_flight = None
                    self._received(reply)
                    if not reply or time.monotonic() - checked > self.backend.block_ms / 1000:
                        await self._check(connection)
                        checked = time.monotonic()
                except Exception as exc:
                    self._in_flight = None
                    self._release_all(failed=True)
                    if self.connected or backoff == 0.05:
                        if is_unavailable(exc):
                            logger.warning("redis event log reader: redis unavailable: %s", exc)
                        else:
                            logger.exception("redis event log reader failed")
                    self.connected = False
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    continue
                if not self.connected:
                    self.connected = True
                    if backoff > 0.05:
                        logger.warning("redis event log reader: redis reachable again")
                    backoff = 0.05
        finally:
            self.running = self.connected = False
            self._in_flight = None
            self._release_all(failed=True)
            with anyio.CancelScope(shield=True):
                await connection.aclose()

    def _streams(self) -> dict[KeyT, StreamIdT] | None:
        """The ``XREAD`` arguments for the topics followed now (``None``: none)."""
        now = time.monotonic()
        in_flight: dict[str, int] = {}
        for log, watch in list(self.watches.items()):
            afters = watch.round.afters
            if afters:
                watch.cursor = min(afters)
            elif now - watch.touched > _LINGER:
                del self.watches[log]
                continue
            in_flight[log] = watch.cursor
        if not in_flight:
            self._in_flight = None
            return None
        self._in_flight = in_flight
        self._wake_pending = False
        streams: dict[KeyT, StreamIdT] = {log: f"{id}-0" for log, id in in_flight.items()}
        streams[self.wake_key] = self._wake_id
        return streams

    def _received(self, reply: Iterable[Any]) -> None:
        for raw_key, entries in reply or ():
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            if not entries:
                continue
            if key == self.wake_key:
                self._wake_id = entries[-1][0]
                continue
            watch = self.watches.get(key)
            if watch is not None:
                watch.cursor = max(watch.cursor, _entry_id(entries[-1][0]))
                self._release(watch)

    async def _check(self, connection: Redis) -> None:
        """Wake the waiters of topics that went back in time (flushed, expired, failed over)."""
        watches = list(self.watches.values())
        if not watches:
            return
        pipe = connection.pipeline(transaction=False)
        for watch in watches:
            pipe.hget(watch.meta, "seq")
        for watch, seq in zip(watches, await pipe.execute(), strict=True):
            newest = int(seq) if seq is not None else 0
            if newest < watch.cursor:
                watch.cursor = newest
                self._release(watch)
