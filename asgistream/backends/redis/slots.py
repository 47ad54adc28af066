"""A limiter's :class:`~asgistream.middleware.limiter.Slots` counted in Redis, shared by
every process of a deployment.

Every change is one Lua script, so the count, the queue and the grants move together. The
keys of a limiter share one hash tag (one Redis Cluster slot)::

    PREFIX:{slots:NAME}:used      units held now, by all processes
    PREFIX:{slots:NAME}:queue     sorted set: waiting entries, scored by arrival
    PREFIX:{slots:NAME}:weights   hash: entry -> units, for waiting and held entries
    PREFIX:{slots:NAME}:leases    sorted set: process -> the end of its lease (Redis time, ms)
    PREFIX:{slots:NAME}:counts    hash: process -> its entries (waiting and held)
    PREFIX:{slots:NAME}:seq       the arrival counter

An entry is one request's place in the queue and then its units, named ``PROCESS:N``. Each
script first takes back the entries of every process whose lease has ended, and ends by
granting the queue's head as long as its weight fits, in arrival order, then publishes the
granted entries on each owner's channel (``PREFIX:slots:NAME:PROCESS``). A process renews its
lease while it holds or waits, and checks its waiters' entries every ``poll`` seconds (a lost
notification costs at most that; so does a dead process's lease, which only a script takes
back). Units it could not give back while Redis was unreachable, or that Redis lost (a
flush, a lost lease), are put right by one script that makes this process's entries what
the process knows, at the first check that reaches Redis. The keys expire three leases after
the last script.

What holds: no more than ``capacity`` units are granted while every process renews its lease.
A process cut off from Redis for longer than a lease loses its entries (others may be granted
its units); its streams go on, and it claims their units again when it reaches Redis, so for
that while the deployment may hold more than ``capacity``. Grants are in arrival order across
processes; waiters whose times end within a millisecond of each other on different processes
may leave in either order.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from ...errors import HTTPError
from ...middleware.limiter import LimiterFull
from ._pubsub import reader_of
from .connection import UNAVAILABLE_ERRORS, RedisBackend, RedisUnavailable, check_name

__all__ = ["DEFAULT_LEASE", "RedisSlots"]

logger = logging.getLogger("asgistream")

DEFAULT_LEASE = 10.0
"""Seconds a process's units and queue places outlive its last renewal."""

POLL_INTERVAL = 1.0
"""Seconds between two checks of this process's waiters (at most; a quarter lease if less)."""

MAX_COMMANDS = 32
"""Scripts one :class:`RedisSlots` runs at once: a burst of requests waits for a turn
instead of exhausting the connection pool."""

_PARTS = ("used", "queue", "weights", "leases", "counts", "seq")

# Entry states, as the scripts answer them.
_GONE, _HELD, _QUEUED = 0, 1, 2

_PRELUDE = """
local used_key, queue_key, weights_key, leases_key, counts_key, seq_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local capacity = tonumber(ARGV[1])
local lease_ms = tonumber(ARGV[2])
local channel = ARGV[3]
local pid = ARGV[4]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function used()
  return tonumber(redis.call('GET', used_key) or '0')
end

local function owner(id)
  return string.match(id, '^[^:]+')
end

local function count(p, delta)
  if redis.call('HINCRBY', counts_key, p, delta) <= 0 then
    redis.call('HDEL', counts_key, p)
  end
end

local function add(id, weight, queued)
  redis.call('HSET', weights_key, id, weight)
  if queued then
    redis.call('ZADD', queue_key, redis.call('INCR', seq_key), id)
  else
    redis.call('INCRBY', used_key, weight)
  end
  count(owner(id), 1)
end

local function drop(id)
  local weight = redis.call('HGET', weights_key, id)
  if not weight then
    return
  end
  redis.call('HDEL', weights_key, id)
  count(owner(id), -1)
  if redis.call('ZREM', queue_key, id) == 0 then
    redis.call('DECRBY', used_key, weight)
  end
end

local function reap()
  local dead = redis.call('ZRANGEBYSCORE', leases_key, '-inf', now)
  for _, p in ipairs(dead) do
    redis.call('ZREM', leases_key, p)
    if redis.call('HEXISTS', counts_key, p) == 1 then
      for _, id in ipairs(redis.call('HKEYS', weights_key)) do
        if owner(id) == p then
          drop(id)
        end
      end
      redis.call('HDEL', counts_key, p)
    end
  end
end

local function grant()
  local free = capacity - used()
  local granted = {}
  while true do
    local head = redis.call('ZRANGE', queue_key, 0, 0)[1]
    if not head then
      break
    end
    local weight = tonumber(redis.call('HGET', weights_key, head))
    if weight and weight > free then
      break
    end
    redis.call('ZREM', queue_key, head)
    if weight then
      redis.call('INCRBY', used_key, weight)
      free = free - weight
      local p = owner(head)
      granted[p] = granted[p] and (granted[p] .. ' ' .. head) or head
    end
  end
  for p, ids in pairs(granted) do
    redis.call('PUBLISH', channel .. p, ids)
  end
end

local function lease()
  redis.call('ZADD', leases_key, now + lease_ms, pid)
end

local function touch()
  for i = 1, #KEYS do
    redis.call('PEXPIRE', KEYS[i], lease_ms * 3)
  end
end
"""

# ARGV[5] entry, ARGV[6] weight, ARGV[7] "1" if it may wait. Returns {state, used}.
_ACQUIRE = """
reap()
grant()
local id, weight = ARGV[5], tonumber(ARGV[6])
local state = 0
if redis.call('ZCARD', queue_key) == 0 and used() + weight <= capacity then
  add(id, weight, false)
  state = 1
elseif ARGV[7] == '1' then
  add(id, weight, true)
  state = 2
end
if state ~= 0 then
  lease()
end
touch()
return {state, used()}
"""

# ARGV[5] an entry whose wait ended: dropped if still queued. Returns {state, used}.
_WITHDRAW = """
reap()
local id = ARGV[5]
local state = 0
if redis.call('ZSCORE', queue_key, id) then
  drop(id)
  grant()
elseif redis.call('HEXISTS', weights_key, id) == 1 then
  state = 1
end
touch()
return {state, used()}
"""

# ARGV[5] n, then n entries to drop (waiting or held), then optionally an entry to shrink:
# old, new, units kept (the old entry's other units are given back). Returns used.
_RELEASE = """
reap()
local n = tonumber(ARGV[5])
for i = 6, 5 + n do
  drop(ARGV[i])
end
local old = ARGV[6 + n]
if old then
  local weight = redis.call('HGET', weights_key, old)
  if weight and not redis.call('ZSCORE', queue_key, old) then
    local keep = tonumber(ARGV[8 + n])
    redis.call('HDEL', weights_key, old)
    redis.call('HSET', weights_key, ARGV[7 + n], keep)
    redis.call('DECRBY', used_key, tonumber(weight) - keep)
  end
end
grant()
touch()
return used()
"""

# ARGV[5] "1" to renew this process's lease, then entries to check.
# Returns {used, 1 if the lease had been lost, the state of each entry}.
_TICK = """
reap()
grant()
local lost = 0
if ARGV[5] == '1' then
  if not redis.call('ZSCORE', leases_key, pid) then
    lost = 1
  end
  lease()
end
local reply = {used(), lost}
for i = 6, #ARGV do
  local id = ARGV[i]
  if redis.call('ZSCORE', queue_key, id) then
    reply[#reply + 1] = 2
  elseif redis.call('HEXISTS', weights_key, id) == 1 then
    reply[#reply + 1] = 1
  else
    reply[#reply + 1] = 0
  end
end
touch()
return reply
"""

# Makes this process's entries what it knows: ARGV[5] its newest entry number (newer ones are
# left alone: their scripts may not have run yet), ARGV[6] n, then n pairs of an entry it holds
# and its units, then entries to leave as they are (its waiters). Its other entries are
# dropped; held entries Redis lost are added again. Returns used.
_SYNC = """
reap()
local newest = tonumber(ARGV[5])
local n = tonumber(ARGV[6])
local held = {}
for i = 7, 6 + 2 * n, 2 do
  held[ARGV[i]] = tonumber(ARGV[i + 1])
end
local keep = {}
for i = 7 + 2 * n, #ARGV do
  keep[ARGV[i]] = true
end
for _, id in ipairs(redis.call('HKEYS', weights_key)) do
  if owner(id) == pid and not keep[id] and tonumber(string.match(id, '%d+$')) <= newest then
    local weight = held[id]
    if weight == nil then
      drop(id)
    else
      held[id] = nil
      local was = tonumber(redis.call('HGET', weights_key, id))
      if redis.call('ZREM', queue_key, id) == 1 then
        was = 0
      end
      if was ~= weight then
        redis.call('HSET', weights_key, id, weight)
        redis.call('INCRBY', used_key, weight - was)
      end
    end
  end
end
for id, weight in pairs(held) do
  add(id, weight, false)
end
lease()
grant()
touch()
return used()
"""


class _Scripts:
    """The scripts, registered with one client (the backend's, while it is open)."""

    __slots__ = ("acquire", "client", "release", "sync", "tick", "withdraw")

    def __init__(self, client: Redis) -> None:
        self.client = client
        self.acquire = client.register_script(_PRELUDE + _ACQUIRE)
        self.release = client.register_script(_PRELUDE + _RELEASE)
        self.tick = client.register_script(_PRELUDE + _TICK)
        self.sync = client.register_script(_PRELUDE + _SYNC)
        self.withdraw = client.register_script(_PRELUDE + _WITHDRAW)


class _Waiter:
    __slots__ = ("event", "outcome", "queued")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.queued = False
        self.outcome: str | None = None  # "granted", "refused", "failed"

    def settle(self, outcome: str) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self.event.set()


class RedisSlots:
    """``capacity`` units shared by every process that uses the limiter ``name`` on one Redis,
    granted whole and first come first served across all of them.

    Every process must give the same ``capacity``. ``lease``: seconds after which the units
    and queue places of a process that stopped renewing them (it died, or lost Redis for that
    long) come back by themselves; a live process renews every third of it. The backend must
    be open when units are first taken. While Redis is unreachable, :meth:`acquire` raises
    :class:`~asgistream.backends.redis.RedisUnavailable` (a 503 with ``Retry-After``) and the
    requests waiting in this process get it too; units that could not be given back then are
    given back as soon as Redis answers again (or by the lease, if this process ends first).

    ``in_use`` is the deployment's count as Redis last answered this process; ``held`` and
    ``waiting`` are this process's own.
    """

    def __init__(
        self, backend: RedisBackend, name: str, capacity: int, *, lease: float = DEFAULT_LEASE
    ) -> None:
        try:
            check_name("limiter", name)
        except HTTPError as exc:
            raise ValueError(f"bad limiter name {name!r}: {exc}") from None
        if type(capacity) is not int or capacity < 1:
            raise ValueError(f"capacity must be a positive int, not {capacity!r}")
        if not lease > 0:
            raise ValueError(f"lease must be > 0 seconds, not {lease!r}")
        self.capacity = capacity
        self.name = name
        self.lease = lease
        self._backend = backend
        self._keys = [backend.key("slots", name, part) for part in _PARTS]
        self._pid = backend.process_id
        channel = backend.channel("slots", name) + ":"
        self._channel = channel + self._pid
        self._common: list[str | int] = [capacity, max(1, int(lease * 1000)), channel, self._pid]
        self._poll = min(POLL_INTERVAL, lease / 4)
        self._newest = 0  # the number of this process's newest entry
        self._held: dict[str, int] = {}
        self._held_units = 0
        self._waiters: dict[str, _Waiter] = {}
        self._queued = 0
        self._dirty = False  # Redis may disagree with this process: sync at the next tick
        self._closed = False
        self._in_use = 0
        self._renewed = -math.inf
        self._keeping = False
        self._wake = anyio.Event()
        self._scripts: _Scripts | None = None
        self._commands = anyio.Semaphore(MAX_COMMANDS)
        self._withdrawing = anyio.Lock()

    def __repr__(self) -> str:
        return (
            f"RedisSlots({self.name!r}, in_use={self._in_use}/{self.capacity}, "
            f"held here={self._held_units}, waiting here={self._queued})"
        )

    @property
    def in_use(self) -> int:
        """Units held by all processes, as Redis last answered."""
        return self._in_use

    @property
    def held(self) -> int:
        """Units held by this process."""
        return self._held_units

    @property
    def waiting(self) -> int:
        """This process's requests in the queue."""
        return self._queued

    # -- the Slots protocol ------------------------------------------------------------------

    async def acquire(
        self, weight: int, *, queue_timeout: float | None, max_waiting: int | None
    ) -> None:
        if type(weight) is not int or not 1 <= weight <= self.capacity:
            raise ValueError(f"weight must be from 1 to {self.capacity}, not {weight!r}")
        self._keep_soon()
        may_wait = (
            not self._closed
            and queue_timeout != 0
            and (max_waiting is None or len(self._waiters) < max_waiting)
        )
        entry = self._new_entry()
        waiter = _Waiter()
        # Known before the script runs: a grant can be published before its reply arrives.
        self._waiters[entry] = waiter
        in_redis = True  # whether the entry may be in Redis, to be dropped on the way out
        try:
            state, used = await self._run("acquire", entry, weight, int(may_wait))
            self._in_use = used
            if state == _GONE:
                in_redis = False
                raise LimiterFull(
                    "shutdown"
                    if self._closed
                    else "timeout"
                    if queue_timeout == 0
                    else "queue_full"
                )
            if state == _QUEUED:
                waiter.queued = True
                self._queued += 1
                if self._closed:
                    waiter.settle("refused")
                try:
                    with anyio.fail_after(queue_timeout):
                        await waiter.event.wait()
                except TimeoutError:
                    # The grant may be on its way: one that Redis made in time counts. One
                    # withdrawal at a time, so that waiters whose times end together leave
                    # in their order and a lighter one behind a heavy one gets in.
                    async with self._withdrawing:
                        state, self._in_use = await self._run("withdraw", entry)
                    if state != _HELD:
                        in_redis = False
                        raise LimiterFull("timeout") from None
                if waiter.outcome == "refused":
                    raise LimiterFull("shutdown")
                if waiter.outcome == "failed":
                    raise self._backend.unavailable()
        except BaseException:
            self._forget(entry, waiter)
            if in_redis:
                # Queued, granted in the same instant, or unknown (Redis failed mid-way):
                # whichever it is, the entry goes.
                await self._release_in_redis([1, entry])
            raise
        self._forget(entry, waiter)
        self._held[entry] = weight
        self._held_units += weight

    async def release(self, weight: int) -> None:
        await self._release_in_redis(self._unhold(weight))

    def shutdown(self) -> None:
        self._closed = True
        for waiter in self._waiters.values():
            if waiter.queued:
                waiter.settle("refused")

    # -- this process's side ---------------------------------------------------------------

    def _forget(self, entry: str, waiter: _Waiter) -> None:
        if self._waiters.pop(entry, None) is not None and waiter.queued:
            self._queued -= 1

    def _unhold(self, weight: int) -> list[str | int]:
        """Take ``weight`` units off this process's entries; the release script's arguments."""
        if weight > self._held_units:
            raise RuntimeError(
                f"releasing {weight} units but this process holds {self._held_units}"
            )
        held = self._held
        self._held_units -= weight
        exact = next((entry for entry, units in held.items() if units == weight), None)
        if exact is not None:
            del held[exact]
            return [1, exact]
        dropped: list[str] = []
        shrunk: list[str | int] = []
        rest = weight
        for entry, units in list(held.items()):
            del held[entry]
            if units <= rest:
                dropped.append(entry)
                rest -= units
            else:
                kept = self._new_entry()
                held[kept] = units - rest
                shrunk = [entry, kept, units - rest]
                rest = 0
            if rest == 0:
                break
        return [len(dropped), *dropped, *shrunk]

    async def _release_in_redis(self, args: list[str | int]) -> None:
        """Give entries back in Redis, even in a cancelled task; on failure, later."""
        with anyio.CancelScope(shield=True):
            try:
                with anyio.fail_after(self._backend.socket_timeout):
                    self._in_use = await self._run("release", *args)
            except (RedisUnavailable, TimeoutError, RuntimeError) as exc:
                # RuntimeError: the backend is closed. What Redis missed is put right by the
                # next check that reaches it, or by the lease if this process ends first.
                if not self._dirty:
                    logger.warning(
                        "limiter %r: units not given back in Redis yet: %r", self.name, exc
                    )
                self._dirty = True

    async def _run(self, script: str, *args: str | int) -> Any:
        """One script: waits its turn, then runs to the end even if cancelled (a command
        cut short leaves its effect unknown); an unreachable Redis raises
        :class:`RedisUnavailable`."""
        async with self._commands:
            client = self._backend.client
            scripts = self._scripts
            if scripts is None or scripts.client is not client:
                self._scripts = scripts = _Scripts(client)
            function: AsyncScript = getattr(scripts, script)
            with anyio.CancelScope(shield=True):
                return await self._backend.call(
                    function(keys=self._keys, args=[*self._common, *args])
                )

    # -- the keeper: notifications, polls, leases ------------------------------------------

    def _keep_soon(self) -> None:
        if not self._keeping:
            self._backend.start_soon(self._keep, name=f"asgistream slots {self.name}")
            self._keeping = True

    async def _keep(self) -> None:
        """Until the backend closes: renew the lease, check the waiters, put Redis right.

        Grants arrive on this process's channel through the backend's pub/sub reader
        (:meth:`message`); a check every ``poll`` seconds finds those a lost notification
        or a dead process's lease held back.
        """
        reader = reader_of(self._backend)
        try:
            await reader.subscribe(self._channel, self)
            while True:
                with anyio.move_on_after(self._poll):
                    await self._wake.wait()
                self._wake = anyio.Event()
                try:
                    await self._tick(anyio.current_time())
                except Exception as exc:
                    if not isinstance(exc, (*UNAVAILABLE_ERRORS, RedisUnavailable)):
                        logger.exception("limiter %r: the keeper failed", self.name)
                    self.outage(self._backend.unavailable())
        finally:
            self._keeping = False
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await reader.unsubscribe(self._channel, self)

    def message(self, data: bytes) -> None:
        """Entries of this process granted by another's script (from the pub/sub reader)."""
        for entry in data.decode().split():
            waiter = self._waiters.get(entry)
            if waiter is not None:
                waiter.settle("granted")

    def outage(self, error: HTTPError | None) -> None:
        """The channel is lost (``error``: the waiters get it) or receives again."""
        if error is None:
            self._wake.set()  # check at once for grants published while it was lost
            return
        failed = 0
        for waiter in self._waiters.values():
            if waiter.queued and waiter.outcome is None:
                waiter.settle("failed")
                failed += 1
        if failed:
            logger.warning("limiter %r: redis unavailable, %d waiters get 503", self.name, failed)

    async def _tick(self, now: float) -> None:
        """Put Redis right if needed, renew the lease, check the waiters."""
        if self._dirty:
            await self._sync()
        waiting = [e for e, w in self._waiters.items() if w.queued and w.outcome is None]
        # Only entries known to be in Redis have a lease to renew (or to have lost).
        renew = bool(self._held or waiting) and now - self._renewed >= self.lease / 3
        if not waiting and not renew:
            return
        used, lost, *states = await self._run("tick", int(renew), *waiting)
        self._in_use = used
        if renew:
            self._renewed = now
        for entry, state in zip(waiting, states, strict=True):
            waiter = self._waiters.get(entry)
            if waiter is None:
                continue
            if state == _HELD:
                waiter.settle("granted")
            elif state == _GONE:
                # Taken back with this process's lease: it lost Redis for a whole lease.
                waiter.settle("failed")
        if lost:
            logger.warning("limiter %r: lease lost; claiming the units held again", self.name)
            await self._sync()

    async def _sync(self) -> None:
        """Make Redis agree with this process: the units it holds, its waiters' places,
        nothing else (after units that could not be given back, or a lost lease)."""
        self._dirty = False  # a failure from now on makes it dirty again
        held = [x for entry, units in self._held.items() for x in (entry, units)]
        try:
            self._in_use = await self._run(
                "sync", self._newest, len(self._held), *held, *self._waiters
            )
        except BaseException:
            self._dirty = True
            raise

    def _new_entry(self) -> str:
        self._newest += 1
        return f"{self._pid}:{self._newest}"
