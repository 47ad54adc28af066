"""The contenders: one app module each, and what each of them can serve."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Contender:
    """An app under test. ``batch``: it answers ``/items`` with JSON when asked; ``only``:
    the scenarios it takes part in (default: all it can serve)."""

    name: str
    label: str
    app: str
    batch: bool = True
    only: tuple[str, ...] | None = None

    @property
    def module(self) -> str:
        return self.app.split(":")[0]

    def serves(self, scenario: str, *, batch_only: bool) -> bool:
        """Whether this contender takes part in ``scenario``."""
        if batch_only and not self.batch:
            return False
        return self.only is None or scenario in self.only


RAW = Contender("raw", "raw ASGI (ceiling)", "benchmarks.apps.raw:app")
ASGISTREAM = Contender("asgistream", "asgistream", "benchmarks.apps.asgistream_app:app")
FASTAPI = Contender(
    "fastapi", "FastAPI: default JSON / StreamingResponse+json", "benchmarks.apps.fastapi_app:app"
)
FASTAPI_ORJSON = Contender(
    "fastapi-orjson",
    "FastAPI: orjson response / StreamingResponse+orjson",
    "benchmarks.apps.fastapi_orjson:app",
)
FASTAPI_SSE = Contender(
    "fastapi-sse", "FastAPI: fastapi.sse", "benchmarks.apps.fastapi_sse:app", batch=False
)
SSE_STARLETTE = Contender(
    "sse-starlette",
    "Starlette JSONResponse / sse-starlette",
    "benchmarks.apps.sse_starlette_app:app",
)
ASGISTREAM_EVENT = Contender(
    "asgistream-event",
    "asgistream, `Event` items",
    "benchmarks.apps.asgistream_app:event_app",
    only=("batch",),
)

CONTENDERS = (
    RAW,
    ASGISTREAM,
    ASGISTREAM_EVENT,
    FASTAPI,
    FASTAPI_ORJSON,
    FASTAPI_SSE,
    SSE_STARLETTE,
)
"""In the order of the result tables."""

BY_NAME = {c.name: c for c in CONTENDERS}
