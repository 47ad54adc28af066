"""A :class:`~asgistream.patterns.jobs.JobStore` on Redis: jobs seen from every process.

A job runs on the process that started it (its *owner*); its state lives in Redis, so any
process can watch it (a stream), read it (a batch answer) or cancel it.

Keys and channel (``PREFIX`` is the backend's prefix; braces are Redis Cluster hash tags):

- ``PREFIX:{job:ID}:state``, a hash: ``v`` the state's version, ``s`` the state as JSON,
  ``f`` ``1`` once finished, ``e`` the owner's lease (milliseconds, Redis's clock; running
  jobs only), ``c`` ``1`` once a cancel was asked for, ``o`` the owner's process id, ``t``
  when it was created (microseconds, Redis's clock). It expires ``finished_ttl`` after the
  job finished, or ``lease + finished_ttl`` after the owner's last write or renewal.
- ``PREFIX:{jobs:finished}:index``, a sorted set of the finished jobs by creation time:
  past ``max_finished`` the oldest are deleted. (By creation, not by finishing: jobs that
  finish together on several connections reach Redis in no defined order, while jobs are
  created one after the other. A job that ran longer than ``max_finished`` younger ones
  took to finish may thus be forgotten as soon as it ends: size ``max_finished`` for the
  jobs that finish within your longest job's run.)
- ``PREFIX:jobs:changes``, a pub/sub channel: each new state (``u``) and each cancel request
  (``c``), read by one reader per process (shared with the fan-out) that wakes the
  process's watchers and tells an owner of a cancel.

Every script touches one key (or one key and the channel), so the layout works on Redis
Cluster unchanged.

What is guaranteed:

- Only the owner writes a job's progress, and versions only grow (each write is a
  compare-and-set on the version). A finished state is final.
- A watcher gets the current state, then newer ones in order, ending with the final state
  (it may skip intermediate ones, as in memory). It is woken by the channel; when its
  process's reader has lost Redis it reads the state again as soon as it can (every
  :data:`POLL_INTERVAL` seconds until the reader is back), and ends with a 503
  ``unavailable`` if Redis itself is unreachable.
- The owner renews its lease every third of ``lease``
  (:class:`~asgistream.patterns.jobs.JobManager` does). A running job whose lease has run
  out (its process died, or lost Redis for longer than the lease) is reported ``failed``
  with the error type ``owner_lost`` by the first reader that sees it (``get``, ``watch``
  or ``cancel``, on any process): written once, compare-and-set on the version. Watchers
  look again when the lease they know runs out, so a watched job whose process died ends
  ``failed`` within about ``lease`` seconds. An owner still alive learns at its next
  renewal (or write) that the job was taken from it, and its work is cancelled. A progress
  update while Redis is unreachable raises a 503 in the job, which then fails.
- A cancel is a flag in the job's hash plus a message on the channel: the owner's process
  gets the message at once, or sees the flag at its next lease renewal if its reader was
  disconnected meanwhile.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import orjson
from redis.exceptions import NoScriptError

from ...errors import HTTPError
from ...patterns.jobs import JobState, JobStatus
from ._pubsub import reader_of
from .connection import RedisBackend, check_name

__all__ = [
    "DEFAULT_FINISHED_TTL",
    "DEFAULT_LEASE",
    "DEFAULT_MAX_FINISHED",
    "OWNER_LOST",
    "POLL_INTERVAL",
    "RedisJobStore",
]

logger = logging.getLogger("asgistream")

DEFAULT_MAX_FINISHED = 1000
"""Finished jobs kept at most; the oldest is forgotten first."""

DEFAULT_LEASE = 10.0
"""Seconds an owner's lease lasts: a job whose process died is reported failed after it."""

DEFAULT_FINISHED_TTL = 3600.0
"""Seconds a finished job's state is kept."""

POLL_INTERVAL = 0.5
"""Seconds between two reads of a watched job while this process's reader is disconnected."""

OWNER_LOST = {
    "type": "owner_lost",
    "message": "The process running the job stopped before the job ended",
}
"""The error of a job whose owner's lease ran out."""


class _Script:
    """A Lua script run by its SHA1 digest, loaded on first use (per server)."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = _LUA_NOW + source
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def __call__(self, backend: RedisBackend, keys: Sequence[str], *args: Any) -> Any:
        client = backend.client
        try:
            return await backend.call(client.evalsha(self.sha, len(keys), *keys, *args))
        except NoScriptError:
            await backend.call(client.script_load(self.source))
            return await backend.call(client.evalsha(self.sha, len(keys), *keys, *args))


_LUA_NOW = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS: job. ARGV: version, state, lease ms, keep ms, owner.
_CREATE = _Script("""
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'v', ARGV[1], 's', ARGV[2], 'f', '0',
           'e', now_ms() + tonumber(ARGV[3]), 'o', ARGV[5],
           't', t[1] .. string.format('%06d', t[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) + tonumber(ARGV[4]))
return 1
""")

# KEYS: job. ARGV: version, state, finished (0/1), lease ms, keep ms, channel, id.
# 1: written; its creation time: written, and finished; 0: forgotten; -1: finished already
# (final); -2: not newer.
_UPDATE = _Script("""
local current = redis.call('HMGET', KEYS[1], 'v', 'f')
if not current[1] then return 0 end
if current[2] == '1' then return -1 end
if tonumber(current[1]) >= tonumber(ARGV[1]) then return -2 end
local expires = ''
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 's', ARGV[2], 'f', '1')
  redis.call('HDEL', KEYS[1], 'e')
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
else
  expires = string.format('%d', now_ms() + tonumber(ARGV[4]))
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 's', ARGV[2], 'e', expires)
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) + tonumber(ARGV[5]))
end
redis.call('PUBLISH', ARGV[6], 'u\\n' .. ARGV[7] .. '\\n' .. ARGV[1] .. '\\n' .. expires
           .. '\\n' .. ARGV[2])
if ARGV[3] == '1' then return redis.call('HGET', KEYS[1], 't') end
return 1
""")

# KEYS: job. ARGV: lease ms, keep ms. What the owner must know: ok, cancel, finished, gone.
_RENEW = _Script("""
local current = redis.call('HMGET', KEYS[1], 'f', 'c')
if not current[1] then return 'gone' end
if current[1] == '1' then return 'finished' end
redis.call('HSET', KEYS[1], 'e', now_ms() + tonumber(ARGV[1]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]))
if current[2] == '1' then return 'cancel' end
return 'ok'
""")

# KEYS: job. The state's fields, and whether its owner's lease ran out.
_GET = _Script("""
local current = redis.call('HMGET', KEYS[1], 'v', 's', 'f', 'e')
if not current[1] then return false end
local expired = 0
if current[3] ~= '1' and current[4] and tonumber(current[4]) < now_ms() then expired = 1 end
return {current[1], current[2], current[4] or '', expired}
""")

# KEYS: job. ARGV: version seen, failed state, keep ms, channel, id. If written, the job's
# creation time, else 0.
_LOST = _Script("""
local current = redis.call('HMGET', KEYS[1], 'v', 'f', 'e')
if current[1] ~= ARGV[1] or current[2] == '1' or not current[3]
   or tonumber(current[3]) >= now_ms() then return 0 end
local version = string.format('%d', tonumber(ARGV[1]) + 1)
redis.call('HSET', KEYS[1], 'v', version, 's', ARGV[2], 'f', '1')
redis.call('HDEL', KEYS[1], 'e')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], 'u\\n' .. ARGV[5] .. '\\n' .. version .. '\\n\\n' .. ARGV[2])
return redis.call('HGET', KEYS[1], 't')
""")

# KEYS: job. ARGV: channel, id. The state's fields, as _GET.
_CANCEL = _Script("""
local current = redis.call('HMGET', KEYS[1], 'v', 's', 'f', 'e')
if not current[1] then return false end
if current[3] ~= '1' then
  redis.call('HSET', KEYS[1], 'c', '1')
  redis.call('PUBLISH', ARGV[1], 'c\\n' .. ARGV[2])
end
return {current[1], current[2], current[4] or '', 0}
""")

# KEYS: index. ARGV: id, its creation time, keep ms, max finished. The ids to forget.
_RETIRE = _Script("""
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if excess <= 0 then return {} end
local popped = redis.call('ZPOPMIN', KEYS[1], excess)
local ids = {}
for i = 1, #popped, 2 do ids[#ids + 1] = popped[i] end
return ids
""")


class _Watched:
    """The latest state of one job that watchers of this process follow."""

    __slots__ = ("changed", "stale", "state", "watchers")

    def __init__(self, state: JobState, stale: bool) -> None:
        self.state = state
        self.changed = anyio.Event()
        self.stale = stale
        """Notifications may have been missed: read the state again."""
        self.watchers = 0

    def offer(self, state: JobState) -> None:
        if state.version > self.state.version:
            self.state = state
            self.wake()
        elif state.version == self.state.version:
            self.state = state  # the same state with a later lease: nothing to tell

    def wake(self) -> None:
        changed, self.changed = self.changed, anyio.Event()
        changed.set()


class RedisJobStore:
    """Jobs' states in Redis, for every process of a deployment (see the module's notes).

    ``lease``: seconds an owner vouches for its running job at a time (a job whose process
    died is reported failed after it). ``finished_ttl``: seconds a finished job is kept.
    ``max_finished``: finished jobs kept at most, the oldest forgotten first.
    """

    def __init__(
        self,
        backend: RedisBackend,
        *,
        max_finished: int = DEFAULT_MAX_FINISHED,
        lease: float = DEFAULT_LEASE,
        finished_ttl: float = DEFAULT_FINISHED_TTL,
    ) -> None:
        if max_finished < 0:
            raise ValueError("max_finished must be >= 0")
        if not (lease > 0 and finished_ttl > 0):
            raise ValueError("lease and finished_ttl must be > 0 seconds")
        self.backend = backend
        self.max_finished = max_finished
        self._lease = float(lease)
        self.finished_ttl = float(finished_ttl)
        self.channel = backend.channel("jobs", "changes")
        self._index = backend.key("jobs", "finished", "index")
        self._lease_ms = max(1, round(lease * 1000))
        self._keep_ms = max(1, round(finished_ttl * 1000))
        self._watched: dict[str, _Watched] = {}
        self._cancels: dict[str, anyio.Event] = {}

    @property
    def lease(self) -> float:
        return self._lease

    # -- the owner's side ----------------------------------------------------------------

    async def create(self, state: JobState) -> None:
        created = await _CREATE(
            self.backend,
            [self._key(state.id)],
            state.version,
            _encode(state),
            self._lease_ms,
            self._keep_ms,
            self.backend.process_id,
        )
        if not created:
            raise ValueError(f"job {state.id!r} exists already")

    async def update(self, state: JobState) -> None:
        finished = state.finished
        written = await _UPDATE(
            self.backend,
            [self._key(state.id)],
            state.version,
            _encode(state),
            int(finished),
            self._lease_ms,
            self._keep_ms,
            self.channel,
            state.id,
        )
        if isinstance(written, bytes):
            await self._retire(state.id, written)
        elif written == -1:
            self._stop(state.id)  # reported failed meanwhile (its lease ran out): final

    async def renew(self, job_id: str, expires: float) -> None:
        lease_ms = max(1, round((expires - time.time()) * 1000))
        answer = await _RENEW(self.backend, [self._key(job_id)], lease_ms, self._keep_ms)
        if answer != b"ok":
            self._stop(job_id)  # cancelled, taken from it, or forgotten: stop working

    async def cancelled(self, job_id: str) -> None:
        """Return once a cancel was asked for, or once the job was reported failed by
        another process or forgotten (its owner should stop working on it then too)."""
        key = self._key(job_id)
        event = self._cancels.get(job_id)
        if event is None:
            event = self._cancels[job_id] = anyio.Event()
        try:
            await self._listen()
            try:
                cancel, finished = await self.backend.call(
                    self.backend.client.hmget(key, ["c", "f"])
                )
            except HTTPError:
                pass  # Redis is unreachable: the lease renewals will tell
            else:
                if cancel == b"1" or finished != b"0":
                    return
            await event.wait()
        finally:
            if self._cancels.get(job_id) is event:
                del self._cancels[job_id]

    # -- every process's side -------------------------------------------------------------

    async def get(self, job_id: str) -> JobState | None:
        key = self._key(job_id)
        for _ in range(3):
            found = await _GET(self.backend, [key])
            if found is None:
                return None
            state = _decode(job_id, *found[:3])
            if not int(found[3]):
                return state
            lost = dataclasses.replace(
                state,
                status=JobStatus.FAILED,
                error=dict(OWNER_LOST),
                result=None,
                version=state.version + 1,
                expires=None,
            )
            created = await _LOST(
                self.backend,
                [key],
                state.version,
                _encode(lost),
                self._keep_ms,
                self.channel,
                job_id,
            )
            if created:
                await self._retire(job_id, created)
                return lost
            # Renewed or written meanwhile: read it again.
        return state

    async def watch(self, job_id: str) -> AsyncIterator[JobState]:
        self._key(job_id)  # a 400 for a name that cannot be a job's
        receiving = await self._listen()
        state = await self.get(job_id)
        if state is None:
            return
        record = self._watched.get(job_id)
        if record is None:
            record = self._watched[job_id] = _Watched(state, stale=not receiving)
        else:
            record.offer(state)
        record.watchers += 1
        try:
            seen = -1
            while True:
                state = record.state
                if state.version > seen:
                    seen = state.version
                    yield state
                    if state.finished:
                        return
                    continue
                changed = record.changed
                wait = POLL_INTERVAL if record.stale else self._recheck_after(state)
                with anyio.move_on_after(wait) as waited:
                    await changed.wait()
                if not waited.cancelled_caught and not record.stale:
                    continue  # a newer state came
                # The lease may have run out, or notifications were missed: read it again.
                record.stale = not reader_of(self.backend).receiving(self.channel)
                fresh = await self.get(job_id)
                if fresh is None:
                    return  # forgotten meanwhile
                record.offer(fresh)
        finally:
            record.watchers -= 1
            if not record.watchers and self._watched.get(job_id) is record:
                del self._watched[job_id]

    async def cancel(self, job_id: str) -> JobState | None:
        state = await self.get(job_id)  # reports a lost owner's job failed first
        if state is None or state.finished:
            return state
        found = await _CANCEL(self.backend, [self._key(job_id)], self.channel, job_id)
        return None if found is None else _decode(job_id, *found[:3])

    # -- the pub/sub reader's listener ----------------------------------------------------

    def message(self, data: bytes) -> None:
        kind, _, rest = data.partition(b"\n")
        if kind == b"u":
            job_id, version, expires, state = rest.split(b"\n", 3)
            record = self._watched.get(job_id.decode())
            if record is not None and int(version) > record.state.version:
                record.offer(_decode(record.state.id, version, state, expires))
        elif kind == b"c":
            self._stop(rest.decode())

    def outage(self, error: HTTPError | None) -> None:
        # Lost (or back): what was published meanwhile is unknown, so watchers read again.
        for record in self._watched.values():
            record.stale = True
            record.wake()

    # -- helpers ---------------------------------------------------------------------------

    def _key(self, job_id: str) -> str:
        return self.backend.key("job", check_name("job", job_id), "state")

    async def _listen(self) -> bool:
        """Follow the channel; whether this process receives it now."""
        return await reader_of(self.backend).subscribe(self.channel, self)

    def _stop(self, job_id: str) -> None:
        event = self._cancels.get(job_id)
        if event is not None:
            event.set()

    def _recheck_after(self, state: JobState) -> float:
        """Seconds until a watcher should look whether the job's lease ran out."""
        if state.expires is None:
            return math.inf
        return max(self._lease / 4, state.expires - time.time() + 0.01)

    async def _retire(self, job_id: str, created: bytes) -> None:
        """Index a finished job; forget the oldest past ``max_finished``."""
        forgotten = await _RETIRE(
            self.backend, [self._index], job_id, created, self._keep_ms, self.max_finished
        )
        if forgotten:
            async with self.backend.client.pipeline(transaction=False) as pipe:
                for old in forgotten:
                    pipe.delete(self.backend.key("job", old.decode(), "state"))
                await self.backend.call(pipe.execute())


def _encode(state: JobState) -> bytes:
    """The fields of ``state`` that its hash's ``s`` holds, as JSON."""
    fields = {
        "status": state.status.value,
        "progress": state.progress,
        "message": state.message,
        "result": state.result,
        "error": state.error,
    }
    try:
        return orjson.dumps(fields)
    except TypeError:
        logger.error("job %s: its result cannot travel as JSON", state.id)
        fields.update(
            status=JobStatus.FAILED.value,
            result=None,
            error={"type": "internal_error", "message": "The job failed"},
        )
        return orjson.dumps(fields)


def _decode(job_id: str, version: bytes, state: bytes, expires: bytes) -> JobState:
    fields = orjson.loads(state)
    return JobState(
        job_id,
        status=JobStatus(fields["status"]),
        progress=fields["progress"],
        message=fields["message"],
        result=fields["result"],
        error=fields["error"],
        version=int(version),
        expires=int(expires) / 1000 if expires else None,
    )
