"""Jars of the local stack, fetched once from Maven Central into ``<home>/lib/<which>``.

One folder per service (Kafka and HBase/Hadoop disagree on ZooKeeper, Jackson, netty and log4j:
never one classpath for both). A folder counts as complete only when its ``.zt-stamp`` file names
the exact coordinates it was filled for; a changed version in the settings refetches it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from connectors.jars import DEP_PLUGIN

from ._proc import StackError, paths_of

if TYPE_CHECKING:
    from config import Settings

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent

#: log4j2 versions matching the log4j-api each service brings along.
KAFKA_LOG4J = "2.24.3"
HBASE_LOG4J = "2.17.2"


def _hbase_thrift_version(hbase_version: str) -> str:
    # hbase-thrift is on Central only as the plain build (2.6.1), not as "-hadoop3".
    return hbase_version.removesuffix("-hadoop3")


def _specs(settings: Settings) -> dict[str, tuple[str, list[str]]]:
    """which -> (stamp text, mvn goal arguments without the output directory)."""
    st = settings.stack
    hb = st.hbase_version
    return {
        "kafka": (
            f"kafka_2.13:{st.kafka_version} log4j:{KAFKA_LOG4J}",
            [
                "-f",
                str(HERE / "kafka-pom.xml"),
                f"{DEP_PLUGIN}:copy-dependencies",
                f"-Dkafka.version={st.kafka_version}",
                f"-Dlog4j.version={KAFKA_LOG4J}",
                "-DincludeScope=runtime",
            ],
        ),
        "hbase": (
            f"hbase:{hb} thrift:{_hbase_thrift_version(hb)} log4j:{HBASE_LOG4J}",
            [
                "-f",
                str(HERE / "hbase-pom.xml"),
                f"{DEP_PLUGIN}:copy-dependencies",
                f"-Dhbase.version={hb}",
                f"-Dhbase.thrift.version={_hbase_thrift_version(hb)}",
                f"-Dlog4j.version={HBASE_LOG4J}",
                "-DincludeScope=runtime",
            ],
        ),
        "flink": (
            st.flink_kafka_connector,
            [f"{DEP_PLUGIN}:copy", f"-Dartifact={st.flink_kafka_connector}"],
        ),
    }


def lib_dir(settings: Settings, which: str) -> Path:
    return paths_of(settings).lib / which


def ensure_jars(
    settings: Settings, which: Iterable[str] = ("kafka", "hbase", "flink"), log=print
) -> dict[str, Path]:
    """Fetch the jars of each service in ``which`` into ``<home>/lib/<which>`` (cached; connectors.jars).

    Returns ``{which: lib folder}``. Raises :class:`StackError` when Maven is missing or fails
    (the message carries Maven's last output lines).
    """
    from connectors.jars import JarFetchError, fetch_jars

    specs = _specs(settings)
    out: dict[str, Path] = {}
    for w in which:
        if w not in specs:
            raise StackError(f"ensure_jars: unknown jar set {w!r}; choose from {sorted(specs)}")
        stamp_text, args = specs[w]
        hint = ("hint: Maven Central has hbase-thrift for 2.6 only as 2.6.1 and hbase-server '-hadoop3' only for "
                "2.6.0/2.6.1/2.6.4: set stack.hbase_version to 2.6.1-hadoop3 (ZT__STACK__HBASE_VERSION).\n"
                if w == "hbase" else "")
        try:
            out[w] = fetch_jars(settings, w, stamp_text, args, hint=hint, log=log)
        except JarFetchError as e:
            raise StackError(str(e)) from e
    return out


def kafka_connector_jars(settings: Settings) -> list[Path]:
    """The Flink Kafka connector jar(s) (``connectors.jars.kafka_connector_jars``)."""
    from connectors.jars import kafka_connector_jars as jars

    return jars(settings)
