"""A standalone Flink session cluster (one JobManager, one TaskManager) from the apache-flink wheel.

The wheel carries ``pyflink/bin/{jobmanager,taskmanager,flink}.sh``. We run both daemons in the
foreground (``start-foreground`` exec's the JVM, so our PID file holds the JVM's PID) with
``FLINK_CONF_DIR`` = ``<run_dir>/conf/flink`` (generated here) and ``FLINK_LOG_DIR`` =
``<run_dir>/logs``; nothing is written into the installed package.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import yaml

from ._proc import Log, Paths, paths_of, spawn

if TYPE_CHECKING:
    from config import Settings

JM_HEAP = "768m"
#: The event job keeps dedup, identity, join and tag state on the heap: 2 GiB ran out of heap in the
#: TaskManager-kill test once identity and tags were on (java.lang.OutOfMemoryError: Java heap space).
TM_PROCESS = "4096m"
SLOTS = 2
RPC_PORT = 6123


def flink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def rest_port(settings: Settings) -> int:
    return urlparse(settings.flink.rest_url).port or 8081


def _set(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        child = node.get(p)
        if not isinstance(child, dict):
            child = node[p] = {}
        node = child
    node[leaf] = value


def write_conf(settings: Settings, paths: Paths) -> Path:
    """(Re)write ``<run_dir>/conf/flink`` from the wheel's conf folder plus our overrides."""
    src = flink_home() / "conf"
    conf = paths.conf / "flink"
    conf.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name != "config.yaml":
            shutil.copy2(f, conf / f.name)
    tree = yaml.safe_load((src / "config.yaml").read_text()) or {}
    host = urlparse(settings.flink.rest_url).hostname or "127.0.0.1"
    for key, value in {
        "jobmanager.rpc.address": host,
        "jobmanager.rpc.port": RPC_PORT,
        "jobmanager.bind-host": host,
        "jobmanager.memory.process.size": JM_HEAP,
        "taskmanager.bind-host": host,
        "taskmanager.host": host,
        "taskmanager.numberOfTaskSlots": SLOTS,
        "taskmanager.memory.process.size": TM_PROCESS,
        # Each PyFlink job loads ~30 MiB of classes that are not unloaded; with the default 256m
        # the TaskManager died of Metaspace OOM after 5-6 jobs (measured in the cluster tests).
        "taskmanager.memory.jvm-metaspace.size": "640m",
        # Notice a killed TaskManager sooner (default 50 s heartbeat timeout).
        "heartbeat.timeout": 15000,
        "heartbeat.interval": 3000,
        # A TaskManager that is starting Python workers on a loaded 2-core machine answered a task
        # deployment later than the default 10 s ask timeout, and every such deployment counted as a
        # failed restart (the p=2 kill test's job ran out of restarts that way).
        "pekko.ask.timeout": "30 s",
        "rest.address": host,
        "rest.bind-address": host,
        "rest.port": rest_port(settings),
        "parallelism.default": settings.flink.parallelism,
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        "io.tmp.dirs": str(paths.data / "flink-tmp"),
        # PyFlink's thread mode (the identity graph) runs Python inside the TaskManager JVM through
        # pemja. Loaded per job, pemja tries to re-register libpython with reflection that JDK 17
        # forbids, so the second job on a TaskManager failed ("NoSuchFieldException:
        # loadedLibraryNames"). flink-python sits on the cluster classpath (write_lib) and pemja is
        # always loaded parent-first: libpython is loaded once per JVM.
        "classloader.parent-first-patterns.additional": "pemja.",
    }.items():
        _set(tree, key, value)
    (paths.data / "flink-tmp").mkdir(parents=True, exist_ok=True)
    (conf / "config.yaml").write_text(
        "# written by zhongtai.devtools.stack on every start; edit settings instead\n"
        + yaml.safe_dump(tree, sort_keys=False)
    )
    (conf / "masters").write_text(f"{host}:{rest_port(settings)}\n")
    (conf / "workers").write_text(f"{host}\n")
    return conf


def write_lib(paths: Paths) -> Path:
    """``<run_dir>/flink-lib``: links to the wheel's ``lib/`` jars plus ``opt/flink-python*.jar``."""
    lib = paths.data / "flink-lib"
    if lib.exists():
        shutil.rmtree(lib)
    lib.mkdir(parents=True)
    home = flink_home()
    jars = sorted((home / "lib").glob("*.jar")) + sorted((home / "opt").glob("flink-python*.jar"))
    for jar in jars:
        (lib / jar.name).symlink_to(jar)
    return lib


def _env(settings: Settings, paths: Paths) -> dict[str, str]:
    pid_dir = paths.pids / "flink"
    pid_dir.mkdir(parents=True, exist_ok=True)
    venv_bin = str(Path(sys.executable).parent)
    return {
        "FLINK_HOME": str(flink_home()),
        "FLINK_CONF_DIR": str(write_conf(settings, paths)),
        "FLINK_LIB_DIR": str(write_lib(paths)),
        "FLINK_LOG_DIR": str(paths.logs),
        "FLINK_PID_DIR": str(pid_dir),
        "FLINK_IDENT_STRING": "zt",
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
    }


def flink_cli(settings: Settings) -> list[str]:
    """argv prefix running the wheel's ``flink`` CLI against our conf: append ``run -m … -py …``."""
    paths = paths_of(settings)
    paths.make()
    env = _env(settings, paths)
    return ["env", *(f"{k}={v}" for k, v in env.items()), str(flink_home() / "bin" / "flink")]


def overview(settings: Settings, timeout: float = 2.0) -> dict:
    url = settings.flink.rest_url.rstrip("/") + "/overview"
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


@dataclass(frozen=True)
class _Proc:
    name: str
    marker: str
    script: str
    grace_s: float = 20.0

    def ports(self, settings: Settings) -> list[int]:
        return [rest_port(settings), RPC_PORT] if self.script == "jobmanager.sh" else []

    def start(self, settings: Settings, paths: Paths, log: Log) -> int:
        env = _env(settings, paths)
        return spawn(
            self.name, ["bash", str(flink_home() / "bin" / self.script), "start-foreground"], paths, env
        )

    def probe(self, settings: Settings) -> bool:
        ov = overview(settings)
        return "taskmanagers" in ov if self.script == "jobmanager.sh" else ov.get("taskmanagers", 0) >= 1


PROCS = [
    _Proc(
        "flink-jobmanager",
        "jobmanager.sh|flink-console.sh standalonesession|StandaloneSessionClusterEntrypoint",
        "jobmanager.sh",
    ),
    _Proc(
        "flink-taskmanager",
        "taskmanager.sh|flink-console.sh taskexecutor|TaskManagerRunner",
        "taskmanager.sh",
    ),
]
