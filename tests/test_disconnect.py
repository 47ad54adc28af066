"""The disconnect watch and its schedule, on each event loop."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from asgistream.disconnect import watch
from tests.helpers import FakeClient

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend(each_event_loop: str) -> str:
    return each_event_loop


class Beats:
    """A schedule that beats every ``period`` s and stops the watch after ``stop_after``."""

    def __init__(self, period: float, stop_after: int) -> None:
        self.period = period
        self.stop_after = stop_after
        self.beats = 0
        self.dues = 0
        self.last = -1.0
        self.watching = watch(FakeClient().receive, self)

    def due(self) -> float:
        self.dues += 1
        if self.beats >= self.stop_after:
            self.watching.stop("enough")
            return float("inf")
        waited = anyio.current_time() - self.last
        return 0.0 if waited >= self.period else self.period - waited

    async def beat(self) -> None:
        await anyio.lowlevel.checkpoint()  # a beat may wait, as a heartbeat's send does
        self.beats += 1
        self.last = anyio.current_time()


async def test_a_schedule_beats_when_due_and_may_stop_the_body() -> None:
    schedule = Beats(0.02, stop_after=3)
    with anyio.fail_after(3):
        async with schedule.watching as watching:
            await anyio.sleep_forever()
    assert watching.reason == "enough" and schedule.beats == 3


async def test_the_schedule_ends_with_the_body() -> None:
    schedule = Beats(0.01, stop_after=1000)
    async with schedule.watching:
        await anyio.sleep(0.05)
    beats, dues = schedule.beats, schedule.dues
    assert beats >= 1
    await anyio.sleep(0.05)
    # Nothing beats or asks once the block is over: its timer and tasks went with it.
    assert (schedule.beats, schedule.dues) == (beats, dues)
    assert schedule.watching.reason is None


async def test_a_disconnect_stops_the_body_while_a_schedule_runs() -> None:
    client = FakeClient()
    schedule = Beats(0.01, stop_after=1000)
    schedule.watching = watch(client.receive, schedule)
    with anyio.fail_after(3):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_disconnect_later, client)
            async with schedule.watching as watching:
                await anyio.sleep_forever()
    assert watching.disconnected and schedule.beats >= 1


async def _disconnect_later(client: FakeClient) -> None:
    await anyio.sleep(0.05)
    client.disconnect()


async def test_a_stop_after_the_block_cancels_nothing() -> None:
    watching = watch(FakeClient().receive)
    async with watching:
        await anyio.lowlevel.checkpoint()
    # As when the server shuts down while a stream sends its last message.
    watching.stop("shutdown")
    await anyio.sleep(0.01)  # a cancellation of this task would arrive here
    assert watching.reason == "shutdown"
