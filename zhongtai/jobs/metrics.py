"""Metrics of zhongtai's processes: Flink's Prometheus reporter for the job, names shared with Grafana.

The Flink job exposes its metrics through Flink's own Prometheus reporter (the plugin jar ships in
the apache-flink wheel: ``pyflink/plugins/metrics-prometheus/flink-metrics-prometheus-2.3.0.jar``,
found through ``FLINK_PLUGINS_DIR``, which PyFlink sets to its ``plugins`` folder). The reporter
names every metric ``flink_<logical scope>_<name>`` (``flink_jobmanager_job_lastCheckpointDuration``,
``flink_taskmanager_job_task_operator_numRecordsInPerSecond``); scope *formats* do not change
Prometheus names, so a zhongtai job is recognised by its labels instead: every series carries
``app="zhongtai"`` and ``job_name`` (the job's ``pipeline.name`` with characters other than
``[a-zA-Z0-9:_]`` replaced by ``_``, e.g. ``zhongtai_events``).

The dashboard, workers and API use prometheus-client with names ``zhongtai_*`` (see
zhongtai/services/dashboard/metrics.py and docs/dashboard.md); docker/grafana/zhongtai.json plots both.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import Settings

#: The reporter's name in Flink's configuration (``metrics.reporter.<name>.*``).
REPORTER = "prom"
#: Flink 2.x loads reporters through factories (``metrics.reporter.<name>.class`` is gone).
FACTORY_CLASS = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
#: One port per process that reports: a mini-cluster (JobManager and TaskManager in one JVM) takes
#: the first free one; a JobManager and TaskManagers colocated on one host take one each.
DEFAULT_PORTS = "9249-9260"
#: Label added to every Flink series so that dashboards select zhongtai's jobs.
APP_LABEL = "app:zhongtai"
#: Variables not exported as labels: they change on every restart or attempt (new series each time).
EXCLUDED_VARIABLES = "task_attempt_id;task_attempt_num"


def flink_prometheus_options(settings: Settings, *, ports: str = DEFAULT_PORTS) -> dict[str, str]:
    """Flink configuration that enables the Prometheus reporter on ``ports`` (a port or ``a-b`` range).

    Merge the result into the job's configuration (``runner.flink_options``): on the embedded
    mini-cluster it takes effect for that job. On a Flink cluster reporters are started with the
    JobManager/TaskManager processes, so the same keys belong in the cluster's configuration
    (docker/compose.yaml passes them as ``-D`` options). ``settings.flink.options`` entries with the
    same keys win, so a deployment can move the port range without code.
    """
    base = f"metrics.reporter.{REPORTER}"
    conf: dict[str, str] = {}
    if settings.flink.mode == "mini":
        conf["pipeline.classpaths"] = reporter_jar().resolve().as_uri()
    conf |= {
        f"{base}.factory.class": FACTORY_CLASS,
        f"{base}.port": ports,
        f"{base}.scope.variables.additional": APP_LABEL,
        f"{base}.scope.variables.excludes": EXCLUDED_VARIABLES,
    }
    for k, v in settings.flink.options.items():
        if k.startswith(base + "."):
            conf[k] = v
    return conf


def reporter_jar() -> Path:
    """The Prometheus reporter jar inside the installed apache-flink wheel (``pyflink/plugins``)."""
    import pyflink  # type: ignore[import-untyped]

    root = Path(pyflink.__file__).parent
    jars = sorted((root / "plugins" / "metrics-prometheus").glob("flink-metrics-prometheus-*.jar"))
    if not jars:
        raise FileNotFoundError(
            f"flink-metrics-prometheus jar not found under {root / 'plugins'}: reinstall apache-flink "
            "(pip install -c constraints.txt apache-flink)"
        )
    return jars[-1]


def port_range(spec: str) -> range:
    """``"9249-9260"`` → range(9249, 9261); ``"9249"`` → range(9249, 9250)."""
    lo, _, hi = spec.partition("-")
    return range(int(lo), int(hi or lo) + 1)
