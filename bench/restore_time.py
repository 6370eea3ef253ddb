"""Restore time of the default job after ``kill -9`` of a TaskManager, as its state grows, per state backend.

One pre-filled stream (the seeded generator, ``--events`` records) is read by the default job (unbounded,
store log + applier as ``zhongtai submit`` + ``zhongtai apply`` run it; HBase off) at p=2 on a PRIVATE
standalone cluster: one JobManager and two one-slot TaskManagers on ports and in a folder of their own
(``<work>/<runid>``; the shared stack's cluster is never touched). While the job works through the stream,
one TaskManager JVM is killed with SIGKILL each time ``received`` in ``{prefix}:stats`` passes a share of it
(``--kill-at``, default 25/50/75/95 %); a replacement is started at once (same resource id, so with local
recovery it finds its working directory again). At the end (every record received, a checkpoint completed
after that) the job is cancelled and Redis (counters, stats, profiles) is compared with the oracle.

    python -m bench.restore_time --events 1000000 --config hashmap rocksdb-incr-local

Configurations (``CONFIGS``): ``hashmap`` (the default: heap state, full checkpoints), ``hashmap-local``,
``rocksdb-incr`` (embedded RocksDB, incremental checkpoints), ``rocksdb-incr-local``. ``-local`` turns on
local recovery, a TaskManager (cluster) setting in Flink 2.3 (``execution.state-recovery.from-local``, read
by ``TaskExecutorLocalStateStoresManager`` from the TaskManager's configuration, not the job's).

Per kill, all times from the SIGKILL (``time.monotonic``; the probe polls REST + Redis every ~0.2 s):

* ``detected_s``: the job left RUNNING (RESTARTING/FAILING...).
* ``tm_registered_s``: the replacement TaskManager registered (two TaskManagers again, one at a new address).
* ``job_running_s``: job status RUNNING again after the restore (Flink's ``restored`` count went up).
* ``restore_s``: every subtask RUNNING again: state restored, processing may start. **The figure the
  ≤ 30 s target is about.**
* ``first_checkpoint_s``: the first checkpoint completed after the restore (processing resumed and committed).
* ``resumed_s``: the first advance of ``received`` in ``{prefix}:stats`` past the largest value seen up to the
  restore: output of processing after the restore reached Redis (the applier writes a checkpoint's rows once it
  completed; rows of pre-kill checkpoints still being applied do not count).
* ``unplanned_tm_deaths``: TaskManagers that died on their own meanwhile (restarted by the bench).
* ``restored_checkpoint``, ``restored_state_bytes`` (full state size of that checkpoint, REST
  ``state_size``), ``restored_checkpointed_bytes`` (what that checkpoint wrote: the delta when incremental).

A restore that does not complete within 300 s (or ``--deadline-min``) ends that configuration with ``error``; the
kills measured so far are kept. Results: ``--out`` (default ``bench/results/restore-1m.json``), a table on stdout.
Figures and findings: docs/performance.md, "Restore time".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sys
import time
import urllib.error
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from config import load_settings
from config.settings import Settings

from .check import diff_counters, diff_profiles, diff_stats
from .run import _delete_topics, _redis_store

#: A share of the stream after which a TaskManager is killed (of ``received``).
KILL_AT = (0.25, 0.5, 0.75, 0.95)
TASKMANAGERS = 2
JM_PROCESS = "768m"
#: Size of each TaskManager: the heap holds half of the hashmap state at p=2 (a 1M-event run of the mini-cluster
#: needed a 5 GiB heap for all of it, at p=1).
TM_MEMORY = "4608m"
#: Managed memory (RocksDB's block cache and write buffers; the store writer's process-mode Python worker): a
#: fifth of the Flink memory rather than Flink's 0.4, so that the heap backend is not starved of heap.
MANAGED_FRACTION = 0.2


@dataclass(frozen=True)
class Config:
    """One configuration under test: the job's state backend and the cluster's local recovery."""

    backend: str  # flink.state_backend: hashmap | rocksdb (rocksdb checkpoints incrementally: runner.flink_options)
    local_recovery: bool

    @property
    def incremental(self) -> bool:
        return self.backend == "rocksdb"


CONFIGS = {
    "hashmap": Config("hashmap", local_recovery=False),
    "hashmap-local": Config("hashmap", local_recovery=True),
    "rocksdb-incr": Config("rocksdb", local_recovery=False),
    "rocksdb-incr-local": Config("rocksdb", local_recovery=True),
}


# ---- pure parts ----------------------------------------------------------------------------------
def kill_thresholds(events: int, shares: tuple[float, ...] | list[float]) -> list[int]:
    """``received`` counts after which to kill, ascending; shares outside (0, 1) are an error."""
    bad = [s for s in shares if not 0 < s < 1]
    if bad:
        raise ValueError(f"--kill-at shares must lie strictly between 0 and 1, got {bad}")
    return sorted(int(events * s) for s in shares)


def cluster_conf(base: dict[str, Any], *, host: str, rest_port: int, rpc_port: int, tm_memory: str,
                 local_recovery: bool, work: Path, managed_fraction: float = MANAGED_FRACTION) -> dict[str, Any]:
    """The private cluster's ``config.yaml`` tree: the stack's (``base``) with its own ports, one slot per
    TaskManager, ``tm_memory`` per TaskManager (``managed_fraction`` of its Flink memory managed: RocksDB's
    cache and the process-mode Python worker), and local recovery on or off."""
    tree = json.loads(json.dumps(base))  # a deep copy of a YAML tree
    flat = {
        "jobmanager.rpc.address": host, "jobmanager.rpc.port": rpc_port, "jobmanager.bind-host": host,
        "jobmanager.memory.process.size": JM_PROCESS,
        "rest.address": host, "rest.bind-address": host, "rest.port": rest_port,
        "taskmanager.numberOfTaskSlots": 1, "taskmanager.memory.process.size": tm_memory,
        "taskmanager.memory.managed.fraction": managed_fraction,
        "parallelism.default": TASKMANAGERS,
        "io.tmp.dirs": str(work / "tmp"),
        "execution.state-recovery.from-local": local_recovery,
    }
    for dotted, value in flat.items():
        # the stack writes nested YAML; a flat key next to a nested one would be ambiguous: drop both forms
        _drop(tree, dotted)
        tree[dotted] = value
    return tree


def _drop(tree: dict[str, Any], dotted: str) -> None:
    tree.pop(dotted, None)
    *parents, leaf = dotted.split(".")
    node: Any = tree
    for p in parents:
        node = node.get(p) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(leaf, None)


def all_subtasks_running(details: dict[str, Any]) -> bool:
    """REST ``/jobs/<id>``: the job RUNNING and every vertex's subtasks RUNNING (state restored), but for
    vertices that FINISHED (a bounded ``VALUES`` source of the job's SQL ends at once)."""
    if details.get("state") != "RUNNING":
        return False
    st = [v.get("status") for v in details.get("vertices") or []]
    return "RUNNING" in st and all(s in ("RUNNING", "FINISHED") for s in st)


def checkpoint_sizes(history: list[dict[str, Any]]) -> dict[int, dict[str, int]]:
    """REST checkpoint history → ``{id: {"state_bytes", "checkpointed_bytes"}}`` of the completed ones."""
    return {
        int(c["id"]): {"state_bytes": int(c.get("state_size") or 0),
                       "checkpointed_bytes": int(c.get("checkpointed_size") or 0)}
        for c in history if c.get("status") == "COMPLETED"
    }


def first_at_or_after(samples: list[tuple[float, Any]], t0: float, pred: Any) -> float | None:
    """Seconds from ``t0`` to the first sample (time, value) at or after ``t0`` whose value satisfies ``pred``."""
    for t, v in samples:
        if t >= t0 and pred(v):
            return round(t - t0, 1)
    return None


def resumed_after(samples: list[Sample], t0: float, restores_before: int) -> float | None:
    """Seconds from ``t0`` (the kill) to the first advance of ``received`` past the largest value seen up to the
    restore (every subtask RUNNING after ``restores_before`` restores): rows of checkpoints completed before
    the kill, still being applied, do not count."""
    done = next((i for i, x in enumerate(samples) if x.restored > restores_before and x.subtasks_running), None)
    if done is None:
        return None
    base = max(x.received for x in samples[: done + 1])
    return next((round(x.t - t0, 1) for x in samples[done + 1:] if x.received > base), None)


COLUMNS = ("config", "kill", "at", "state MB", "ckpt MB", "detect", "TM up", "job RUN", "restore", "1st ckpt",
           "resumed", "TM deaths")


def table(doc: dict[str, Any]) -> str:
    """One row per kill of every configuration (times in s from the kill)."""
    rows = [COLUMNS]
    for run in doc["runs"]:
        for k in run.get("kills", []):
            def s(key: str, k: dict[str, Any] = k) -> str:
                v = k.get(key)
                return "-" if v is None else f"{v:.1f}"
            mb = k.get("restored_state_bytes")
            cmb = k.get("restored_checkpointed_bytes")
            rows.append((run["config"], str(k["n"]), f"{k['received_at_kill']:,}",
                         "-" if mb is None else f"{mb / 1e6:.0f}", "-" if cmb is None else f"{cmb / 1e6:.0f}",
                         s("detected_s"), s("tm_registered_s"), s("job_running_s"), s("restore_s"),
                         s("first_checkpoint_s"), s("resumed_s"), str(len(k.get("unplanned_tm_deaths") or ()))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def summary(run: dict[str, Any]) -> dict[str, Any]:
    """Max and last restore time of one configuration's kills."""
    rs = [k["restore_s"] for k in run.get("kills", []) if k.get("restore_s") is not None]
    return {"restore_s_max": max(rs, default=None), "restore_s_last": rs[-1] if rs else None,
            "restore_s_mean": round(sum(rs) / len(rs), 1) if rs else None}


# ---- the private cluster -------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivateCluster:
    """One JobManager and ``TASKMANAGERS`` one-slot TaskManagers in ``work``, started and stopped by PID."""

    base: Settings
    work: Path
    tm_memory: str
    local_recovery: bool
    rest_port: int = field(default_factory=free_port)
    rpc_port: int = field(default_factory=free_port)
    pids: dict[str, int] = field(default_factory=dict)
    _envs: dict[str, str] = field(default_factory=dict)

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def _env(self, name: str) -> dict[str, str]:
        """The daemons' environment: the stack's, with a conf and a lib folder of their own (``submit``
        rewrites ``<run_dir>/conf/flink`` and ``<run_dir>/data/flink-lib`` on every call)."""
        from zhongtai.devtools.stack._proc import Paths
        from zhongtai.devtools.stack.flink_cluster import _env

        if not self._envs:
            paths = Paths(run=self.work, home=self.base.home)
            paths.make()
            env = _env(self.base, paths)  # the stack's conf in <work>/conf/flink: our base
            conf, lib = self.work / "conf" / "flink-restore", self.work / "cluster-lib"
            shutil.copytree(env["FLINK_CONF_DIR"], conf)
            shutil.copytree(env["FLINK_LIB_DIR"], lib, symlinks=True)
            base = yaml.safe_load((conf / "config.yaml").read_text()) or {}
            tree = cluster_conf(base, host="127.0.0.1", rest_port=self.rest_port, rpc_port=self.rpc_port,
                                tm_memory=self.tm_memory, local_recovery=self.local_recovery, work=self.work)
            (conf / "config.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
            (self.work / "tmp").mkdir(parents=True, exist_ok=True)
            self._envs.update(env, FLINK_CONF_DIR=str(conf), FLINK_LIB_DIR=str(lib))
        return {**self._envs, "FLINK_IDENT_STRING": f"rt-{name}"}

    def _spawn(self, name: str, script: str, *args: str) -> int:
        from zhongtai.devtools.stack._proc import Paths, spawn
        from zhongtai.devtools.stack.flink_cluster import flink_home

        paths = Paths(run=self.work, home=self.base.home)
        pid = spawn(name, ["bash", str(flink_home() / "bin" / script), "start-foreground", *args], paths,
                    self._env(name))
        self.pids[name] = pid
        return pid

    def start(self) -> None:
        self._spawn("jobmanager", "jobmanager.sh")
        self._wait(lambda: "taskmanagers" in self.rest("/overview"), "the JobManager's REST API", 120)
        for i in range(TASKMANAGERS):
            self.start_tm(i)
        self.wait_taskmanagers(TASKMANAGERS)

    def start_tm(self, i: int) -> int:
        # a fixed resource id and working dir: a TaskManager restarted in its place finds its local state
        # and slot allocations there (Flink's working directory, FLIP-198/201)
        rid = f"rt-tm-{i}"
        return self._spawn(f"taskmanager-{i}", "taskmanager.sh", "-D", f"taskmanager.resource-id={rid}",
                           "-D", f"process.taskmanager.working-dir={self.work / 'tm-work' / rid}")

    def kill_tm(self, i: int) -> None:
        """SIGKILL the TaskManager JVM and what is left of its process group (its Python workers)."""
        pid = self.pids.pop(f"taskmanager-{i}")
        os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def revive(self) -> list[int]:
        """Restart every TaskManager that died on its own (a fatal error while its tasks were cancelled for
        the restore: ``MiniBatchStreamingJoinOperator.close`` throws a NullPointerException when the task
        never opened, and Flink shuts the whole TaskManager down); reap its Python workers. Returns them."""
        dead = []
        for i in range(TASKMANAGERS):
            pid = self.pids.get(f"taskmanager-{i}")
            if pid is None:
                continue
            try:
                gone = os.waitpid(pid, os.WNOHANG)[0] == pid
            except ChildProcessError:
                gone = True
            if gone:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                del self.pids[f"taskmanager-{i}"]
                self.start_tm(i)
                dead.append(i)
        return dead

    def stop(self) -> None:
        for name, pid in sorted(self.pids.items(), key=lambda kv: kv[0] == "jobmanager"):
            try:
                os.killpg(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                continue
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        break
                except ChildProcessError:
                    break
                time.sleep(0.2)
            else:
                try:
                    os.killpg(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, PermissionError, ChildProcessError):
                    pass
            del name
        self.pids.clear()

    def rest(self, path: str, timeout: float = 10.0) -> Any:
        import urllib.request

        with urllib.request.urlopen(self.rest_url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def taskmanagers(self) -> frozenset[str]:
        """RPC addresses of the registered TaskManagers (a replacement keeps the resource id, not the address)."""
        return frozenset(str(t["path"]) for t in self.rest("/taskmanagers")["taskmanagers"])

    def wait_taskmanagers(self, n: int, timeout_s: float = 120.0) -> None:
        self._wait(lambda: len(self.taskmanagers()) == n, f"{n} TaskManager(s)", timeout_s)

    @staticmethod
    def _wait(cond: Any, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if cond():
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"restore_time: no {what} after {timeout_s:.0f} s")
            time.sleep(0.5)


# ---- one configuration ---------------------------------------------------------------------------
@dataclass
class Sample:
    t: float
    state: str
    subtasks_running: bool
    restored: int
    restored_id: int | None
    completed: int
    latest_id: int | None
    received: int
    taskmanagers: frozenset[str]


class Watch:
    """Polls the job (REST) and ``{prefix}:stats`` (Redis); keeps every sample and every checkpoint's size."""

    def __init__(self, cluster: PrivateCluster, settings: Settings, prefix: str, job_id: str,
                 deadline: float = float("inf")) -> None:
        self.cluster, self.job_id, self.deadline = cluster, job_id, deadline
        self.store = _redis_store(settings, prefix)
        self.samples: list[Sample] = []
        self.sizes: dict[int, dict[str, int]] = {}
        #: (time, TaskManager index) of every TaskManager that died without being killed by us
        self.unplanned: list[tuple[float, int]] = []

    def probe(self) -> Sample:
        c = self.cluster
        now = time.monotonic()
        self.unplanned += [(now, i) for i in c.revive()]
        try:
            details = c.rest(f"/jobs/{self.job_id}")
            ck = c.rest(f"/jobs/{self.job_id}/checkpoints")
            tms = c.taskmanagers()
            state, running = str(details["state"]), all_subtasks_running(details)
        except (OSError, urllib.error.URLError, ValueError, KeyError):  # REST busy while the JobManager restores
            details, ck, tms, state, running = {}, {}, frozenset({"?"}), "?", False
        self.sizes.update(checkpoint_sizes(ck.get("history") or []))
        counts = ck.get("counts") or {}
        latest = ck.get("latest") or {}
        s = Sample(time.monotonic(), state, running, int(counts.get("restored", 0)),
                   (latest.get("restored") or {}).get("id"), int(counts.get("completed", 0)),
                   (latest.get("completed") or {}).get("id"), int(self.store.stats().get("received", 0)), tms)
        self.samples.append(s)
        if s.state in ("FAILED", "CANCELED", "FINISHED"):
            raise RuntimeError(f"restore_time: job {self.job_id} ended {s.state}: "
                               f"{c.rest(f'/jobs/{self.job_id}/exceptions?maxExceptions=1').get('root-exception', '')[:3000]}")
        return s

    def until(self, cond: Any, what: str, timeout_s: float, every_s: float = 0.2) -> Sample:
        deadline = time.monotonic() + timeout_s
        while True:
            s = self.probe()
            if cond(s):
                return s
            if time.monotonic() > deadline:
                raise RuntimeError(f"restore_time: {what} not reached within {timeout_s:.0f} s; last {s}")
            if time.monotonic() > self.deadline:
                raise RuntimeError(f"restore_time: --deadline-min passed while waiting for {what}; last {s}")
            time.sleep(every_s)


def measure_kill(watch: Watch, cluster: PrivateCluster, n: int, tm: int, at: Sample, events: int,
                 timeout_s: float) -> dict[str, Any]:
    """Kill TaskManager ``tm`` now, start its replacement, follow the restore until a checkpoint completed
    after it and (unless the stream was all received already) ``received`` advanced; the kill's figures."""
    t0 = time.monotonic()
    cluster.kill_tm(tm)
    cluster.start_tm(tm)
    spawned = round(time.monotonic() - t0, 1)
    error = None
    try:
        watch.until(lambda s: s.restored > at.restored and s.subtasks_running, "restore", timeout_s)
        watch.until(lambda s: s.latest_id is not None and s.latest_id != s.restored_id and (
        max(x.received for x in watch.samples) >= events  # all of it committed already: nothing left to resume
        or resumed_after([x for x in watch.samples if x.t >= t0], t0, at.restored) is not None),
            "progress after the restore", timeout_s)
    except RuntimeError as e:  # no restore within timeout_s: record what was seen, the caller ends the run
        error = str(e)[:2000]
    s = watch.samples[-1]
    after = [x for x in watch.samples if x.t >= t0]
    restored_id = s.restored_id
    sizes = watch.sizes.get(restored_id or -1, {})
    return {
        "n": n, "taskmanager": tm, "error": error, "received_at_kill": at.received, "checkpoint_before_kill": at.latest_id,
        "restored_checkpoint": restored_id,
        "restore_attempts": s.restored - at.restored,
        "restored_state_bytes": sizes.get("state_bytes"), "restored_checkpointed_bytes": sizes.get("checkpointed_bytes"),
        "replacement_spawned_s": spawned,
        "detected_s": first_at_or_after([(x.t, x) for x in after], t0, lambda x: x.state not in ("RUNNING", "?")),
        "tm_registered_s": first_at_or_after(
            [(x.t, x) for x in after], t0,
            lambda x: "?" not in x.taskmanagers and len(x.taskmanagers) == TASKMANAGERS
            and bool(x.taskmanagers - at.taskmanagers)),
        "job_running_s": first_at_or_after(
            [(x.t, x) for x in after], t0, lambda x: x.restored > at.restored and x.state == "RUNNING"),
        "restore_s": first_at_or_after(
            [(x.t, x) for x in after], t0, lambda x: x.restored > at.restored and x.subtasks_running),
        "first_checkpoint_s": first_at_or_after(
            [(x.t, x) for x in after], t0,
            lambda x: x.restored > at.restored and x.latest_id is not None and x.latest_id != x.restored_id),
        "resumed_s": resumed_after(after, t0, at.restored),
        "unplanned_tm_deaths": [{"taskmanager": i, "after_s": round(t - t0, 1)} for t, i in watch.unplanned
                                if t >= t0],
        "loadavg": os.getloadavg(),
    }


def run_config(base: Settings, name: str, cfg: Config, *, topics: list[str], expected: dict[str, Any],
               events: int, runid: str, work: Path, tm_memory: str, kill_at: list[float],
               timeout_s: float, deadline: float = float("inf")) -> dict[str, Any]:
    from connectors.store_log import store_log_topic
    from zhongtai.jobs.submit import submit
    from zhongtai.services.applier import ApplierThread, StoreApplier

    folder = work / name
    cluster = PrivateCluster(base, folder, tm_memory=tm_memory, local_recovery=cfg.local_recovery)
    s = base.model_copy(update={
        "flink": base.flink.model_copy(update={
            "mode": "cluster", "rest_url": cluster.rest_url, "parallelism": TASKMANAGERS,
            "state_backend": cfg.backend, "checkpoint_dir": (folder / "checkpoints").as_uri()}),
        "stack": base.stack.model_copy(update={"run_dir": str(folder)}),
    })
    tag = re.sub(r"[^a-z0-9]", "", name)
    prefix, group, dlq = f"ztbench:{runid}:{tag}", f"zt-bench-{runid}-{tag}", f"zt.bench.{runid}.dlq.{tag}"
    out: dict[str, Any] = {"config": name, "backend": cfg.backend, "incremental": cfg.incremental,
                           "local_recovery": cfg.local_recovery, "events": events, "tm_memory": tm_memory,
                           "loadavg_before": os.getloadavg(), "kills": []}
    applier = None
    t_start = time.monotonic()
    try:
        cluster.start()
        job_id = submit(s, drain=False, group=group, detached=True, timeout=300,
                        topic_pattern="|".join(re.escape(t) for t in topics), dlq_topic=dlq, redis_prefix=prefix,
                        hbase=False, job_name=f"zt-restore-{runid}-{tag}", resume=False)
        out["job_id"] = job_id
        applier = ApplierThread(StoreApplier(s, group=group, redis_prefix=prefix, hbase_prefix=None, hbase=False))
        watch = Watch(cluster, s, prefix, job_id, deadline)
        for n, threshold in enumerate(kill_thresholds(events, kill_at), start=1):
            at = watch.until(lambda x, th=threshold: x.received >= th and x.subtasks_running,
                             f"received ≥ {threshold:,}", timeout_s, every_s=0.5)
            k = measure_kill(watch, cluster, n, tm=(n - 1) % TASKMANAGERS, at=at, events=events, timeout_s=300)
            out["kills"].append(k)
            if k["error"]:
                raise RuntimeError(f"kill {n}: {k['error']}")
            print(f"[restore_time] {name} kill {n} at {at.received:,}: restore {k['restore_s']} s, "
                  f"resumed {k['resumed_s']} s, checkpoint {k['restored_checkpoint']} "
                  f"({(k['restored_state_bytes'] or 0) / 1e6:.0f} MB)", flush=True)
        last = watch.until(lambda x: x.received >= events, "every record received", timeout_s, every_s=1.0)
        watch.until(lambda x: x.completed > last.completed + 1, "a checkpoint after the end", 120)
        out["seconds"] = round(time.monotonic() - t_start, 1)
        out["unplanned_tm_deaths_total"] = len(watch.unplanned)
        out["final_checkpoint_bytes"] = watch.sizes.get(watch.samples[-1].latest_id or -1)
        _cancel(cluster, job_id)
        applier.finish(timeout_s=300)
        applier = None
        store = _redis_store(s, prefix)
        try:
            diffs, problems = diff_counters(store.all_counters(), expected["counters"])
            problems += diff_stats(store.stats(), expected["stats"])
            pn, pshown = diff_profiles(store, expected["profiles"])
        finally:
            store.close()
        out.update(exact=diffs == 0 and pn == 0 and not problems, differences=(problems + pshown)[:10])
    except (RuntimeError, OSError) as e:
        # a restore that never completes is a result too: keep the kills measured so far
        out["error"] = str(e)[:4000]
        print(f"[restore_time] {name} failed: {e}", flush=True)
    finally:
        if applier is not None:
            applier.stop()
        if out.get("job_id"):
            try:
                _cancel(cluster, out["job_id"])
            except (OSError, urllib.error.URLError, RuntimeError):
                pass
        cluster.stop()
        out["loadavg_after"] = os.getloadavg()
        out.update(summary(out))
        st = _redis_store(s, prefix)
        try:
            st.delete_prefix()
        finally:
            st.close()
        _delete_topics(base, [dlq, store_log_topic(s, group)])
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
        shutil.rmtree(folder / "tm-work", ignore_errors=True)
        shutil.rmtree(folder / "tmp", ignore_errors=True)  # io.tmp.dirs: blobs, Python archives (logs are kept)
    return out


def _cancel(cluster: PrivateCluster, job_id: str) -> None:
    import urllib.request

    state = cluster.rest(f"/jobs/{job_id}")["state"]
    if state in ("FINISHED", "FAILED", "CANCELED"):
        return
    req = urllib.request.Request(f"{cluster.rest_url}/jobs/{job_id}?mode=cancel", method="PATCH")
    with urllib.request.urlopen(req, timeout=10):
        pass
    PrivateCluster._wait(lambda: cluster.rest(f"/jobs/{job_id}")["state"] == "CANCELED", "cancelled job", 60)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--persons", type=int, default=2_000)
    ap.add_argument("--config", nargs="+", choices=sorted(CONFIGS), default=["hashmap", "rocksdb-incr-local"])
    ap.add_argument("--backend", choices=["hashmap", "rocksdb"], default=None,
                    help="shorthand: only this backend's configurations among --config")
    ap.add_argument("--kill-at", type=float, nargs="+", default=list(KILL_AT))
    ap.add_argument("--tm-memory", default=TM_MEMORY, help="taskmanager.memory.process.size of each TaskManager")
    ap.add_argument("--work", default="/tmp/zt-restore", help="folder of the private clusters (logs, checkpoints)")
    ap.add_argument("--timeout", type=float, default=2400.0, help="seconds allowed for each phase")
    ap.add_argument("--deadline-min", type=float, default=None,
                    help="end every configuration still running this many minutes after the start (kills so far kept)")
    ap.add_argument("--out", default="bench/results/restore-1m.json")
    a = ap.parse_args(argv)
    names = [n for n in a.config if a.backend is None or CONFIGS[n].backend == a.backend]
    if not names:
        ap.error(f"no configuration of backend {a.backend} among {a.config}")
    kill_thresholds(a.events, a.kill_at)  # fail fast on bad shares
    from zhongtai.devtools.generator import GeneratorConfig
    from zhongtai.devtools.generator.produce import produce

    settings = load_settings()
    deadline = time.monotonic() + 60 * a.deadline_min if a.deadline_min else float("inf")
    runid = time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]
    work = Path(a.work) / runid
    cfg = GeneratorConfig(events=a.events, persons=a.persons, topic_prefix=f"zt.bench.{runid}.",
                          partitions=settings.kafka.partitions)
    doc: dict[str, Any] = {"runid": runid, "events": a.events, "persons": a.persons, "parallelism": TASKMANAGERS,
                           "taskmanagers": TASKMANAGERS, "slots_per_tm": 1, "tm_memory": a.tm_memory, "managed_fraction": MANAGED_FRACTION,
                           "checkpoint_interval_ms": settings.flink.checkpoint_interval_ms,
                           "partitions": settings.kafka.partitions, "kill_at": a.kill_at, "cpus": os.cpu_count(),
                           "command": "python -m bench.restore_time " + " ".join(argv if argv is not None else
                                                                                 sys.argv[1:]),
                           "loadavg_before": os.getloadavg(), "runs": []}
    print(f"[restore_time] run {runid}: producing {a.events:,} events", flush=True)
    rep = produce(settings, cfg, name=f"bench-{runid}", progress=False)
    assert rep.expected_path is not None
    expected = orjson.loads(rep.expected_path.read_bytes())
    topics = cfg.topics()
    try:
        for name in names:
            print(f"[restore_time] {name} ...", flush=True)
            r = run_config(settings, name, CONFIGS[name], topics=topics, expected=expected, events=a.events,
                           runid=runid, work=work, tm_memory=a.tm_memory, kill_at=a.kill_at, timeout_s=a.timeout,
                           deadline=deadline)
            doc["runs"].append(r)
            Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")  # keep what is done if a later one fails
    finally:
        _delete_topics(settings, topics)
        rep.expected_path.unlink(missing_ok=True)
    doc["loadavg_after"] = os.getloadavg()
    Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(table(doc))
    for r in doc["runs"]:
        print(f"{r['config']}: exact {r.get('exact')}, {summary(r)}, {r.get('seconds')} s, error {r.get('error')}")


if __name__ == "__main__":
    main()
