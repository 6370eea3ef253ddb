"""The dashboard's own Prometheus metrics (prometheus-client), on a registry per app.

- ``zhongtai_dashboard_requests_total{route, method, status}``: HTTP requests; ``route`` is one of
  the app's fixed paths or ``other`` (never the raw path: low cardinality);
- ``zhongtai_dashboard_sse_clients``: open Server-Sent-Events streams;
- ``zhongtai_dashboard_redis_read_seconds{what}``: latency of Redis reads (totals, funnel, tags,
  experiments, discover);
- ``zhongtai_dashboard_consumer_lag_records{group}``: the job group's lag as last read;
- ``zhongtai_pipeline_received_total``, ``zhongtai_pipeline_valid_total``,
  ``zhongtai_pipeline_dlq_total{reason}``: the job's totals as last read from Redis, exported as
  counters so that Prometheus computes events/s and DLQ rate with ``rate()``. The reasons are the
  decoder's fixed set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

ROUTES = ("/", "/events", "/api/summary", "/api/funnel", "/api/experiments", "/healthz", "/metrics")


class _TotalsCollector(Collector):
    def __init__(self, totals: Callable[[], Mapping[str, int]]) -> None:
        self.totals = totals

    def collect(self) -> Iterable[CounterMetricFamily]:
        t = self.totals()
        received = CounterMetricFamily("zhongtai_pipeline_received", "Records received by the job (valid + DLQ)")
        valid = CounterMetricFamily("zhongtai_pipeline_valid", "Records that decoded and validated")
        dlq = CounterMetricFamily("zhongtai_pipeline_dlq", "Records sent to the DLQ, by reason", labels=["reason"])
        if t:
            received.add_metric([], float(t.get("received", 0)))
            valid.add_metric([], float(t.get("valid", 0)))
            for k, v in sorted(t.items()):
                if k.startswith("dlq:"):
                    dlq.add_metric([k[4:]], float(v))
        yield received
        yield valid
        yield dlq


class DashboardMetrics:
    """The metric objects of one dashboard app; ``registry`` is what ``/metrics`` serves."""

    def __init__(self, totals: Callable[[], Mapping[str, int]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "zhongtai_dashboard_requests", "HTTP requests served", ["route", "method", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.sse_clients = Gauge("zhongtai_dashboard_sse_clients", "Open SSE streams", registry=self.registry)
        self.redis_read = Histogram(
            "zhongtai_dashboard_redis_read_seconds", "Latency of the dashboard's Redis reads", ["what"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )  # fmt: skip
        self.lag = Gauge(
            "zhongtai_dashboard_consumer_lag_records", "Kafka lag of the job's group as last read", ["group"],
            registry=self.registry,
        )  # fmt: skip
        self.registry.register(_TotalsCollector(totals))

    def observe_redis(self, what: str, seconds: float) -> None:
        self.redis_read.labels(what).observe(seconds)

    @staticmethod
    def route_of(path: str) -> str:
        return path if path in ROUTES else "other"
