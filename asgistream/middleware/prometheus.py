"""Prometheus exposition for :class:`~asgistream.middleware.metrics.MetricsMiddleware`.

Needs the ``metrics`` extra (``prometheus-client``): it renders the text format, which a
well-kept library does better than a copy of it would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .metrics import DURATION_BUCKETS, FIRST_EVENT_BUCKETS, ResponseRecord

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["PrometheusSink"]


class PrometheusSink:
    """Metrics kept in a ``prometheus_client`` registry of their own.

    ``registry``: where to register (default: a new ``CollectorRegistry``, so two apps in one
    process never share or collide). ``namespace`` prefixes every metric name.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        namespace: str = "asgistream",
        first_event_buckets: Sequence[float] = FIRST_EVENT_BUCKETS,
        duration_buckets: Sequence[float] = DURATION_BUCKETS,
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        common: dict[str, Any] = {"namespace": namespace, "registry": self.registry}
        labels = ("endpoint", "mode")
        self.responses = Counter("responses", "Responses by status.", (*labels, "status"), **common)
        self.active_streams = Gauge(
            "active_streams", "Streams being sent right now.", labels, **common
        )
        self.first_event_seconds = Histogram(
            "time_to_first_event_seconds",
            "Seconds from the request to its first event.",
            labels,
            buckets=tuple(first_event_buckets),
            **common,
        )
        self.duration_seconds = Histogram(
            "duration_seconds",
            "Seconds from the request to the end of its response.",
            labels,
            buckets=tuple(duration_buckets),
            **common,
        )
        self.events = Counter("events", "Events sent.", labels, **common)
        self.bytes = Counter("sent_bytes", "Body bytes sent.", labels, **common)
        self.errors = Counter("errors", "Errors by type.", (*labels, "type"), **common)
        self.disconnects = Counter(
            "client_disconnects", "Clients that left before the end.", labels, **common
        )
        self.limiter_wait_seconds = Histogram(
            "limiter_wait_seconds",
            "Seconds requests waited for a limiter.",
            ("limiter", *labels),
            buckets=FIRST_EVENT_BUCKETS,
            **common,
        )
        self.limiter_rejections = Counter(
            "limiter_rejections",
            "Requests a limiter answered 503.",
            ("limiter", *labels, "reason"),
            **common,
        )

    def response_started(self, endpoint: str, mode: str, stream: bool) -> None:
        if stream:
            self.active_streams.labels(endpoint, mode).inc()

    def first_event(self, endpoint: str, mode: str, seconds: float) -> None:
        self.first_event_seconds.labels(endpoint, mode).observe(seconds)

    def response_finished(self, record: ResponseRecord) -> None:
        endpoint, mode = record.endpoint, record.mode
        if record.stream:
            self.active_streams.labels(endpoint, mode).dec()
        self.responses.labels(endpoint, mode, str(record.status)).inc()
        self.duration_seconds.labels(endpoint, mode).observe(record.duration)
        if record.events:
            self.events.labels(endpoint, mode).inc(record.events)
        if record.bytes:
            self.bytes.labels(endpoint, mode).inc(record.bytes)
        if record.error is not None:
            self.errors.labels(endpoint, mode, record.error).inc()
        if record.disconnected:
            self.disconnects.labels(endpoint, mode).inc()

    def limiter_waited(self, limiter: str, endpoint: str, mode: str, seconds: float) -> None:
        self.limiter_wait_seconds.labels(limiter, endpoint, mode).observe(seconds)

    def limiter_rejected(self, limiter: str, endpoint: str, mode: str, reason: str) -> None:
        self.limiter_rejections.labels(limiter, endpoint, mode, reason).inc()

    def expose(self) -> tuple[bytes, str]:
        """The Prometheus text format of every metric in the registry."""
        from prometheus_client import exposition

        # generate_latest writes the classic text format (names escaped to underscores),
        # which every Prometheus version reads; say so where the client can.
        content_type = getattr(
            exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST
        )
        return exposition.generate_latest(self.registry), content_type
