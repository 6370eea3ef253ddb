"""The local stack of zhongtai: Kafka (KRaft), Redis, HBase + Thrift and an optional Flink cluster.

Jars come from Maven Central into ``settings.home/lib/<service>``; data, logs and PID files live in
``settings.run_dir``. Nothing runs at import time. See README.md in this folder for measurements.

    from config import load_settings
    from zhongtai.devtools.stack import up, down, status
    s = load_settings()
    up(s)                       # redis, kafka, hbase; idempotent, waits for health
    up(s, services=(), flink_cluster=True)
    down(s)                     # stops only what up started
    stop_procs(s, ["redis"], kill=True); start_procs(s, ["redis"])   # one process: a crash and a restart
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._proc import StackError
from .flink_cluster import flink_cli
from .hbase import ensure_tables
from .jars import ensure_jars, kafka_connector_jars
from .lifecycle import down, start_procs, status, stop_procs, up
from .topics import create_topics

if TYPE_CHECKING:
    from config import Settings


def flink_cluster_up(settings: Settings, log=print) -> None:
    """Start (or keep) the standalone Flink session cluster on ``settings.flink.rest_url``."""
    up(settings, services=(), flink_cluster=True, log=log)


def flink_cluster_down(settings: Settings, log=print) -> None:
    """Stop the Flink cluster processes that ``flink_cluster_up`` started."""
    down(settings, services=("flink",), log=log)


__all__ = [
    "StackError",
    "create_topics",
    "down",
    "ensure_jars",
    "ensure_tables",
    "flink_cli",
    "flink_cluster_down",
    "flink_cluster_up",
    "kafka_connector_jars",
    "start_procs",
    "status",
    "stop_procs",
    "up",
]
