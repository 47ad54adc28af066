"""Job progress: start a job, then watch it as a stream or ask for its state.

    uvicorn examples.jobs:app --port 8000
    curl -X POST 'http://127.0.0.1:8000/jobs' -d '{"steps": 5, "delay": 0.5}'
    curl -N 'http://127.0.0.1:8000/jobs/ID?stream=true'     # progress events, then result
    curl 'http://127.0.0.1:8000/jobs/ID'                    # the current state, at once
    curl -X DELETE 'http://127.0.0.1:8000/jobs/ID'          # cancel it

``POST /jobs`` answers 202 with the job's id; the job runs in the app's task group, so it
outlives the request and ends with the server. ``GET /jobs/{id}`` streams ``progress``
events (``status``, ``progress`` from 0 to 1, ``message``) and ends with a ``result`` event,
or an ``error`` event if the job fails; any number of clients may watch one job. An unknown
id is a 404 before anything is streamed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio

from asgistream import App, BatchOptions, HTTPError, JSONResponse, Mode, Request, last_item
from asgistream.patterns.jobs import JobManager, JobStore, Progress

JOBS = "examples.jobs"
"""Where the app's :class:`JobManager` lives in ``app.state``."""


def install(app: App, *, store: JobStore | None = None) -> None:
    """Add the job routes to ``app``, and a job manager that runs in ``app.tasks``.

    ``store`` keeps the jobs' states (default: this process's memory; the demo passes a
    Redis store when ``ASGISTREAM_REDIS_URL`` is set, so any process can answer for a job).
    """

    @app.on_startup
    async def start_jobs(app: App) -> None:
        app.state[JOBS] = JobManager(app.tasks, store=store)

    @app.route("/jobs", methods=["POST"])
    async def create(request: Request) -> JSONResponse:
        """Body (all optional): ``{"steps": 10, "delay": 0.2, "fail_at": null}``."""
        options = await request.json() if await request.body() else {}
        if not isinstance(options, dict):
            raise HTTPError(400, "The body must be a JSON object", type="invalid_body")
        steps = _option(options, "steps", 10, 1, 1000)
        delay = _option(options, "delay", 0.2, 0.0, 10.0)
        fail_at = options.get("fail_at")
        if fail_at is not None:
            fail_at = _option(options, "fail_at", 0, 0, steps)
        job = await _jobs(request).start(_simulate(steps, delay, fail_at))
        url = f"{request.scope.get('root_path', '')}/jobs/{job.id}"
        return JSONResponse({"id": job.id, "url": url}, status=202, headers={"location": url})

    @app.dual("/jobs/{job_id}", batch=BatchOptions(reduce=last_item()))
    async def watch(request: Request) -> AsyncIterator[Any]:
        jobs, job_id = _jobs(request), request.path_params["job_id"]
        if request.mode is Mode.BATCH:
            return _once((await jobs.find(job_id)).to_dict())  # or a 404
        return jobs.events(job_id)  # an unknown id fails its first event: a 404, not a stream

    @app.route("/jobs/{job_id}", methods=["DELETE"])
    async def cancel(request: Request) -> JSONResponse:
        state = await _jobs(request).cancel(request.path_params["job_id"])
        return JSONResponse(state.to_dict(), status=202)


def _jobs(request: Request) -> JobManager:
    jobs: JobManager = request.state[JOBS]
    return jobs


def _simulate(steps: int, delay: float, fail_at: int | None) -> Any:
    async def work(progress: Progress) -> dict[str, Any]:
        for step in range(steps):
            if step == fail_at:
                raise HTTPError(500, f"Step {step} failed on purpose", type="step_failed")
            await anyio.sleep(delay)
            await progress.update((step + 1) / steps, f"step {step + 1} of {steps} done")
        return {"steps": steps, "answer": 42}

    return work


async def _once(value: Any) -> AsyncIterator[Any]:
    yield value


def _option(options: dict[str, Any], name: str, default: Any, low: float, high: float) -> Any:
    value = options.get(name, default)
    kind = float if isinstance(default, float) else int
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise HTTPError(
            400,
            f"{name} must be a number from {low} to {high}",
            type="invalid_parameter",
            detail={"param": name},
        )
    return kind(value)


app = App()
install(app)
