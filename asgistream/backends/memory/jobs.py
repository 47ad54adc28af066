"""A :class:`~asgistream.patterns.jobs.JobStore` in this process's memory."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import AsyncIterator

import anyio

from ...patterns.jobs import JobState

__all__ = ["DEFAULT_MAX_FINISHED", "MemoryJobStore"]

DEFAULT_MAX_FINISHED = 1000
"""Finished jobs whose final state is kept; the oldest is forgotten first."""


class _Record:
    __slots__ = ("cancel", "changed", "state")

    def __init__(self, state: JobState) -> None:
        self.state = state
        self.changed = anyio.Event()
        self.cancel = anyio.Event()


class MemoryJobStore:
    """Jobs' states in memory: every running job, and the last ``max_finished`` finished.

    Its jobs run in this process only, so it needs no leases (``lease`` is ``None``).
    """

    lease: float | None = None

    def __init__(self, *, max_finished: int = DEFAULT_MAX_FINISHED) -> None:
        if max_finished < 0:
            raise ValueError("max_finished must be >= 0")
        self.max_finished = max_finished
        self._jobs: dict[str, _Record] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        """Jobs known: running, and finished ones still kept."""
        return len(self._jobs)

    async def create(self, state: JobState) -> None:
        if state.id in self._jobs:
            raise ValueError(f"job {state.id!r} exists already")
        self._jobs[state.id] = _Record(state)

    async def update(self, state: JobState) -> None:
        record = self._jobs.get(state.id)
        if record is None:
            return  # forgotten: nobody can find it any more
        was_finished = record.state.finished
        record.state = state
        changed, record.changed = record.changed, anyio.Event()
        changed.set()
        if state.finished and not was_finished:
            self._retire(state.id)

    async def renew(self, job_id: str, expires: float) -> None:
        record = self._jobs.get(job_id)
        if record is not None:
            record.state = dataclasses.replace(record.state, expires=expires)

    async def get(self, job_id: str) -> JobState | None:
        record = self._jobs.get(job_id)
        return None if record is None else record.state

    async def watch(self, job_id: str) -> AsyncIterator[JobState]:
        record = self._jobs.get(job_id)
        if record is None:
            return
        seen = -1
        while True:
            changed = record.changed
            state = record.state
            if state.version != seen:
                seen = state.version
                yield state
                if state.finished:
                    return
                continue
            await changed.wait()

    async def cancel(self, job_id: str) -> JobState | None:
        record = self._jobs.get(job_id)
        if record is None:
            return None
        if not record.state.finished:
            record.cancel.set()
        return record.state

    async def cancelled(self, job_id: str) -> None:
        record = self._jobs.get(job_id)
        if record is None:
            await anyio.sleep_forever()
        else:
            await record.cancel.wait()

    def _retire(self, job_id: str) -> None:
        finished = self._finished
        finished[job_id] = None
        while len(finished) > self.max_finished:
            forgotten, _ = finished.popitem(last=False)
            self._jobs.pop(forgotten, None)
