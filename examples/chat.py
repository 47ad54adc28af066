"""OpenAI-compatible chat completions, answered by a deterministic mock model.

    uvicorn examples.chat:app --port 8000

Any OpenAI client works against it (``base_url="http://127.0.0.1:8000/v1"``, any API key):

    curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
      -d '{"model": "echo", "messages": [{"role": "user", "content": "Hello there"}]}'
    curl -N http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
      -d '{"model": "echo", "stream": true, "delay": 0.3,
           "messages": [{"role": "user", "content": "Hello there, streaming world"}]}'

The mock answers with the words of the last user message, one token per word. To serve a real
model, implement :class:`asgistream.patterns.chat.ChatModel` (``generate`` and ``count_tokens``) and
pass it to :class:`~asgistream.patterns.chat.ChatCompletions` instead.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import anyio

from asgistream import App
from asgistream.patterns.chat import ChatCompletions, ChatModel, ChatRequest, openai_error

MAX_DELAY = 10.0
"""The longest per-token delay a request may ask the mock for, in seconds."""

_TOKEN = re.compile(r"\s*\S+")


def _words(text: str) -> list[str]:
    """Tokens that join back into the text: each word with the spaces before it."""
    return _TOKEN.findall(text)


class EchoModel:
    """A deterministic stand-in for an LLM: it repeats the last user message, word by word.

    ``delay`` is the pause before each token in seconds; a request may set its own with the
    non-OpenAI body field ``"delay"`` (the SDK's ``extra_body={"delay": 0.2}``).
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def count_tokens(self, request: ChatRequest) -> int:
        return sum(len(_words(message.content)) for message in request.messages)

    async def generate(self, request: ChatRequest) -> AsyncIterator[str]:
        delay = self._delay(request)
        question = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        for token in _words(question):
            if delay:
                await anyio.sleep(delay)
            yield token

    def _delay(self, request: ChatRequest) -> float:
        delay = request.body.get("delay", self.delay)
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise openai_error(400, "'delay' must be a number of seconds", param="delay")
        if not 0 <= delay <= MAX_DELAY:
            raise openai_error(400, f"'delay' must be between 0 and {MAX_DELAY}", param="delay")
        return float(delay)


def install(
    app: App, *, path: str = "/v1/chat/completions", model: ChatModel | None = None
) -> None:
    """Serve ``model`` (the mock by default) as OpenAI's chat completions on ``path``."""
    app.route(path, methods=("POST",))(ChatCompletions(model or EchoModel()))


app = App()
install(app)
