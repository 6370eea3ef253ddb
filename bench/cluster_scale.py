"""The default job on the standalone cluster at p=1 and p=2 with two TaskManagers (two interpreters).

The job's Python operators run in thread mode: one CPython interpreter per TaskManager JVM, so inside one
TaskManager a second subtask shares the GIL. This bench runs the SAME pre-filled stream through the job
submitted to the local standalone cluster (``zhongtai submit`` with ``--drain``, store log + applier as
``zhongtai run`` does) at each parallelism, with the cluster re-shaped for the run into ``--taskmanagers``
TaskManagers of ONE slot each (so p=2 puts its two subtasks into two JVMs, two interpreters), and
restores the stack's TaskManager afterwards.

    python -m bench.cluster_scale --events 200000 --parallelism 1 2

Per run: wall seconds from submit to the applier's last write, steady events/s (the ``received`` poll of
``bench.run``), the TaskManagers each vertex ran on, and exactness against the oracle (counters, stats,
profiles). Results: ``bench/results/cluster-scale.json`` (printed too).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import yaml

from config import load_settings
from config.settings import Settings

from .check import diff_counters, diff_profiles, diff_stats
from .run import HBASE_PREFIX, _ensure_hbase, _redis_store, _StatsPoller

ROOT = Path(__file__).resolve().parents[1]
IDENT = "zt-scale"


def _rest(settings: Settings, path: str) -> Any:
    from zhongtai.jobs.submit import rest

    return rest(settings, path)


def _tm_env(settings: Settings, slots: int) -> dict[str, str]:
    """The stack's Flink environment with a conf copy whose TaskManagers have ``slots`` slots each."""
    from zhongtai.devtools.stack._proc import paths_of
    from zhongtai.devtools.stack.flink_cluster import _env

    paths = paths_of(settings)
    env = _env(settings, paths)
    conf = paths.conf / "flink-scale"
    if conf.exists():
        shutil.rmtree(conf)
    shutil.copytree(env["FLINK_CONF_DIR"], conf)
    tree = yaml.safe_load((conf / "config.yaml").read_text()) or {}
    tree.setdefault("taskmanager", {})["numberOfTaskSlots"] = slots
    (conf / "config.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    pids = paths.pids / "flink-scale"
    pids.mkdir(parents=True, exist_ok=True)
    return {**os.environ, **env, "FLINK_CONF_DIR": str(conf), "FLINK_PID_DIR": str(pids), "FLINK_IDENT_STRING": IDENT}


def _wait_taskmanagers(settings: Settings, n: int, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(_rest(settings, "/taskmanagers")["taskmanagers"]) != n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the cluster does not show {n} TaskManager(s) after {timeout_s:.0f} s")
        time.sleep(0.5)


def reshape(settings: Settings, taskmanagers: int) -> dict[str, str]:
    """Stop the stack's TaskManager (ours, by PID) and start ``taskmanagers`` one-slot TaskManagers."""
    from zhongtai.devtools.stack import status
    from zhongtai.devtools.stack.flink_cluster import flink_home

    tm = next(d for d in status(settings) if d["name"] == "flink-taskmanager")
    if tm["state"] == "running":
        os.kill(tm["pid"], signal.SIGTERM)
    _wait_taskmanagers(settings, 0)
    env = _tm_env(settings, slots=1)
    for _ in range(taskmanagers):
        subprocess.run(["bash", str(flink_home() / "bin" / "taskmanager.sh"), "start"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
    _wait_taskmanagers(settings, taskmanagers)
    return env


def restore(settings: Settings, env: dict[str, str]) -> None:
    """Stop the one-slot TaskManagers and bring the stack's own TaskManager back."""
    from zhongtai.devtools.stack import flink_cluster_up
    from zhongtai.devtools.stack.flink_cluster import flink_home

    subprocess.run(["bash", str(flink_home() / "bin" / "taskmanager.sh"), "stop-all"], env=env, check=False,
                   stdout=subprocess.DEVNULL)
    _wait_taskmanagers(settings, 0)
    flink_cluster_up(settings, log=lambda _m: None)
    _wait_taskmanagers(settings, 1)


def _placement(settings: Settings, job_id: str) -> dict[str, int]:
    """Vertex name (shortened) → how many distinct TaskManagers ran its subtasks."""
    out: dict[str, int] = {}
    for v in _rest(settings, f"/jobs/{job_id}")["vertices"]:
        tms = _rest(settings, f"/jobs/{job_id}/vertices/{v['id']}/taskmanagers")["taskmanagers"]
        out[v["name"][:60]] = len({t.get("taskmanager-id") or t.get("endpoint") or t.get("host") for t in tms})
    return out


def run_one(settings: Settings, parallelism: int, topics: list[str], expected: dict[str, Any],
            runid: str, events: int) -> dict[str, Any]:
    from connectors.store_log import store_log_topic
    from zhongtai.jobs.submit import cancel, submit, wait_finished
    from zhongtai.services.applier import ApplierThread, StoreApplier

    s = settings.model_copy(update={"flink": settings.flink.model_copy(update={"parallelism": parallelism})})
    name = f"p{parallelism}"
    prefix, group = f"ztbench:{runid}:{name}", f"zt-bench-{runid}-{name}"
    pattern = "|".join(re.escape(t) for t in topics)
    dlq = f"zt.bench.{runid}.dlq.{name}"
    _ensure_hbase(s)
    t0 = time.monotonic()
    with _StatsPoller(s, prefix, events) as poller:
        job_id = submit(s, drain=True, group=group, detached=True, timeout=300, topic_pattern=pattern, dlq_topic=dlq,
                        redis_prefix=prefix, hbase=True, hbase_prefix=HBASE_PREFIX, job_name=f"zt-bench-{runid}-{name}",
                        resume=False)
        applier = ApplierThread(StoreApplier(s, group=group, redis_prefix=prefix, hbase_prefix=HBASE_PREFIX, hbase=True))
        try:
            placement: dict[str, int] = {}
            while not placement:
                time.sleep(2.0)
                try:
                    placement = _placement(s, job_id)
                except OSError:
                    continue
            wait_finished(s, job_id, timeout=3600)
            applier.finish(timeout_s=300)
        except BaseException:
            cancel(s, job_id)
            applier.stop()
            raise
    wall = time.monotonic() - t0
    store = _redis_store(s, prefix)
    try:
        n, problems = diff_counters(store.all_counters(), expected["counters"])
        problems += diff_stats(store.stats(), expected["stats"])
        pn, pshown = diff_profiles(store, expected["profiles"])
        store.delete_prefix()
    finally:
        store.close()
    steady = poller.steady_rate()
    python_vertices = {k: v for k, v in placement.items() if "python" in k.lower() or "person" in k.lower()
                       or "identity" in k.lower()}
    return {
        "parallelism": parallelism, "job_id": job_id, "seconds": round(wall, 1), "events_per_s": round(events / wall),
        "steady_events_per_s": round(steady) if steady else None, "exact": n == 0 and pn == 0 and not problems,
        "differences": (problems + pshown)[:10], "taskmanagers_per_vertex": placement,
        "python_vertices_taskmanagers": python_vertices, "topics": [dlq, store_log_topic(s, group)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--persons", type=int, default=2_000)
    ap.add_argument("--parallelism", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--taskmanagers", type=int, default=2)
    ap.add_argument("--out", default="bench/results/cluster-scale.json")
    a = ap.parse_args()
    from zhongtai.devtools.generator import GeneratorConfig
    from zhongtai.devtools.generator.produce import produce

    from .run import _delete_topics

    settings = load_settings()
    runid = time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]
    cfg = GeneratorConfig(events=a.events, persons=a.persons, topic_prefix=f"zt.bench.{runid}.",
                          partitions=settings.kafka.partitions)
    print(f"[cluster_scale] run {runid}: producing {a.events:,} events", flush=True)
    rep = produce(settings, cfg, name=f"bench-{runid}", progress=False)
    assert rep.expected_path is not None
    expected = orjson.loads(rep.expected_path.read_bytes())
    topics = cfg.topics()
    doc: dict[str, Any] = {"runid": runid, "events": a.events, "taskmanagers": a.taskmanagers, "slots_per_tm": 1,
                           "partitions": settings.kafka.partitions, "cpus": os.cpu_count(),
                           "loadavg_before": os.getloadavg(), "runs": []}
    extra: list[str] = []
    env = reshape(settings, a.taskmanagers)
    try:
        for p in a.parallelism:
            print(f"[cluster_scale] p={p} ...", flush=True)
            r = run_one(settings, p, topics, expected, runid, a.events)
            extra += r.pop("topics")
            r["loadavg_after"] = os.getloadavg()
            doc["runs"].append(r)
            print(f"[cluster_scale] p={p}: {r['events_per_s']:,} events/s wall, steady {r['steady_events_per_s']}, "
                  f"{r['seconds']} s, exact {r['exact']}, python TMs {r['python_vertices_taskmanagers']}", flush=True)
    finally:
        restore(settings, env)
        _delete_topics(settings, topics + extra)
    if len(doc["runs"]) >= 2 and doc["runs"][0]["events_per_s"]:
        doc["ratio_last_over_first"] = round(doc["runs"][-1]["events_per_s"] / doc["runs"][0]["events_per_s"], 2)
    Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: v for k, v in doc.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
