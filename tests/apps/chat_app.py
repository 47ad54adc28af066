"""Chat-completions endpoints for end-to-end tests: the mock model, failing and counted ones."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio

from asgistream import App, Request, StreamOptions
from asgistream.patterns.chat import ChatCompletions, ChatRequest
from examples.chat import EchoModel

app = App()
stats = {"started": 0, "finished": 0}


class FailingModel(EchoModel):
    """Echoes the last user message, but fails at the word ``boom``."""

    async def generate(self, request: ChatRequest) -> AsyncIterator[str]:
        async for token in super().generate(request):
            if token.strip() == "boom":
                raise RuntimeError("the model broke")
            yield token


class CountedModel(EchoModel):
    """``tokens`` numbered tokens (a body field), counting starts and ``finally`` blocks."""

    async def generate(self, request: ChatRequest) -> AsyncIterator[str]:
        stats["started"] += 1
        try:
            for i in range(int(request.body.get("tokens", 1000))):
                await anyio.sleep(float(request.body.get("delay", 0.02)))
                yield f" t{i}"
        finally:
            stats["finished"] += 1


# Heartbeats every 50 ms: they must not disturb the SDK's decoder.
app.route("/v1/chat/completions", methods=("POST",))(
    ChatCompletions(EchoModel(), stream=StreamOptions(heartbeat=0.05))
)
app.route("/failing/v1/chat/completions", methods=("POST",))(ChatCompletions(FailingModel()))
app.route("/counted/v1/chat/completions", methods=("POST",))(ChatCompletions(CountedModel()))
app.route("/only-echo/v1/chat/completions", methods=("POST",))(
    ChatCompletions(EchoModel(), models={"echo"})
)


@app.route("/_stats")
async def get_stats(request: Request) -> dict[str, Any]:
    return dict(stats)
