"""Jars of the local stack, fetched once from Maven Central into ``<home>/lib/<which>``.

One folder per service (Kafka and HBase/Hadoop disagree on ZooKeeper, Jackson, netty and log4j:
never one classpath for both). A folder counts as complete only when its ``.zt-stamp`` file names
the exact coordinates it was filled for; a changed version in the settings refetches it.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ._proc import StackError, paths_of, require_tool

if TYPE_CHECKING:
    from config import Settings

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
DEP_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
STAMP = ".zt-stamp"

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
    """Fetch the jars of each service in ``which`` into ``<home>/lib/<which>`` (cached).

    Returns ``{which: lib folder}``. Raises :class:`StackError` when Maven is missing or fails
    (the message carries Maven's last output lines).
    """
    specs = _specs(settings)
    out: dict[str, Path] = {}
    lib_root = paths_of(settings).lib
    lib_root.mkdir(parents=True, exist_ok=True)
    with (lib_root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one fetch at a time, across processes
        for w in which:
            out[w] = _ensure_one(settings, w, specs, log)
    return out


def _ensure_one(settings: Settings, w: str, specs: dict, log: Callable[[str], None]) -> Path:
    """Fill one lib folder unless its stamp already names the wanted coordinates."""
    if w not in specs:
        raise StackError(f"ensure_jars: unknown jar set {w!r}; choose from {sorted(specs)}")
    stamp_text, args = specs[w]
    lib = lib_dir(settings, w)
    stamp = lib / STAMP
    if stamp.exists() and stamp.read_text().strip() == stamp_text and any(lib.glob("*.jar")):
        return lib
    mvn = require_tool("mvn", "install Maven 3.8+ (apt-get install -y maven) to fetch the stack's jars")
    log(f"fetching {w} jars ({stamp_text}) from Maven Central into {lib} …")
    tmp = lib.with_name(lib.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cmd = [mvn, "-B", "-q", *args, f"-DoutputDirectory={tmp}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(tmp), check=False)
    if proc.returncode != 0 or not any(tmp.glob("*.jar")):
        last = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        if w == "hbase":
            last = (
                "hint: Maven Central has hbase-thrift for 2.6 only as 2.6.1 and hbase-server '-hadoop3' only for "
                "2.6.0/2.6.1/2.6.4: set stack.hbase_version to 2.6.1-hadoop3 (ZT__STACK__HBASE_VERSION).\n"
                + last
            )
        raise StackError(
            f"fetching the {w} jars failed (mvn exit {proc.returncode}); check network access to "
            f"Maven Central and the version in settings.stack. Command: {' '.join(cmd)}\n{last}"
        )
    (tmp / STAMP).write_text(stamp_text + "\n")
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)
    return lib


def kafka_connector_jars(settings: Settings) -> list[Path]:
    """The Flink Kafka SQL connector jar(s), fetched if missing; for ``pipeline.jars`` / ``add_jars``.

    Use ``[p.as_uri() for p in kafka_connector_jars(settings)]`` for the ``file://`` URLs Flink wants.
    """
    lib = ensure_jars(settings, ("flink",), log=logger.info)["flink"]
    return sorted(lib.glob("*.jar"))
