"""``up`` / ``down`` / ``status`` of the local stack.

A *service* (``redis``, ``redis-cluster``, ``kafka``, ``hbase``, ``flink``) is one or more processes;
each process has a PID file and a log file named after it (``hbase`` = ``hbase`` master +
``hbase-thrift``; ``redis-cluster`` = ``redis-cluster-1..3``).
``up`` starts them one after another (the machine has two cores) and returns only when each
answers its health probe; it is idempotent. ``down`` stops only processes whose PID file we wrote.
A file lock in ``<run_dir>/pids`` serialises concurrent ``up``/``down`` calls.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from . import flink_cluster as flink_mod
from . import hbase, kafka, redis_server
from ._proc import (
    Log,
    Paths,
    StackError,
    check_ports_free,
    java,
    kill_now,
    paths_of,
    pid_alive,
    read_pid,
    rss_mib,
    tail,
    terminate,
    wait_healthy,
)
from .jars import ensure_jars

if TYPE_CHECKING:
    from config import Settings

logger = logging.getLogger(__name__)

SERVICES = ("redis", "redis-cluster", "kafka", "hbase", "flink")
#: Services that need no JVM.
_NATIVE = ("redis", "redis-cluster")


@dataclass(frozen=True)
class Proc:
    """One process of the stack, described by the module that knows how to start it."""

    service: str
    name: str
    marker: str
    ports: Callable[..., list[int]]
    start: Callable[..., int]
    probe: Callable[..., bool]
    jars: str | None = None
    grace_s: float = 20.0


def _procs(mod: ModuleType, service: str, jars: str | None, procs: str = "PROCS") -> list[Proc]:
    return (
        [Proc(service, p.name, p.marker, p.ports, p.start, p.probe, jars, p.grace_s)
         for p in getattr(mod, procs)]
        if hasattr(mod, procs)
        else [Proc(service, mod.NAME, mod.MARKER, mod.ports, mod.start, mod.probe, jars)]
    )


def registry() -> dict[str, list[Proc]]:
    return {
        "redis": _procs(redis_server, "redis", None),
        "redis-cluster": _procs(redis_server, "redis-cluster", None, "CLUSTER_PROCS"),
        "kafka": _procs(kafka, "kafka", "kafka"),
        "hbase": _procs(hbase, "hbase", "hbase"),
        "flink": _procs(flink_mod, "flink", None),
    }


@contextlib.contextmanager
def _locked(paths: Paths) -> Iterator[None]:
    paths.make()
    with (paths.pids / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _select(services: Iterable[str] | None) -> list[str]:
    chosen = list(SERVICES if services is None else services)
    bad = [s for s in chosen if s not in SERVICES]
    if bad:
        raise StackError(f"unknown service(s) {bad}; choose from {list(SERVICES)}")
    return chosen


def _up_proc(settings: Settings, paths: Paths, p: Proc, log: Log) -> None:
    timeout = settings.stack.start_timeout_s
    log_file = paths.log_file(p.name)
    pid = read_pid(paths.pid_file(p.name), p.marker)
    ports_file = paths.pids / f"{p.name}.ports"
    if pid is not None:
        recorded = ports_file.read_text().strip() if ports_file.exists() else ""
        wanted = ",".join(map(str, p.ports(settings)))
        if recorded and recorded != wanted:
            raise StackError(
                f"{p.name} is running (pid {pid}) on port(s) {recorded} but the settings now ask for {wanted}; "
                f"stop it first (`zhongtai stack down`, or down(settings, ['{p.service}'])) and start again."
            )
        try:
            healthy = p.probe(settings)
        except Exception:  # noqa: BLE001 - not answering yet
            healthy = False
        if healthy:
            log(f"{p.name}: already running (pid {pid})")
            return
        log(f"{p.name}: running (pid {pid}) but not healthy yet; waiting …")
        wait_healthy(p.name, lambda: p.probe(settings), pid, p.marker, log_file, timeout)
        return
    check_ports_free(p.name, p.ports(settings))
    t0 = time.monotonic()
    pid = p.start(settings, paths, log)
    ports_file.write_text(",".join(map(str, p.ports(settings))) + "\n")
    try:
        wait_healthy(p.name, lambda: p.probe(settings), pid, p.marker, log_file, timeout)
    except BaseException:
        # never leave a half-started process behind; its log stays for reading
        terminate(pid, p.marker, p.grace_s)
        paths.pid_file(p.name).unlink(missing_ok=True)
        raise
    log(f"{p.name}: started (pid {pid}) and healthy in {time.monotonic() - t0:.1f}s; log {log_file}")


def up(settings: Settings, services=("redis", "kafka", "hbase"), flink_cluster=False, log=print,
       redis_cluster=False) -> None:
    """Start ``services`` (plus the Flink cluster when ``flink_cluster``, the three-node Redis Cluster on
    ``redis.nodes`` when ``redis_cluster``) and wait for health.

    Idempotent: a service that is ours, running and healthy is skipped. Raises :class:`StackError`
    naming the port, tool or log file when something cannot start.
    """
    chosen = _select(services)
    if flink_cluster and "flink" not in chosen:
        chosen.append("flink")
    if redis_cluster and "redis-cluster" not in chosen:
        chosen.append("redis-cluster")
    paths = paths_of(settings)
    reg = registry()
    with _locked(paths):
        for svc in SERVICES:  # fixed order: redis, redis-cluster, kafka, hbase, flink
            if svc not in chosen:
                continue
            procs = reg[svc]
            if any(read_pid(paths.pid_file(p.name), p.marker) is None for p in procs):
                if svc not in _NATIVE:
                    java()  # fail with a clear message before fetching anything
                for w in sorted({p.jars for p in procs if p.jars}):
                    ensure_jars(settings, (w,), log=log)
            for p in procs:
                _up_proc(settings, paths, p, log)
            if svc == "redis-cluster":
                redis_server.form_cluster(settings, paths, log)
            if svc == "hbase":
                t0 = time.monotonic()
                try:
                    created = hbase.ensure_tables(settings)
                    hbase.wait_tables_serving(settings, settings.stack.start_timeout_s)
                except Exception as e:
                    log_file = paths.log_file("hbase")
                    raise StackError(
                        f"hbase: tables not ready ({e!r}); read {log_file}. Last lines:\n{tail(log_file)}"
                    ) from e
                made = f"created tables {created}; " if created else ""
                log(f"hbase: {made}tables {sorted(hbase.TABLES)} serving after {time.monotonic() - t0:.1f}s")


def down(settings: Settings, services=None, log=print) -> None:
    """Stop the processes of ``services`` (all when None) that ``up`` started, newest first.

    SIGTERM, then SIGKILL after a grace period. Processes zhongtai did not start are never touched.
    """
    chosen = _select(services)
    paths = paths_of(settings)
    reg = registry()
    with _locked(paths):
        for svc in reversed(SERVICES):
            if svc not in chosen:
                continue
            for p in reversed(reg[svc]):
                _stop_proc(paths, p, False, log)


def _stop_proc(paths: Paths, p: Proc, kill: bool, log: Log) -> str:
    """Stop one process we started (SIGTERM then SIGKILL after its grace period, or SIGKILL at once)."""
    pid = read_pid(paths.pid_file(p.name), p.marker)
    outcome = "not running" if pid is None else kill_now(pid, p.marker) if kill else terminate(pid, p.marker,
                                                                                                p.grace_s)
    paths.pid_file(p.name).unlink(missing_ok=True)
    if pid is not None:
        (paths.pids / f"{p.name}.ports").unlink(missing_ok=True)
    log(f"{p.name}: {outcome}" + (f" (pid {pid})" if pid is not None else ""))
    return outcome


def _named(names: Iterable[str]) -> list[Proc]:
    by_name = {p.name: p for procs in registry().values() for p in procs}
    bad = [n for n in names if n not in by_name]
    if bad:
        raise StackError(f"unknown process(es) {bad}; choose from {sorted(by_name)}")
    return [by_name[n] for n in names]


def start_procs(settings: Settings, names: Iterable[str], log: Log = print) -> None:
    """Start the named processes alone (e.g. ``hbase-thrift`` without its master) and wait for health;
    one already running and healthy is kept. The fault tests start private instances this way from a
    ``settings`` whose ports and ``stack.run_dir`` differ from the shared stack's."""
    paths = paths_of(settings)
    procs = _named(names)
    with _locked(paths):
        for w in sorted({p.jars for p in procs if p.jars}):
            ensure_jars(settings, (w,), log=log)
        for p in procs:
            _up_proc(settings, paths, p, log)


def stop_procs(settings: Settings, names: Iterable[str], kill: bool = False, log: Log = print) -> dict[str, str]:
    """Stop the named processes that we started: SIGTERM (SIGKILL after the grace period), or at once
    SIGKILL when ``kill`` (a crash: no shutdown hook, no flush). Returns name → what happened."""
    paths = paths_of(settings)
    with _locked(paths):
        return {p.name: _stop_proc(paths, p, kill, log) for p in _named(names)}


def status(settings: Settings) -> list[dict]:
    """One dict per process: name, service, state ('running'|'stopped'), pid, ports, log, rss_mib."""
    paths = paths_of(settings)
    out: list[dict] = []
    for svc, procs in registry().items():
        for p in procs:
            pid = read_pid(paths.pid_file(p.name), p.marker)
            rss = rss_mib(pid)
            out.append(
                {
                    "name": p.name,
                    "service": svc,
                    "state": "running" if pid is not None and pid_alive(pid, p.marker) else "stopped",
                    "pid": pid,
                    "ports": p.ports(settings),
                    "log": str(paths.log_file(p.name)),
                    "rss_mib": round(rss, 1) if rss is not None else None,
                }
            )
    return out
