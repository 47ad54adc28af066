"""When to reconnect after a failure, and when to give up.

The client's reconnections and the proxy's retries upstream (``asgistream.patterns.proxy``)
both wait by a :class:`RetryPolicy` and read ``Retry-After`` with :func:`parse_retry_after`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["DEFAULT_RETRY", "RETRYABLE_STATUSES", "RetryPolicy", "parse_retry_after"]

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Statuses worth another try: the server is busy, restarting or briefly failing."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter and a cap.

    The n-th failure in a row waits ``min(cap, base * factor ** (n - 1) * (1 + jitter * u))``
    seconds, ``u`` uniform in [0, 1): never sooner than asked, never longer than ``cap``.
    ``base`` is the server's ``retry:`` hint once it has sent one, else ``initial``. A
    ``Retry-After`` header (in seconds) on a retryable status is a lower bound, still capped.
    After ``max_attempts`` failures in a row (``None``: no limit) the client gives up; a
    connection that delivered an event starts the count again. ``statuses`` are retried; any
    other error status is final.
    """

    initial: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.2
    max_attempts: int | None = 10
    statuses: frozenset[int] = field(default=RETRYABLE_STATUSES)

    def __post_init__(self) -> None:
        if not (self.initial >= 0 and self.cap >= 0):
            raise ValueError("initial and cap must be >= 0 seconds")
        if not self.factor >= 1:
            raise ValueError(f"factor must be >= 1, not {self.factor!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, not {self.jitter!r}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be None or >= 1, not {self.max_attempts!r}")

    def delay(
        self,
        failures: int,
        *,
        base: float | None = None,
        at_least: float = 0.0,
        u: float | None = None,
    ) -> float:
        """Seconds to wait after ``failures`` failures in a row (``u``: the jitter draw)."""
        if u is None:
            u = random.random()
        wait = self.initial if base is None else base
        for _ in range(failures - 1):
            if wait >= self.cap:
                break
            wait *= self.factor
        return min(self.cap, max(wait * (1 + self.jitter * u), at_least))

    def gives_up(self, failures: int) -> bool:
        """Whether ``failures`` failures in a row are too many."""
        return self.max_attempts is not None and failures >= self.max_attempts


DEFAULT_RETRY = RetryPolicy()
"""The policy a client uses unless told otherwise."""


def parse_retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header value in seconds, or ``None``.

    An HTTP date is not honoured (the policy's cap bounds every wait anyway).
    """
    if value is None:
        return None
    value = value.strip()
    return float(value) if value.isascii() and value.isdigit() else None
