"""Jars fetched from Maven Central into ``<stack home>/lib/<which>`` (cached): the Flink Kafka connector the
job ships, and (for the local stack, ``zhongtai.devtools.stack.jars``) the Kafka and HBase servers.

A folder counts as complete only when its ``.zt-stamp`` file names the exact coordinates it was filled
for; a changed version in the settings refetches it. One fetch at a time across processes (a file lock).
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from config import Settings

logger = logging.getLogger(__name__)

DEP_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
STAMP = ".zt-stamp"


class JarFetchError(RuntimeError):
    """Maven is missing or could not fetch a jar set; the message carries Maven's last lines."""


def lib_root(settings: Settings) -> Path:
    return settings.home / "lib"


def fetch_jars(settings: Settings, which: str, stamp_text: str, mvn_args: list[str], *,
               hint: str = "", log: Callable[[str], None] = logger.info) -> Path:
    """Fill ``<home>/lib/<which>`` with ``mvn <mvn_args> -DoutputDirectory=...`` unless its stamp already names
    ``stamp_text``; returns the folder."""
    root = lib_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    lib = root / which
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = lib / STAMP
        if stamp.exists() and stamp.read_text().strip() == stamp_text and any(lib.glob("*.jar")):
            return lib
        mvn = shutil.which("mvn")
        if mvn is None:
            raise JarFetchError("Maven is not installed: install Maven 3.8+ (apt-get install -y maven) to fetch the "
                                f"{which} jars ({stamp_text})")
        log(f"fetching {which} jars ({stamp_text}) from Maven Central into {lib} …")
        tmp = lib.with_name(lib.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        cmd = [mvn, "-B", "-q", *mvn_args, f"-DoutputDirectory={tmp}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(tmp), check=False)
        if proc.returncode != 0 or not any(tmp.glob("*.jar")):
            last = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise JarFetchError(
                f"fetching the {which} jars failed (mvn exit {proc.returncode}); check network access to "
                f"Maven Central and the version in settings.stack. Command: {' '.join(cmd)}\n{hint}{last}"
            )
        (tmp / STAMP).write_text(stamp_text + "\n")
        shutil.rmtree(lib, ignore_errors=True)
        tmp.rename(lib)
        return lib


def kafka_connector_jars(settings: Settings) -> list[Path]:
    """The Flink Kafka SQL connector jar(s), fetched if missing; for ``pipeline.jars`` / ``add_jars``.

    Use ``[p.as_uri() for p in kafka_connector_jars(settings)]`` for the ``file://`` URLs Flink wants.
    """
    coords = settings.stack.flink_kafka_connector
    lib = fetch_jars(settings, "flink", coords, [f"{DEP_PLUGIN}:copy", f"-Dartifact={coords}"])
    return sorted(lib.glob("*.jar"))
