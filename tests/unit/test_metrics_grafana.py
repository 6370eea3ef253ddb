"""docker/prometheus.yml, docker/grafana/zhongtai.json and docker/compose.yaml agree with the metrics we export."""

from __future__ import annotations

import json
import re

import yaml
from prometheus_client import generate_latest

from tests.helpers import ROOT, make_settings
from zhongtai.jobs.metrics import flink_prometheus_options
from zhongtai.services.dashboard.metrics import DashboardMetrics
from zhongtai.services.workers.metrics import WorkerMetrics

DOCKER = ROOT / "docker"
#: Flink metrics that only a Kafka source registers (not the datagen job of test_metrics_flink).
KAFKA_SOURCE_ONLY = {"flink_taskmanager_job_task_operator_pendingRecords"}


def grafana() -> dict:
    return json.loads((DOCKER / "grafana" / "zhongtai.json").read_text())


def grafana_metric_names(prefix: str) -> set[str]:
    """Metric names (``prefix``*) used by the Grafana dashboard's queries, without _bucket/_total suffix rules."""
    exprs = [t["expr"] for p in grafana()["panels"] for t in p["targets"]]
    exprs.append(grafana()["templating"]["list"][0]["definition"])
    return {m for e in exprs for m in re.findall(rf"\b{prefix}[A-Za-z0-9_]+", e)}


def _exported(text: str) -> set[str]:
    return {ln.split("{", 1)[0].split(" ", 1)[0] for ln in text.splitlines() if ln and not ln.startswith("#")}


def test_grafana_uses_only_zhongtai_metrics_we_export() -> None:
    dash = DashboardMetrics(totals=lambda: {"valid": 1, "received": 2, "dlq:bad_json": 1})
    dash.requests.labels("/", "GET", "200").inc()
    dash.redis_read.labels("totals").observe(0.001)
    dash.lag.labels("g").set(3)
    workers = WorkerMetrics("email")
    workers.delivered("first")
    workers.failed("permanent")
    exported = _exported(generate_latest(dash.registry).decode()) | _exported(generate_latest(workers.registry).decode())
    used = grafana_metric_names("zhongtai_")
    assert used, "the Grafana dashboard queries no zhongtai_ metric"
    assert used - exported == set()
    assert {"zhongtai_pipeline_received_total", "zhongtai_pipeline_dlq_total", "zhongtai_worker_delivered_total",
            "zhongtai_dashboard_consumer_lag_records"} <= used  # fmt: skip


def test_grafana_panels_and_datasource_are_wired() -> None:
    d = grafana()
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)) == 10
    ds = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    uid = ds["datasources"][0]["uid"]
    assert all(p["datasource"]["uid"] == uid and all(t["datasource"]["uid"] == uid for t in p["targets"])
               for p in d["panels"])  # fmt: skip
    titles = {p["title"] for p in d["panels"]}
    assert {"Events / s", "DLQ rate by reason", "Consumer lag (records)", "Checkpoint duration",
            "Backpressure (ms/s per task)", "Worker deliveries / s"} <= titles  # fmt: skip


def test_prometheus_and_compose_agree_with_the_reporter_options() -> None:
    prom = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in prom["scrape_configs"]}
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(targets["flink"]) == {"flink-jobmanager:9249", "flink-taskmanager:9249"}
    assert {"flink-jobmanager", "flink-taskmanager", "dashboard", "prometheus", "grafana"} <= set(services)
    dash_cmd = services["dashboard"]["command"]
    assert targets["zhongtai-dashboard"] == [f"dashboard:{dash_cmd[dash_cmd.index('--port') + 1]}"]
    # the cluster's -D options are the reporter options of zhongtai.jobs.metrics (port fixed to 9249)
    flags = services["flink-jobmanager"]["environment"]["ZT_FLINK_METRICS"].split()
    given = dict(f.split("=", 1) for f in flags if f != "-D")
    expected = flink_prometheus_options(make_settings(flink={"mode": "cluster"}), ports="9249")
    assert given == expected
    for name in ("flink-jobmanager", "flink-taskmanager"):
        assert services[name]["command"][-1].endswith("start-foreground $$ZT_FLINK_METRICS")
    mounts = services["prometheus"]["volumes"][0]
    assert mounts.startswith("./prometheus.yml:")
