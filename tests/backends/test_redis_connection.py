"""RedisBackend.call(): a cancellation that a command swallows is raised again, in a form the
cancel scope that asked for it recognises.

On Python 3.11 redis-py sends through ``asyncio.wait_for``, which may return the result and
drop the cancellation. ``call()`` raises it again; raised as a bare ``CancelledError`` it
escaped the anyio scope that cancelled (anyio swallows only its own cancellations), so a job
cancelled while it saved its progress ended as if the server were shutting down.
"""

from __future__ import annotations

import asyncio
import contextlib

import anyio
import pytest

from asgistream.backends.redis import RedisBackend

pytestmark = pytest.mark.anyio


@pytest.fixture
def backend() -> RedisBackend:
    return RedisBackend("redis://127.0.0.1:1/0")  # never opened: call() gets plain awaitables


async def _swallowing(done: asyncio.Event) -> str:
    """A command that completes although it was cancelled, as ``wait_for`` can on 3.11."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(10)
    done.set()
    return "reply"


async def test_a_swallowed_cancellation_ends_the_scope_that_asked(backend: RedisBackend) -> None:
    done = asyncio.Event()
    after = False
    with anyio.CancelScope() as scope:
        asyncio.get_running_loop().call_later(0.01, scope.cancel)
        await backend.call(_swallowing(done))
        after = True
    assert done.is_set() and scope.cancelled_caught and not after


async def test_a_swallowed_timeout_ends_the_move_on_after(backend: RedisBackend) -> None:
    done = asyncio.Event()
    with anyio.move_on_after(0.01) as scope:
        await backend.call(_swallowing(done))
    assert done.is_set() and scope.cancelled_caught


async def test_a_swallowed_task_cancel_is_raised(backend: RedisBackend) -> None:
    done = asyncio.Event()
    task = asyncio.ensure_future(backend.call(_swallowing(done)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert done.is_set()


async def test_a_reply_without_cancellation_is_returned(backend: RedisBackend) -> None:
    async def reply() -> str:
        return "reply"

    assert await backend.call(reply()) == "reply"
