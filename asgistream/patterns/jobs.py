"""Background jobs whose progress clients can watch, as a stream or as a snapshot.

A :class:`JobManager` runs each job in a task group that outlives the request that started
it (usually ``app.tasks``). A job is an async function of a :class:`Progress`, through which
it reports how far it is; whatever it returns is its result. Any number of clients may
:meth:`Job.watch` one job: each first gets the current state, then every later state,
ending with the final one. A watcher slower than the job skips intermediate states (progress
is a state, not a log) but never misses the final state.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ..errors import HTTPError
from ..sse import Event

__all__ = [
    "DEFAULT_MAX_FINISHED",
    "DEFAULT_MAX_RUNNING",
    "Job",
    "JobFunction",
    "JobManager",
    "JobStatus",
    "Progress",
]

DEFAULT_MAX_RUNNING = 100
"""Jobs that may run at once; starting one more answers 503."""

DEFAULT_MAX_FINISHED = 1000
"""Finished jobs whose final state is kept; the oldest is forgotten first."""

logger = logging.getLogger("asgistream")


class JobStatus(enum.StrEnum):
    """Where a job is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Job:
    """One job: its id, its current state and the watchers waiting for its next state."""

    __slots__ = (
        "_changed",
        "_scope",
        "error",
        "id",
        "message",
        "progress",
        "result",
        "status",
        "version",
    )

    def __init__(self, id: str) -> None:
        self.id = id
        self.status = JobStatus.PENDING
        self.progress = 0.0
        self.message = ""
        self.result: Any = None
        self.error: dict[str, str] | None = None
        self.version = 0
        """Counts state changes; a watcher uses it to tell a new state from one it has seen."""
        self._changed = anyio.Event()
        self._scope = anyio.CancelScope()

    def state(self) -> dict[str, Any]:
        """The current state as JSON data."""
        state: dict[str, Any] = {
            "id": self.id,
            "status": self.status.value,
            "progress": self.progress,
            "message": self.message,
        }
        if self.status is JobStatus.SUCCEEDED:
            state["result"] = self.result
        if self.error is not None:
            state["error"] = self.error
        return state

    @property
    def finished(self) -> bool:
        return self.status.finished

    async def watch(self) -> AsyncIterator[dict[str, Any]]:
        """The current state, then each new one, until the final state has been yielded."""
        seen = -1
        while True:
            changed = self._changed
            if self.version != seen:
                seen = self.version
                yield self.state()
                if self.finished:
                    return
                if self.version != seen:
                    continue
            await changed.wait()

    async def events(self) -> AsyncIterator[Event]:
        """:meth:`watch` as typed events: ``progress`` states, then one ``result`` event.

        A job that fails raises an :class:`HTTPError` (500, of the job's error type) where
        its result would come; a cancelled one a 409 (503 if the server shuts down). A
        streaming response turns it into a final ``error`` event, or into an HTTP error if
        nothing was sent yet.
        """
        async for state in self.watch():
            status = self.status
            if status is JobStatus.SUCCEEDED:
                yield Event(state, event="result")
            elif status.finished:
                raise self._failure()
            else:
                yield Event(state, event="progress")

    def _failure(self) -> HTTPError:
        error = self.error or {"type": "internal_error", "message": "The job failed"}
        status = 500
        if self.status is JobStatus.CANCELLED:
            status = 503 if error["type"] == "shutdown" else 409
        return HTTPError(status, error["message"], type=error["type"], detail={"job": self.id})

    def cancel(self) -> None:
        """Ask the job to stop; it ends as ``cancelled`` unless it has finished already."""
        self._scope.cancel()

    def _update(self, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(self, name, value)
        self.version += 1
        changed, self._changed = self._changed, anyio.Event()
        changed.set()


class Progress:
    """What a running job uses to report its progress."""

    __slots__ = ("_job",)

    def __init__(self, job: Job) -> None:
        self._job = job

    @property
    def job_id(self) -> str:
        return self._job.id

    def update(self, progress: float | None = None, message: str | None = None) -> None:
        """Set the progress (0 to 1) and/or the message; watchers see the new state."""
        fields: dict[str, Any] = {}
        if progress is not None:
            if not (isinstance(progress, int | float) and 0.0 <= progress <= 1.0):
                raise ValueError(f"progress must be a number from 0 to 1, not {progress!r}")
            fields["progress"] = float(progress)
        if message is not None:
            fields["message"] = str(message)
        if fields:
            self._job._update(**fields)


JobFunction = Callable[[Progress], Awaitable[Any]]
"""``async def work(progress)``: reports through ``progress`` and returns the result."""


class JobManager:
    """Starts jobs in ``tasks`` and finds them by id.

    ``max_running`` bounds the jobs running at once (one more raises a 503
    :class:`HTTPError` of type ``too_many_jobs``); the states of the last ``max_finished``
    finished jobs are kept, older ones are forgotten. A job that raises ends as ``failed``:
    an :class:`HTTPError` gives the client its type and message, any other exception only
    ``internal_error`` (the traceback goes to the ``asgistream`` logger).
    Create one manager per app, for example in a start-up hook with ``app.tasks``.
    """

    def __init__(
        self,
        tasks: TaskGroup,
        *,
        max_running: int = DEFAULT_MAX_RUNNING,
        max_finished: int = DEFAULT_MAX_FINISHED,
    ) -> None:
        if max_running < 1 or max_finished < 0:
            raise ValueError("max_running must be >= 1 and max_finished >= 0")
        self._tasks = tasks
        self.max_running = max_running
        self.max_finished = max_finished
        self._running: dict[str, Job] = {}
        self._finished: OrderedDict[str, Job] = OrderedDict()

    def start(self, work: JobFunction) -> Job:
        """Start ``work`` as a new job and return it at once."""
        if len(self._running) >= self.max_running:
            raise HTTPError(
                503,
                f"{self.max_running} jobs are running already; try again later",
                type="too_many_jobs",
                headers={"retry-after": "1"},
            )
        job = Job(uuid.uuid4().hex)
        self._running[job.id] = job
        self._tasks.start_soon(self._run, job, work, name=f"job {job.id}")
        return job

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or ``None`` if there is none (or it was forgotten)."""
        return self._running.get(job_id) or self._finished.get(job_id)

    def __getitem__(self, job_id: str) -> Job:
        """The job with this id; a 404 :class:`HTTPError` if there is none."""
        job = self.get(job_id)
        if job is None:
            raise HTTPError(404, f"No job {job_id!r}", type="job_not_found")
        return job

    def __len__(self) -> int:
        return len(self._running) + len(self._finished)

    @property
    def running(self) -> int:
        return len(self._running)

    async def _run(self, job: Job, work: JobFunction) -> None:
        try:
            with job._scope:
                job._update(status=JobStatus.RUNNING)
                result = await work(Progress(job))
                job._update(status=JobStatus.SUCCEEDED, progress=1.0, result=result)
            if not job.finished:
                job._update(
                    status=JobStatus.CANCELLED,
                    error={"type": "cancelled", "message": "The job was cancelled"},
                )
        except Exception as exc:
            # One failing job must not end the app's task group: it fails alone.
            if isinstance(exc, HTTPError):
                error = {"type": exc.type, "message": exc.message}
            else:
                logger.error("job %s failed", job.id, exc_info=exc)
                error = {"type": "internal_error", "message": "The job failed"}
            job._update(status=JobStatus.FAILED, error=error)
        except BaseException:
            # The app shuts down: watchers learn why their job ends, then the task unwinds.
            job._update(
                status=JobStatus.CANCELLED,
                error={"type": "shutdown", "message": "The server is shutting down"},
            )
            raise
        finally:
            self._retire(job)

    def _retire(self, job: Job) -> None:
        self._running.pop(job.id, None)
        if self.max_finished == 0:
            return
        self._finished[job.id] = job
        while len(self._finished) > self.max_finished:
            self._finished.popitem(last=False)
