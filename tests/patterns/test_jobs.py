"""Jobs: progress, result, failure, cancellation, watchers and limits (in-process)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from asgistream import HTTPError
from asgistream.patterns.jobs import JobManager, JobStatus, Progress

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def stepper(steps: int, gate: anyio.Event | None = None, fail: Exception | None = None) -> Any:
    async def work(progress: Progress) -> dict[str, int]:
        for i in range(steps):
            if gate is not None:
                await gate.wait()
            await anyio.sleep(0.001)
            progress.update((i + 1) / steps, f"step {i + 1}")
        if fail is not None:
            raise fail
        return {"steps": steps}

    return work


async def collect(job: Any) -> list[Any]:
    return [event async for event in job.events()]


async def test_watchers_see_progress_then_the_result() -> None:
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            jobs = JobManager(tasks)
            gate = anyio.Event()
            job = jobs.start(stepper(5, gate))
            seen: list[list[Any]] = []

            async def watch() -> None:
                seen.append(await collect(job))

            tasks.start_soon(watch)
            tasks.start_soon(watch)
            await anyio.sleep(0.01)
            gate.set()
    for events in seen:
        assert events[-1].event == "result"
        assert events[-1].data["result"] == {"steps": 5}
        assert events[-1].data["progress"] == 1.0
        progress = [e.data["progress"] for e in events]
        assert progress == sorted(progress)
        assert {e.event for e in events[:-1]} == {"progress"}
    assert job.status is JobStatus.SUCCEEDED
    assert jobs[job.id] is job and len(jobs) == 1 and jobs.running == 0


async def test_a_late_watcher_gets_the_final_state_at_once() -> None:
    async with anyio.create_task_group() as tasks:
        jobs = JobManager(tasks)
        job = jobs.start(stepper(2))
    events = await collect(job)
    assert [e.event for e in events] == ["result"]


async def test_failure_is_an_http_error_without_internal_details() -> None:
    async with anyio.create_task_group() as tasks:
        jobs = JobManager(tasks)
        secret = jobs.start(stepper(2, fail=RuntimeError("db password")))
        public = jobs.start(stepper(1, fail=HTTPError(422, "bad input", type="invalid_input")))
    assert secret.status is JobStatus.FAILED
    assert secret.state()["error"] == {"type": "internal_error", "message": "The job failed"}
    with pytest.raises(HTTPError) as info:
        await collect(secret)
    assert info.value.status == 500
    assert public.state()["error"] == {"type": "invalid_input", "message": "bad input"}


async def test_cancel_and_unknown_ids() -> None:
    async with anyio.create_task_group() as tasks:
        jobs = JobManager(tasks)
        job = jobs.start(stepper(1, anyio.Event()))
        await anyio.sleep(0.01)
        job.cancel()
    assert job.status is JobStatus.CANCELLED
    with pytest.raises(HTTPError) as info:
        await collect(job)
    assert info.value.status == 409
    with pytest.raises(HTTPError) as info:
        jobs["nope"]
    assert info.value.status == 404


async def test_limits() -> None:
    async with anyio.create_task_group() as tasks:
        jobs = JobManager(tasks, max_running=2, max_finished=1)
        gate = anyio.Event()
        first, second = jobs.start(stepper(1, gate)), jobs.start(stepper(1, gate))
        with pytest.raises(HTTPError) as info:
            jobs.start(stepper(1))
        assert info.value.status == 503
        gate.set()
    assert jobs.get(first.id) is None and jobs.get(second.id) is second


async def test_shutdown_cancels_running_jobs_and_tells_watchers() -> None:
    async with anyio.create_task_group() as tasks:
        jobs = JobManager(tasks)
        job = jobs.start(stepper(1, anyio.Event()))
        await anyio.sleep(0.01)
        tasks.cancel_scope.cancel()
    assert job.status is JobStatus.CANCELLED
    assert job.state()["error"]["type"] == "shutdown"


async def test_progress_is_checked() -> None:
    from asgistream.patterns.jobs import Job

    progress = Progress(Job("x"))
    for bad in (-0.1, 1.5, float("nan"), "0.5"):
        with pytest.raises(ValueError):
            progress.update(bad)  # type: ignore[arg-type]
