"""Background jobs whose progress clients can watch, as a stream or as a snapshot.

A :class:`JobManager` runs each job in a task group that outlives the request that started
it (usually ``app.tasks``). A job is an async function of a :class:`Progress`, through which
it reports how far it is; whatever it returns is its result. Any number of clients may
watch one job (:meth:`JobManager.events`): each first gets the current state, then every
later state, ending with the final one. A watcher slower than the job skips intermediate
states (progress is a state, not a log) but never misses the final state.

A job's state lives in a :class:`JobStore`: in this process's memory
(:class:`~asgistream.backends.memory.MemoryJobStore`), or in a store shared by many
processes, where a job runs on the process that started it and is watched, queried and
cancelled from any of them. The manager talks to the store only.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup

from ..errors import HTTPError
from ..sse import Event

__all__ = [
    "DEFAULT_MAX_RUNNING",
    "FINAL_WRITE_TIMEOUT",
    "JobFunction",
    "JobManager",
    "JobState",
    "JobStatus",
    "JobStore",
    "Progress",
]

DEFAULT_MAX_RUNNING = 100
"""Jobs that may run at once on one process; starting one more answers 503."""

FINAL_WRITE_TIMEOUT = 5.0
"""Seconds a job's final state may take to reach the store while the server shuts down."""

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


@dataclass(frozen=True, slots=True)
class JobState:
    """One job's state at one moment; every field travels as JSON.

    ``version`` counts the owner's writes, so a watcher tells a new state from one it has
    seen. ``expires`` is the owner's lease: the wall-clock time (``time.time()``) until
    which the process running the job vouches for it (``None``: no lease, the store lives
    and dies with its one process). A store shared by processes reports a running job whose
    lease has passed as failed.
    """

    id: str
    status: JobStatus = JobStatus.PENDING
    progress: float = 0.0
    message: str = ""
    result: Any = None
    error: dict[str, str] | None = None
    version: int = 0
    expires: float | None = None

    @property
    def finished(self) -> bool:
        return self.status.finished

    def to_dict(self) -> dict[str, Any]:
        """The state as clients see it (JSON data)."""
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

    def to_event(self) -> Event:
        """A ``progress`` event, a ``result`` event, or for a job that did not succeed, the
        :class:`HTTPError` a stream ends with is raised: 500 of the job's error type for a
        failure, 409 for a cancelled job (503 if the server shut down)."""
        if self.status is JobStatus.SUCCEEDED:
            return Event(self.to_dict(), event="result")
        if not self.finished:
            return Event(self.to_dict(), event="progress")
        error = self.error or {"type": "internal_error", "message": "The job failed"}
        status = 500
        if self.status is JobStatus.CANCELLED:
            status = 503 if error["type"] == "shutdown" else 409
        raise HTTPError(status, error["message"], type=error["type"], detail={"job": self.id})


class JobStore(Protocol):
    """Where jobs' states live, for the process that runs each job and for every watcher.

    Only a job's owner (the process running it) writes its state; any process may read it,
    watch it or ask for it to be cancelled.
    """

    @property
    def lease(self) -> float | None:
        """Seconds an owner's lease lasts; the owner renews it well before (``None``: no
        leases, as for a store that lives and dies with its one process)."""
        ...

    async def create(self, state: JobState) -> None:
        """Record a new job, before its id is given to anyone."""
        ...

    async def update(self, state: JobState) -> None:
        """Replace the job's state with a newer version and wake its watchers; keep a
        finished state as long as the store's retention says."""
        ...

    async def renew(self, job_id: str, expires: float) -> None:
        """Extend the owner's lease on a running job to ``expires`` (see
        :attr:`JobState.expires`); watchers are not woken."""
        ...

    async def get(self, job_id: str) -> JobState | None:
        """The job's current state, or ``None`` if there is none (or it was forgotten)."""
        ...

    def watch(self, job_id: str) -> AsyncIterator[JobState]:
        """The current state, then each newer one, ending after a finished state (a slow
        watcher may skip intermediate states); nothing for an unknown job."""
        ...

    async def cancel(self, job_id: str) -> JobState | None:
        """Ask the job's owner, on whatever process, to stop it; the job's state (``None``
        if there is no such job). A finished job stays as it is."""
        ...

    async def cancelled(self, job_id: str) -> None:
        """Return once a cancel of the job was asked for (at once if it was already); a
        shared store also returns once the job is no longer this owner's (reported failed
        by another process after its lease ran out, or forgotten), so that its work stops."""
        ...


class Progress:
    """What a running job uses to report its progress."""

    __slots__ = ("_store", "state")

    def __init__(self, store: JobStore, state: JobState) -> None:
        self._store = store
        self.state = state
        """The job's state as last written."""

    @property
    def job_id(self) -> str:
        return self.state.id

    async def update(self, progress: float | None = None, message: str | None = None) -> None:
        """Set the progress (0 to 1) and/or the message; watchers see the new state."""
        fields: dict[str, Any] = {}
        if progress is not None:
            if not (isinstance(progress, int | float) and 0.0 <= progress <= 1.0):
                raise ValueError(f"progress must be a number from 0 to 1, not {progress!r}")
            fields["progress"] = float(progress)
        if message is not None:
            fields["message"] = str(message)
        if fields:
            await self._write(**fields)

    async def _write(self, **fields: Any) -> None:
        state = dataclasses.replace(self.state, version=self.state.version + 1, **fields)
        self.state = state
        await self._store.update(state)


JobFunction = Callable[[Progress], Awaitable[Any]]
"""``async def work(progress)``: reports through ``progress`` and returns the result."""


class JobManager:
    """Starts jobs in ``tasks`` and finds them by id, through ``store``.

    ``store`` keeps the jobs' states (default: a
    :class:`~asgistream.backends.memory.MemoryJobStore`, which keeps the last 1000 finished
    ones). ``max_running`` bounds the jobs this process runs at once (one more raises a 503
    :class:`HTTPError` of type ``too_many_jobs``). A job that raises ends as ``failed``: an
    :class:`HTTPError` gives the client its type and message, any other exception only
    ``internal_error`` (the traceback goes to the ``asgistream`` logger). Create one manager
    per app, for example in a start-up hook with ``app.tasks``.
    """

    def __init__(
        self,
        tasks: TaskGroup,
        *,
        store: JobStore | None = None,
        max_running: int = DEFAULT_MAX_RUNNING,
    ) -> None:
        if max_running < 1:
            raise ValueError("max_running must be >= 1")
        if store is None:
            from ..backends.memory.jobs import MemoryJobStore

            store = MemoryJobStore()
        self.store = store
        self.max_running = max_running
        self._tasks = tasks
        self._running: set[str] = set()

    @property
    def running(self) -> int:
        """Jobs running on this process now."""
        return len(self._running)

    async def start(self, work: JobFunction) -> JobState:
        """Start ``work`` as a new job; return its first state once the store has it."""
        if len(self._running) >= self.max_running:
            raise HTTPError(
                503,
                f"{self.max_running} jobs are running already; try again later",
                type="too_many_jobs",
                headers={"retry-after": "1"},
            )
        state = JobState(uuid.uuid4().hex, expires=self._expiry())
        self._running.add(state.id)
        try:
            await self.store.create(state)
        except BaseException:
            self._running.discard(state.id)
            raise
        self._tasks.start_soon(self._run, Progress(self.store, state), work, name=f"job {state.id}")
        return state

    async def get(self, job_id: str) -> JobState | None:
        """The job's state, or ``None`` if there is no such job (or it was forgotten)."""
        return await self.store.get(job_id)

    async def find(self, job_id: str) -> JobState:
        """The job's state; a 404 :class:`HTTPError` if there is no such job."""
        state = await self.store.get(job_id)
        if state is None:
            raise _not_found(job_id)
        return state

    async def events(self, job_id: str) -> AsyncIterator[Event]:
        """The job's states as typed events (see :meth:`JobState.to_event`): ``progress``
        events, then one ``result`` event or the :class:`HTTPError` of a job that did not
        succeed. An unknown job raises a 404 before anything is yielded, so a stream answers
        it with an HTTP status."""
        found = False
        async for state in self.store.watch(job_id):
            found = True
            yield state.to_event()
        if not found:
            raise _not_found(job_id)

    async def cancel(self, job_id: str) -> JobState:
        """Ask the job to stop, wherever it runs; it ends as ``cancelled`` unless it has
        finished already. Returns its state; a 404 if there is no such job."""
        state = await self.store.cancel(job_id)
        if state is None:
            raise _not_found(job_id)
        return state

    def _expiry(self) -> float | None:
        lease = self.store.lease
        return None if lease is None else time.time() + lease

    async def _run(self, progress: Progress, work: JobFunction) -> None:
        job_id = progress.job_id
        try:
            final = await self._work(progress, work)
            if final is None:
                final = {
                    "status": JobStatus.CANCELLED,
                    "error": {"type": "cancelled", "message": "The job was cancelled"},
                }
            await progress._write(**final)
        except Exception as exc:
            # The store failed; one job's trouble must not end the app's task group.
            logger.error("job %s: its state could not be saved", job_id, exc_info=exc)
        except BaseException:
            # The app shuts down: watchers learn why their job ends, then the task unwinds.
            with anyio.move_on_after(FINAL_WRITE_TIMEOUT, shield=True):
                try:
                    await progress._write(
                        status=JobStatus.CANCELLED,
                        error={"type": "shutdown", "message": "The server is shutting down"},
                    )
                except Exception as exc:
                    logger.error("job %s: its state could not be saved", job_id, exc_info=exc)
            raise
        finally:
            self._running.discard(job_id)

    async def _work(self, progress: Progress, work: JobFunction) -> dict[str, Any] | None:
        """Run ``work`` until it ends or a cancel is asked for (then ``None``); return the
        job's final fields."""
        final: dict[str, Any] | None = None
        async with anyio.create_task_group() as group:
            group.start_soon(self._cancel_when_asked, progress.job_id, group.cancel_scope)
            lease = self.store.lease
            if lease is not None:
                group.start_soon(self._renew, progress.job_id, lease)
            await progress._write(status=JobStatus.RUNNING, expires=self._expiry())
            try:
                result = await work(progress)
            except Exception as exc:
                # One failing job must not end the app's task group: it fails alone.
                final = {"status": JobStatus.FAILED, "error": _error(progress.job_id, exc)}
            else:
                final = {"status": JobStatus.SUCCEEDED, "progress": 1.0, "result": result}
            group.cancel_scope.cancel()  # the helpers above end with the work
        return final

    async def _cancel_when_asked(self, job_id: str, scope: anyio.CancelScope) -> None:
        await self.store.cancelled(job_id)
        scope.cancel()

    async def _renew(self, job_id: str, lease: float) -> None:
        while True:
            await anyio.sleep(lease / 3)
            try:
                await self.store.renew(job_id, time.time() + lease)
            except Exception as exc:
                # The store is unreachable for now: the job goes on and the next period
                # tries again. Past the lease, readers report the job failed.
                logger.warning("job %s: its lease could not be renewed: %s", job_id, exc)


def _error(job_id: str, exc: Exception) -> dict[str, str]:
    if isinstance(exc, HTTPError):
        return {"type": exc.type, "message": exc.message}
    logger.error("job %s failed", job_id, exc_info=exc)
    return {"type": "internal_error", "message": "The job failed"}


def _not_found(job_id: str) -> HTTPError:
    return HTTPError(404, f"No job {job_id!r}", type="job_not_found")
