"""Implementations of the stateful patterns' stores.

Each store's protocol lives beside its feature: ``EventLog`` in
:mod:`asgistream.patterns.eventlog`, ``FanoutBackend`` in :mod:`asgistream.patterns.fanout`,
``JobStore`` in :mod:`asgistream.patterns.jobs`, ``Slots`` in
:mod:`asgistream.middleware.limiter`. :mod:`asgistream.backends.memory` implements them all
in one process's memory, the default.
"""
