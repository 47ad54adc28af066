"""Negotiation as middleware, for any ASGI app (Starlette and FastAPI included).

It runs the decision of :mod:`asgistream.negotiation` before the app sees the request, so
that the app finds the mode in ``scope["asgistream.mode"]`` (see
:func:`~asgistream.negotiation.get_mode`), and adds ``Vary: Accept`` to the app's response.
"""

from __future__ import annotations

from collections.abc import Callable

from .._headers import with_vary_accept
from .._types import ASGIApp, Message, Receive, Scope, Send
from ..errors import send_error
from ..negotiation import Mode, NegotiationError, Negotiator

__all__ = ["NegotiationMiddleware"]


class NegotiationMiddleware:
    """Negotiate the mode of every HTTP request and store it in ``scope["asgistream.mode"]``.

    Requests for which ``include(scope)`` is false (by default none) pass through untouched.
    A request that cannot be negotiated is answered here with a JSON 400 or 406. Every
    negotiated response carries ``Vary: Accept``, merged with the app's own ``Vary``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        default: Mode = Mode.BATCH,
        include: Callable[[Scope], bool] | None = None,
    ) -> None:
        self.app = app
        self.default = Mode(default)
        self.include = include
        self.negotiator = Negotiator(default=self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.include is not None and not self.include(scope)):
            await self.app(scope, receive, send)
            return
        try:
            self.negotiator(scope)
        except NegotiationError as exc:
            await send_error(send, exc, with_vary_accept())
            return

        async def send_with_vary(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_vary_accept(message.get("headers", ()))
            await send(message)

        await self.app(scope, receive, send_with_vary)
