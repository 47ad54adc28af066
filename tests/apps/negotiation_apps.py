"""A Starlette app and a FastAPI app behind NegotiationMiddleware, for end-to-end tests.

Each answers ``/mode`` with the negotiated mode, ``/varied`` likewise with its own ``Vary``
header, and ``/health`` without negotiation.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Response
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgistream._types import Scope
from asgistream.middleware.negotiation import NegotiationMiddleware
from asgistream.negotiation import SCOPE_KEY


def negotiated(scope: Scope) -> bool:
    """Every path but the health check is negotiated."""
    return bool(scope["path"] != "/health")


# -- Starlette -----------------------------------------------------------------------------


async def mode(request: Request) -> JSONResponse:
    return JSONResponse({"mode": request.scope["asgistream.mode"]})


async def varied(request: Request) -> JSONResponse:
    return JSONResponse({"mode": request.scope[SCOPE_KEY]}, headers={"Vary": "Accept-Encoding"})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"mode": request.scope.get(SCOPE_KEY)})


starlette_app = Starlette(
    routes=[Route("/mode", mode), Route("/varied", varied), Route("/health", health)],
    middleware=[Middleware(NegotiationMiddleware, include=negotiated)],
)


# -- FastAPI -------------------------------------------------------------------------------

fastapi_app = FastAPI()
fastapi_app.add_middleware(NegotiationMiddleware, include=negotiated)


@fastapi_app.get("/mode")
async def fastapi_mode(request: Request) -> dict[str, Any]:
    return {"mode": request.scope["asgistream.mode"]}


@fastapi_app.get("/varied")
async def fastapi_varied(request: Request, response: Response) -> dict[str, Any]:
    response.headers["Vary"] = "Accept-Encoding"
    return {"mode": request.scope[SCOPE_KEY]}


@fastapi_app.get("/health")
async def fastapi_health(request: Request) -> dict[str, Any]:
    return {"mode": request.scope.get(SCOPE_KEY)}
