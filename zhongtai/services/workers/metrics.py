"""Prometheus metrics of a channel worker (labels: ``channel`` and ``outcome`` only).

Each worker owns a ``CollectorRegistry`` (several workers in one test process never collide);
``serve`` exposes it on ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class WorkerMetrics:
    """``zhongtai_worker_{delivered,failed,retried,suppressed,duplicates,commit_hangs}_total`` and
    ``zhongtai_worker_delivery_latency_seconds`` (one adapter call, by result)."""

    def __init__(self, channel: str, registry: CollectorRegistry | None = None) -> None:
        self.channel = channel
        self.registry = registry or CollectorRegistry()
        labels = ("channel", "outcome")
        r = self.registry
        self._delivered = Counter("zhongtai_worker_delivered", "Actions delivered (outcome: first | in_doubt "
                                  "re-delivery after a crash)", labels, registry=r)
        self._failed = Counter("zhongtai_worker_failed", "Actions dead-lettered (outcome: permanent | "
                               "retries_exhausted | invalid)", labels, registry=r)
        self._retried = Counter("zhongtai_worker_retried", "Attempts that will be retried (outcome: transient | "
                                "contacts | redis: a lost Redis connection)", labels, registry=r)
        self._suppressed = Counter("zhongtai_worker_suppressed", "Actions not sent on purpose (outcome: the "
                                   "reason)", labels, registry=r)
        self._duplicates = Counter("zhongtai_worker_duplicates", "Messages of an action already settled "
                                   "(outcome: duplicate | replay)", labels, registry=r)
        self._commit_hangs = Counter("zhongtai_worker_commit_hangs", "Kafka commits stuck past "
                                     "worker.commit_watchdog_ms; the process then exits with code 75 for its "
                                     "supervisor to restart it (outcome: the librdkafka call it was stuck in)",
                                     labels, registry=r)
        self._latency = Histogram("zhongtai_worker_delivery_latency_seconds", "Duration of one adapter call",
                                  labels, buckets=LATENCY_BUCKETS, registry=r)

    def delivered(self, outcome: str) -> None:
        self._delivered.labels(self.channel, outcome).inc()

    def failed(self, outcome: str) -> None:
        self._failed.labels(self.channel, outcome).inc()

    def retried(self, outcome: str) -> None:
        self._retried.labels(self.channel, outcome).inc()

    def suppressed(self, outcome: str) -> None:
        self._suppressed.labels(self.channel, outcome).inc()

    def duplicate(self, outcome: str) -> None:
        self._duplicates.labels(self.channel, outcome).inc()

    def commit_hung(self, outcome: str) -> None:
        self._commit_hangs.labels(self.channel, outcome).inc()

    def latency(self, outcome: str, seconds: float) -> None:
        self._latency.labels(self.channel, outcome).observe(seconds)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve ``/metrics`` on ``port`` (0: any free port) in a daemon thread; returns the port."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return int(server.server_port)
