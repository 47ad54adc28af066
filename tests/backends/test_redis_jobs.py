"""RedisJobStore beyond the shared job tests: the key layout and retention, leases that report
a dead owner's job failed (once), cancels that reach an owner whose reader missed them, and
Redis stopped.

The shared behaviour (watching, results, failures, cancelling from another process, limits)
is in ``tests/patterns/test_jobs.py`` for every backend. Two open :class:`RedisBackend`
objects stand for two processes; an owner that "dies" is one that stops renewing.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

import anyio
import pytest

from asgistream import HTTPError
from asgistream.backends.redis import RedisUnavailable
from asgistream.backends.redis.jobs import OWNER_LOST, RedisJobStore
from asgistream.patterns.jobs import JobManager, JobState, JobStatus, Progress
from tests.helpers import until
from tests.redis_server import RedisServer, processes, redis_server

pytestmark = pytest.mark.anyio

QUICK = 1.0
"""The socket timeout of these tests' backends."""

LEASE = 0.4
"""A short lease, so that a dead owner's job fails within the test's time."""


def gated(gate: anyio.Event) -> Any:
    async def work(progress: Progress) -> str:
        await progress.update(0.5, "half way")
        await gate.wait()
        return "done"

    return work


async def running(store: RedisJobStore, job_id: str | None = None) -> JobState:
    """A job created and set running by an owner that never renews its lease (it "died")."""
    state = JobState(job_id or uuid.uuid4().hex)
    await store.create(state)
    state = dataclasses.replace(state, status=JobStatus.RUNNING, version=1, message="working")
    await store.update(state)
    return state


async def test_key_layout_retention_and_names(redis_server: RedisServer) -> None:
    async with processes(redis_server.url, 1, socket_timeout=QUICK) as (backend,):
        store = RedisJobStore(backend, max_finished=2, finished_ttl=5.0, lease=LEASE)
        client = backend.client
        async with anyio.create_task_group() as tasks:
            jobs = JobManager(tasks, store=store)
            gate = anyio.Event()
            job = await jobs.start(gated(gate))
            await until(lambda: jobs.running == 1)
            key = f"{backend.prefix}:{{job:{job.id}}}:state"
            fields = await client.hgetall(key)
            assert fields[b"f"] == b"0" and fields[b"o"] == backend.process_id.encode()
            assert 0 < await client.pttl(key) <= (LEASE + 5.0) * 1000  # bounded while running
            gate.set()
        fields = await client.hgetall(key)
        assert fields[b"f"] == b"1" and b"e" not in fields
        assert 0 < await client.pttl(key) <= 5000  # kept finished_ttl once finished
        index = f"{backend.prefix}:{{jobs:finished}}:index"
        assert await client.zrange(index, 0, -1) == [job.id.encode()]

        async with anyio.create_task_group() as tasks:
            jobs = JobManager(tasks, store=store)
            later = [await jobs.start(gated(gate)) for _ in range(3)]
        assert await client.zcard(index) == 2  # at most max_finished, the oldest forgotten
        assert await store.get(job.id) is None and not await client.exists(key)
        assert await store.get(later[0].id) is None
        assert [(await jobs.find(j.id)).status for j in later[1:]] == [JobStatus.SUCCEEDED] * 2
        keys = await client.keys(f"{backend.prefix}:*")
        tagged = f"{backend.prefix}:{{".encode()  # PREFIX:{KIND:NAME}:PART, a hash tag each
        assert keys and all(isinstance(k, bytes) and k.startswith(tagged) for k in keys)

        assert len(job.id) == 32 and int(job.id, 16) >= 0  # uuid4: 122 random bits
        for bad in ("a:b", "{job:x}", "", "x" * 129):
            for call in (store.get(bad), store.cancel(bad), jobs.find(bad)):
                with pytest.raises(HTTPError) as info:
                    await call
                assert info.value.status == 400 and info.value.type == "invalid_job"


async def test_a_job_whose_owner_died_is_reported_failed_once(redis_server: RedisServer) -> None:
    async with processes(redis_server.url, socket_timeout=QUICK) as (a, b):
        owner, other = RedisJobStore(a, lease=LEASE), RedisJobStore(b, lease=LEASE)
        state = await running(owner)
        seen: list[JobState] = []

        async def watch() -> None:
            seen.extend([s async for s in other.watch(state.id)])

        started = time.monotonic()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(watch)
            assert (await other.get(state.id)).status is JobStatus.RUNNING  # type: ignore[union-attr]
            with anyio.fail_after(LEASE * 3):
                await until(lambda: bool(seen) and seen[-1].finished, limit=LEASE * 3)
        waited = time.monotonic() - started
        assert LEASE * 0.9 < waited < LEASE + 0.5, waited  # within the lease bound
        assert [s.status for s in seen] == [JobStatus.RUNNING, JobStatus.FAILED]
        failed = seen[-1]
        assert failed.error == OWNER_LOST and failed.message == "working"
        assert failed.version == state.version + 1
        with pytest.raises(HTTPError) as info:
            failed.to_event()
        assert info.value.status == 500 and info.value.type == "owner_lost"

        # Every process agrees, and the late owner cannot overwrite the final state.
        states = [await s.get(state.id) for s in (owner, other, other)]
        assert {(s.status, s.version) for s in states if s} == {(JobStatus.FAILED, 2)}
        await owner.update(dataclasses.replace(state, status=JobStatus.SUCCEEDED, version=2))
        await owner.update(dataclasses.replace(state, progress=0.9, version=5))
        assert await other.get(state.id) == failed
        with anyio.fail_after(1):
            await owner.cancelled(state.id)  # the owner learns its job was taken from it


async def test_concurrent_readers_write_the_failure_once(redis_server: RedisServer) -> None:
    async with processes(redis_server.url, socket_timeout=QUICK) as (a, b):
        stores = [RedisJobStore(backend, lease=0.1) for backend in (a, b, a, b)]
        state = await running(stores[0])
        await anyio.sleep(0.15)
        got: list[JobState | None] = []
        published: list[bytes] = []

        async with anyio.create_task_group() as tasks:
            pubsub = a.client.pubsub()
            await pubsub.subscribe(stores[0].channel)

            async def read(store: RedisJobStore) -> None:
                got.append(await store.get(state.id))

            for store in stores:
                tasks.start_soon(read, store)
        with anyio.fail_after(2):
            while (message := await pubsub.get_message(timeout=0.2)) is not None:
                if message["type"] == "message":
                    published.append(message["data"])
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        assert {(s.status, s.version) for s in got if s} == {(JobStatus.FAILED, 2)}
        assert len(got) == 4 and len(published) == 1  # one write, one notification


async def test_an_owner_that_missed_its_renewals_stops_its_job(redis_server: RedisServer) -> None:
    async with processes(redis_server.url, socket_timeout=QUICK) as (a, b):
        owner, other = RedisJobStore(a, lease=LEASE), RedisJobStore(b, lease=LEASE)
        renew = owner.renew
        stalled = True

        async def stalling(job_id: str, expires: float) -> None:
            if not stalled:  # a partition from Redis, or a blocked event loop, for a while
                await renew(job_id, expires)

        owner.renew = stalling  # type: ignore[method-assign]
        gate = anyio.Event()
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                jobs = JobManager(tasks, store=owner)
                job = await jobs.start(gated(gate))
                await anyio.sleep(LEASE * 1.5)
                assert (await other.get(job.id)).status is JobStatus.FAILED  # type: ignore[union-attr]
                stalled = False
                # The owner learns it at its next renewal and stops; its final write is refused.
                await until(lambda: jobs.running == 0, limit=LEASE)
        assert not gate.is_set()
        final = await jobs.find(job.id)
        assert final.status is JobStatus.FAILED and final.error == OWNER_LOST


async def test_a_cancel_reaches_an_owner_whose_reader_missed_it(redis_server: RedisServer) -> None:
    async with processes(redis_server.url, socket_timeout=QUICK) as (a, b):
        owner, other = RedisJobStore(a, lease=LEASE), RedisJobStore(b, lease=LEASE)
        owner.message = lambda data: None  # type: ignore[method-assign]
        async with anyio.create_task_group() as tasks:
            jobs = JobManager(tasks, store=owner)
            job = await jobs.start(gated(anyio.Event()))
            await until(lambda: jobs.running == 1)
            await anyio.sleep(0.05)
            started = time.monotonic()
            await JobManager(tasks, store=other).cancel(job.id)
            with anyio.fail_after(LEASE):
                await until(lambda: jobs.running == 0, limit=LEASE)
        assert time.monotonic() - started < LEASE  # the next renewal (every LEASE/3) sees it
        assert (await other.get(job.id)).status is JobStatus.CANCELLED  # type: ignore[union-attr]


async def test_redis_stopped_is_a_503_and_watchers_end_then_it_recovers() -> None:
    with redis_server() as server:
        async with processes(server.url, socket_timeout=QUICK) as (a, b):
            owner, other = RedisJobStore(a), RedisJobStore(b)
            state = await running(owner)
            watched: list[Any] = []

            async def watch() -> None:
                try:
                    async for s in other.watch(state.id):
                        watched.append(s.status)
                except HTTPError as exc:
                    watched.append(exc)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(watch)
                await until(lambda: watched == [JobStatus.RUNNING])
                server.stop()
                with anyio.fail_after(3 * QUICK):
                    await until(lambda: len(watched) == 2, limit=3 * QUICK)
            assert isinstance(watched[-1], RedisUnavailable)
            for call in (other.get(state.id), other.cancel(state.id), owner.create(JobState("x"))):
                started = time.monotonic()
                with pytest.raises(RedisUnavailable) as info:
                    await call
                assert info.value.status == 503 and info.value.headers["retry-after"] == "1"
                assert time.monotonic() - started < 3 * QUICK

            server.start()  # empty: no persistence, as after a failover to an empty replica
            assert await other.get(state.id) is None
            async with anyio.create_task_group() as tasks:
                jobs = JobManager(tasks, store=owner)
                job = await jobs.start(gated(anyio.Event()))
                await until(lambda: jobs.running == 1)
                events = other.watch(job.id)
                with anyio.fail_after(2):
                    while (await anext(events)).status is not JobStatus.RUNNING:
                        pass
                    await JobManager(tasks, store=other).cancel(job.id)
                    assert (await anext(events)).status is JobStatus.CANCELLED
