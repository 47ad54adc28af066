"""The stores of one process, in its memory: the default of every stateful pattern.

Each implements a protocol that lives beside its feature: :class:`MemoryEventLog` an
:class:`~asgistream.patterns.eventlog.EventLog`, :class:`MemoryFanout` a
:class:`~asgistream.patterns.fanout.FanoutBackend`, :class:`MemoryJobStore` a
:class:`~asgistream.patterns.jobs.JobStore`, :class:`MemorySlots` a limiter's
:class:`~asgistream.middleware.limiter.Slots`.

Each class is imported from its module when first used, so that a limiter, say, does not
import the patterns with the memory store they share a package with.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .eventlog import MemoryEventLog, TooManyTopics
    from .fanout import MemoryFanout
    from .jobs import MemoryJobStore
    from .slots import MemorySlots

__all__ = ["MemoryEventLog", "MemoryFanout", "MemoryJobStore", "MemorySlots", "TooManyTopics"]

_MODULES = {
    "MemoryEventLog": "eventlog",
    "TooManyTopics": "eventlog",
    "MemoryFanout": "fanout",
    "MemoryJobStore": "jobs",
    "MemorySlots": "slots",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
