"""Side-by-side variants of the SQL-only contender (``bench/sql_only.py``) on ONE pre-filled stream.

``python -m bench.sql_core prefill --events N`` produces a seeded stream to fresh topics and writes
``<run_dir>/bench/sqlcore/current.json`` (topics + the oracle's answer). ``python -m bench.sql_core run
NAME [NAME ...] [--code DIR] [--jfr SECONDS]`` runs each named variant (:data:`VARIANTS`: table/execution
options and Kafka source options) in its own child process (``bench.contender``, fresh consumer group,
fresh output topic), one after another, and prints events/s over the wall time and over the job time
(submission → end of the bounded job; JVM start-up and planning excluded), plus the exactness check
against the oracle. ``--code DIR`` puts another checkout first on the child's ``PYTHONPATH`` (compare
committed code with the working tree: ``git archive HEAD | tar -x -C /tmp/base``). ``--jfr S`` records a
JFR profile of the child's JVM for S seconds from its start (``jfr print --events
jdk.ExecutionSample``; :func:`top_frames` summarises it). ``python -m bench.sql_core clean`` deletes
the topics. See docs/performance.md, "SQL core (session 4)".
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from config.settings import Settings, load_settings, settings_to_json

ROOT = Path(__file__).resolve().parents[1]

#: name → {"options": table/execution options, "source": Kafka source WITH options, "kwargs": to run_sql}
VARIANTS: dict[str, dict[str, dict[str, str]]] = {
    "base": {},
    "no-minibatch": {"options": {"table.exec.mini-batch.enabled": "false"}},
    "mb-5s": {"options": {"table.exec.mini-batch.allow-latency": "5000 ms", "table.exec.mini-batch.size": "100000"}},
    "one-phase": {"options": {"table.optimizer.agg-phase-strategy": "ONE_PHASE"}},
    "p2": {"options": {"parallelism.default": "2"}},
    "no-ckpt": {"options": {"execution.checkpointing.interval": "0 ms"}},
    "ckpt-60s": {"options": {"execution.checkpointing.interval": "60000 ms"}},
    "buffer-100": {"options": {"execution.buffer-timeout": "100 ms"}},
    "rocksdb": {"options": {"state.backend.type": "rocksdb"}},
    "no-ttl": {"options": {"table.exec.state.ttl": "0 ms"}},
    "split-distinct": {"options": {"table.optimizer.distinct-agg.split.enabled": "true"}},
    "no-wm": {"kwargs": {"watermark": False}},
    "fetch": {"source": {"properties.max.poll.records": "5000", "properties.fetch.min.bytes": "1048576",
                         "properties.fetch.max.wait.ms": "100", "properties.max.partition.fetch.bytes": "8388608"}},
}


def _state_path(settings: Settings) -> Path:
    return settings.run_dir / "bench" / "sqlcore" / "current.json"


def prefill(settings: Settings, events: int, persons: int = 2_000) -> dict[str, Any]:
    from zhongtai.devtools.generator import GeneratorConfig
    from zhongtai.devtools.generator.produce import produce

    runid = time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]
    cfg = GeneratorConfig(events=events, persons=persons, topic_prefix=f"zt.sqlcore.{runid}.",
                          partitions=settings.kafka.partitions)
    rep = produce(settings, cfg, name=f"sqlcore-{runid}", progress=False)
    assert rep.expected_path is not None
    doc = {"runid": runid, "events": events, "topics": cfg.topics(), "expected": str(rep.expected_path)}
    path = _state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc))
    return doc


def _descendant_java(root: int) -> int | None:
    """The pid of a ``java`` process below ``root`` (the PyFlink gateway JVM), if any."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    comm: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            comm[int(d.name)] = stat[stat.index("(") + 1:stat.rindex(")")]
            children[int(stat[stat.rindex(")") + 2:].split()[1])].append(int(d.name))
    todo = list(children[root])
    while todo:
        p = todo.pop()
        if comm.get(p) == "java":
            return p
        todo.extend(children[p])
    return None


def _record_jfr(root: int, seconds: int, out: Path) -> None:
    pid = None
    while pid is None:
        time.sleep(0.5)
        pid = _descendant_java(root)
    time.sleep(2.0)
    subprocess.run(["jcmd", str(pid), "JFR.start", f"duration={seconds}s", f"filename={out}",
                    "settings=profile", "dumponexit=true"], capture_output=True, check=False)


def top_frames(jfr: Path, n: int = 25, depth: int = 40) -> list[tuple[str, int]]:
    """Self and inclusive sample counts of the task threads' methods in ``jfr`` (planning excluded).

    Task threads are Flink's (``... (1/1)#0``); a method counts once per sample in the inclusive
    view. Returns the ``n`` most frequent, self counts first (``self:``) then inclusive (``incl:``).
    """
    text = subprocess.run(["jfr", "print", "--json", "--events", "jdk.ExecutionSample", "--stack-depth",
                           str(depth), str(jfr)], capture_output=True, text=True, check=True).stdout
    events = orjson.loads(text)["recording"]["events"]
    self_c: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    for e in events:
        v = e["values"]
        name = (v.get("sampledThread") or {}).get("javaName") or ""
        if not re.search(r"\(\d+/\d+\)", name):
            continue
        threads[re.sub(r"\s*\(\d+/\d+\).*", "", name)[:60]] += 1
        frames = [f"{f['method']['type']['name']}.{f['method']['name']}" for f in v["stackTrace"]["frames"]]
        if frames:
            self_c["self: " + frames[0]] += 1
        for f in set(frames):
            incl["incl: " + f] += 1
    total = sum(threads.values())
    return ([(f"thread: {t}", c) for t, c in threads.most_common(6)] + [("task samples", total)]
            + self_c.most_common(n) + incl.most_common(n))


def run_variant(settings: Settings, state: dict[str, Any], name: str, code: str | None = None,
                jfr_s: int | None = None) -> dict[str, Any]:
    from bench.check import diff_counters
    from bench.run import _create_topic
    from bench.sql_only import read_counters
    from zhongtai.devtools.stack._proc import inherited_env

    variant = VARIANTS[name]
    # Cluster options (parallelism, checkpoints, state backend, buffers) must reach the mini-cluster's
    # configuration (settings.flink.options); table.* options go to the table config.
    table_opts = {k: v for k, v in variant.get("options", {}).items() if k.startswith("table.")}
    exec_opts = {k: v for k, v in variant.get("options", {}).items() if not k.startswith("table.")}
    if exec_opts:
        flink = settings.flink.model_copy(update={"options": {**settings.flink.options, **exec_opts}})
        settings = settings.model_copy(update={"flink": flink})
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    work = settings.run_dir / "bench" / "sqlcore" / state["runid"]
    work.mkdir(parents=True, exist_ok=True)
    out_topic = f"zt.sqlcore.{state['runid']}.out.{tag}"
    _create_topic(settings, out_topic)
    pattern = "|".join(re.escape(t) for t in state["topics"])
    kwargs = {"topic_pattern": pattern, "group": f"zt-sqlcore-{tag}", "out_topic": out_topic,
              "job_name": f"zt-sqlcore-{tag}", "options": table_opts,
              "source_options": variant.get("source", {}), **variant.get("kwargs", {})}
    args_path, result_path = work / f"{tag}.args.json", work / f"{tag}.result.json"
    args_path.write_bytes(orjson.dumps({"name": "sql", "settings": settings_to_json(settings), "kwargs": kwargs,
                                        "result": str(result_path)}))
    env = inherited_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (code, str(ROOT), env.get("PYTHONPATH")) if p)
    with (work / f"{tag}.log").open("wb") as log:
        # ``-m`` puts the working directory first on sys.path: run from the checkout under test.
        proc = subprocess.Popen([sys.executable, "-m", "bench.contender", str(args_path)], env=env,
                                cwd=code or ROOT, stdout=log, stderr=subprocess.STDOUT)
        jfr = work / f"{tag}.jfr" if jfr_s else None
        if jfr is not None:
            threading.Thread(target=_record_jfr, args=(proc.pid, jfr_s, jfr), daemon=True).start()
        rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"variant {name} failed (exit {rc}), log {work / (tag + '.log')}")
    res = orjson.loads(result_path.read_bytes())
    expected = orjson.loads(Path(state["expected"]).read_bytes())["counters"]
    n_diff, shown = diff_counters(read_counters(settings, out_topic), expected)
    events = state["events"]
    return {"variant": name, "code": code or "worktree", "events": events,
            "wall_s": round(res["seconds"], 1), "job_s": round(res["job_seconds"], 1),
            "events_per_s": round(events / res["seconds"]), "job_events_per_s": round(events / res["job_seconds"]),
            "cpu_us_per_event": round(res["job_cpu_seconds"] * 1e6 / events, 1),
            "exact": n_diff == 0, "differences": shown[:3], "jfr": str(jfr) if jfr_s else None, "log": str(work)}


def clean(settings: Settings) -> None:
    from confluent_kafka.admin import AdminClient

    state = orjson.loads(_state_path(settings).read_bytes())
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    prefix = f"zt.sqlcore.{state['runid']}."
    topics = [t for t in admin.list_topics(timeout=30).topics if t.startswith(prefix)]
    for fut in admin.delete_topics(topics, operation_timeout=30).values() if topics else ():
        fut.result()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sql_core")
    sub = p.add_subparsers(dest="cmd", required=True)
    pf = sub.add_parser("prefill")
    pf.add_argument("--events", type=int, default=300_000)
    pr = sub.add_parser("run")
    pr.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    pr.add_argument("--code", help="another checkout to run the child from (before/after comparisons)")
    pr.add_argument("--jfr", type=int, help="record a JFR profile of this many seconds from JVM start")
    sub.add_parser("clean")
    args = p.parse_args(argv)
    settings = load_settings()
    if args.cmd == "prefill":
        print(orjson.dumps(prefill(settings, args.events)).decode())
    elif args.cmd == "clean":
        clean(settings)
    else:
        state = orjson.loads(_state_path(settings).read_bytes())
        for name in args.variants:
            r = run_variant(settings, state, name, args.code, args.jfr)
            print(orjson.dumps(r).decode(), flush=True)
            if r["jfr"] and Path(r["jfr"]).exists():
                for frame, count in top_frames(Path(r["jfr"])):
                    print(f"  {count:6d}  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
