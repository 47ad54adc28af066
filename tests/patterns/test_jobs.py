"""Jobs: progress, result, failure, cancellation, watchers and limits, through a job store."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from asgistream import HTTPError
from asgistream.patterns.jobs import JobManager, JobState, JobStatus, Progress
from tests.helpers import until
from tests.stores import Stores

pytestmark = pytest.mark.anyio


def stepper(steps: int, gate: anyio.Event | None = None, fail: Exception | None = None) -> Any:
    async def work(progress: Progress) -> dict[str, int]:
        for i in range(steps):
            if gate is not None:
                await gate.wait()
            await anyio.sleep(0.001)
            await progress.update((i + 1) / steps, f"step {i + 1}")
        if fail is not None:
            raise fail
        return {"steps": steps}

    return work


async def collect(jobs: JobManager, job_id: str) -> list[Any]:
    return [event async for event in jobs.events(job_id)]


async def test_watchers_see_progress_then_the_result(stores: Stores) -> None:
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            jobs = JobManager(tasks, store=stores.jobs())
            gate = anyio.Event()
            job = await jobs.start(stepper(5, gate))
            seen: list[list[Any]] = []

            async def watch() -> None:
                seen.append(await collect(jobs, job.id))

            tasks.start_soon(watch)
            tasks.start_soon(watch)
            await anyio.sleep(0.01)
            gate.set()
    assert len(seen) == 2
    for events in seen:
        assert events[-1].event == "result"
        assert events[-1].data["result"] == {"steps": 5}
        assert events[-1].data["progress"] == 1.0
        progress = [e.data["progress"] for e in events]
        assert progress == sorted(progress)
        assert {e.event for e in events[:-1]} == {"progress"}
    state = await jobs.find(job.id)
    assert state.status is JobStatus.SUCCEEDED and state.id == job.id
    assert jobs.running == 0


async def test_a_late_watcher_gets_the_final_state_at_once(stores: Stores) -> None:
    async with anyio.create_task_group() as tasks:
        jobs = JobManager(tasks, store=stores.jobs())
        job = await jobs.start(stepper(2))
    events = await collect(jobs, job.id)
    assert [e.event for e in events] == ["result"]


async def test_failure_is_an_http_error_without_internal_details(stores: Stores) -> None:
    async with anyio.create_task_group() as tasks:
        jobs = JobManager(tasks, store=stores.jobs())
        secret = await jobs.start(stepper(2, fail=RuntimeError("db password")))
        public = await jobs.start(
            stepper(1, fail=HTTPError(422, "bad input", type="invalid_input"))
        )
    failed = await jobs.find(secret.id)
    assert failed.status is JobStatus.FAILED
    assert failed.to_dict()["error"] == {"type": "internal_error", "message": "The job failed"}
    with pytest.raises(HTTPError) as info:
        await collect(jobs, secret.id)
    assert info.value.status == 500
    assert (await jobs.find(public.id)).to_dict()["error"] == {
        "type": "invalid_input",
        "message": "bad input",
    }


async def test_cancel_and_unknown_ids(stores: Stores) -> None:
    async with anyio.create_task_group() as tasks:
        jobs = JobManager(tasks, store=stores.jobs())
        job = await jobs.start(stepper(1, anyio.Event()))
        await anyio.sleep(0.01)
        await jobs.cancel(job.id)
    assert (await jobs.find(job.id)).status is JobStatus.CANCELLED
    with pytest.raises(HTTPError) as info:
        await collect(jobs, job.id)
    assert info.value.status == 409
    for unknown in (jobs.find("nope"), jobs.cancel("nope"), collect(jobs, "nope")):
        with pytest.raises(HTTPError) as info:
            await unknown
        assert info.value.status == 404
    assert await jobs.get("nope") is None


async def test_a_job_is_watched_and_cancelled_from_another_process(stores: Stores) -> None:
    async with anyio.create_task_group() as tasks:
        owner = JobManager(tasks, store=stores.jobs())
        other = JobManager(tasks, store=stores.jobs())  # the same jobs, seen from elsewhere
        job = await owner.start(stepper(3, anyio.Event()))
        seen: list[Any] = []

        async def watch() -> None:
            with pytest.raises(HTTPError) as info:
                async for event in other.events(job.id):
                    seen.append(event.data["status"])
            seen.append(info.value.status)

        tasks.start_soon(watch)
        await until(lambda: seen == ["running"])
        assert (await other.find(job.id)).status is JobStatus.RUNNING
        await other.cancel(job.id)
    assert seen == ["running", 409]
    assert (await owner.find(job.id)).status is JobStatus.CANCELLED
    assert owner.running == 0


async def test_limits(stores: Stores) -> None:
    async with anyio.create_task_group() as tasks:
        jobs = JobManager(tasks, store=stores.jobs(max_finished=1), max_running=2)
        gate = anyio.Event()
        first = await jobs.start(stepper(1, gate))
        second = await jobs.start(stepper(1, gate))
        with pytest.raises(HTTPError) as info:
            await jobs.start(stepper(1))
        assert info.value.status == 503
        gate.set()
    assert await jobs.get(first.id) is None  # the oldest finished job is forgotten
    assert (await jobs.find(second.id)).status is JobStatus.SUCCEEDED


async def test_shutdown_cancels_running_jobs_and_tells_watchers(stores: Stores) -> None:
    async with anyio.create_task_group() as tasks:
        jobs = JobManager(tasks, store=stores.jobs())
        job = await jobs.start(stepper(1, anyio.Event()))
        await anyio.sleep(0.01)
        tasks.cancel_scope.cancel()
    state = await jobs.find(job.id)
    assert state.status is JobStatus.CANCELLED
    assert state.to_dict()["error"]["type"] == "shutdown"


async def test_progress_is_checked(stores: Stores) -> None:
    progress = Progress(stores.jobs(), JobState("x"))
    for bad in (-0.1, 1.5, float("nan"), "0.5"):
        with pytest.raises(ValueError):
            await progress.update(bad)  # type: ignore[arg-type]
