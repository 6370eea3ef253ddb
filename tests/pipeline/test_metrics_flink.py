"""Flink's Prometheus reporter, enabled by zhongtai.jobs.metrics.flink_prometheus_options, serves our job's metrics."""

from __future__ import annotations

import time
import urllib.request

import pytest

from tests.helpers import fresh_names, make_settings
from tests.unit.test_metrics_grafana import KAFKA_SOURCE_ONLY, grafana_metric_names
from zhongtai.jobs.metrics import DEFAULT_PORTS, FACTORY_CLASS, flink_prometheus_options, port_range


def test_options_name_the_factory_and_let_settings_override() -> None:
    conf = flink_prometheus_options(make_settings())
    jar = conf.pop("pipeline.classpaths")  # mini-cluster: the reporter factory must be on the job's classpath
    assert jar.startswith("file:///") and jar.endswith("/plugins/metrics-prometheus/flink-metrics-prometheus-2.3.0.jar")
    assert conf == {
        "metrics.reporter.prom.factory.class": FACTORY_CLASS,
        "metrics.reporter.prom.port": DEFAULT_PORTS,
        "metrics.reporter.prom.scope.variables.additional": "app:zhongtai",
        "metrics.reporter.prom.scope.variables.excludes": "task_attempt_id;task_attempt_num",
    }
    over = flink_prometheus_options(make_settings(flink={"options": {"metrics.reporter.prom.port": "9300-9301",
                                                                       "pipeline.name": "x"}}))
    assert over["metrics.reporter.prom.port"] == "9300-9301"
    assert "pipeline.name" not in over
    cluster = flink_prometheus_options(make_settings(flink={"mode": "cluster"}))
    assert "pipeline.classpaths" not in cluster and cluster["metrics.reporter.prom.factory.class"] == FACTORY_CLASS
    assert list(port_range("9249-9260")) == list(range(9249, 9261))
    assert list(port_range("9249")) == [9249]


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return r.read().decode()
    except OSError:
        return ""


@pytest.mark.flink
def test_reporter_serves_flink_metrics_of_a_running_job() -> None:
    from pyflink.common import Configuration
    from pyflink.table import EnvironmentSettings, TableEnvironment

    n = fresh_names()
    job = f"zhongtai-metrics-{n.tag}"
    conf = Configuration()
    for k, v in {**flink_prometheus_options(make_settings()), "pipeline.name": job, "parallelism.default": "1"}.items():
        conf.set_string(k, v)
    t_env = TableEnvironment.create(
        EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(conf).build()
    )
    t_env.execute_sql("CREATE TEMPORARY TABLE src (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '50')")
    t_env.execute_sql("CREATE TEMPORARY TABLE snk (id BIGINT) WITH ('connector' = 'blackhole')")
    result = t_env.execute_sql("INSERT INTO snk SELECT id FROM src")
    client = result.get_job_client()
    label = f'job_name="{job.replace("-", "_")}"'
    wanted = grafana_metric_names("flink_") - KAFKA_SOURCE_ONLY  # what docker/grafana/zhongtai.json plots
    found: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = [ln for port in port_range(DEFAULT_PORTS) for ln in _scrape(port).splitlines()
                     if ln.startswith("flink_") and label in ln]  # fmt: skip
            if wanted <= {ln.split("{", 1)[0] for ln in found}:
                break
            time.sleep(0.5)
    finally:
        client.cancel().result()
    assert found, f"no flink_ line with {label} on ports {DEFAULT_PORTS}"
    assert wanted - {ln.split("{", 1)[0] for ln in found} == set()
    assert all('app="zhongtai"' in ln for ln in found)
    assert not any("task_attempt_id=" in ln for ln in found)
    names = {ln.split("{", 1)[0] for ln in found}
    assert "flink_jobmanager_job_numRestarts" in names or any(nm.startswith("flink_taskmanager_job_") for nm in names)
