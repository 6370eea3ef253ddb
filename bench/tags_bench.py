"""Tags benchmark: the event job's tags (the person operator, ``pipelines.person.attach_person``; in a checkout
from before session 6 the tag shell ``pipelines.tags.attach_tags``) on the mini-cluster.

A fixed person-minute changelog is generated on the JVM (``datagen`` sequence → events → ``GROUP BY
person, minute`` with mini-batch off, so every event gives exactly one INSERT / UPDATE_AFTER row, the
same rows in every run) and fed to ``attach_tags`` with the shipped ``config/tags.yaml`` and a control
view (the broadcast function the job runs). Contenders, each in its own process, one after the other:

* ``sql``: the same changelog into a blackhole, no Python (the baseline);
* ``tags@<root>``: the changelog through ``attach_tags`` of the checkout at ``<root>`` (``--base`` is
  the original implementation, e.g. ``git worktree add --detach /tmp/tags-base 0597db0``).

Per contender: the CPU of the job's task threads (``ThreadCpu``; on a shared machine wall time and
the process's CPU, which the JIT and the SQL planning dominate, say little) and wall seconds; for the
tag contenders, per row through the tag shell: ``(cpu - cpu of sql) / rows`` (``cpu_ms_per_row``,
``cpu_rows_per_s``) and ``(wall - wall of sql) / rows`` (``ms_per_row``, ``rows_per_s``), the number
of tag changes and a digest of them (old and new must agree). Results go to
``bench/results/tags-<n>.json`` and are printed.

    python -m bench.tags_bench --rows 60000 --persons 2000 --base /tmp/tags-base
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent.parent
T0 = 1_704_067_200_000  # 2024-01-01T00:00Z
#: Event time between two generated events: 60k rows span ~2 days, so the hourly / daily tags flip by timer.
STEP_MS = 3_000


def _changelog(t_env: Any, rows: int, persons: int, rate: int = 1_000_000_000) -> None:
    """Register ``pm``: the person-minute changelog of ``rows`` generated events (deterministic), produced
    at ``rate`` rows per second (as fast as possible by default)."""
    t_env.get_config().set("table.exec.mini-batch.enabled", "false")
    t_env.execute_sql(f"""
CREATE TEMPORARY TABLE gen (id BIGINT) WITH (
  'connector' = 'datagen', 'fields.id.kind' = 'sequence', 'fields.id.start' = '0',
  'fields.id.end' = '{rows - 1}', 'rows-per-second' = '{rate}')""")
    changelog_views(t_env, persons)


def changelog_views(t_env: Any, persons: int) -> None:
    """Register ``ev`` (generated events) and ``pm`` (their person-minute changelog) over a ``gen`` table."""
    t_env.execute_sql(f"""
CREATE TEMPORARY VIEW ev AS
SELECT CONCAT('p', CAST(MOD(id * 2654435761, {persons}) AS STRING)) AS person,
       CAST({T0} + id * {STEP_MS} AS BIGINT) AS ts_ms,
       CASE MOD(id * 7919 / 101, 20) WHEN 0 THEN 'purchase' WHEN 1 THEN 'add_to_cart' WHEN 2 THEN 'add_to_cart'
            ELSE 'page_view' END AS et,
       CAST(MOD(id, 97) * 13.5 AS DECIMAL(18, 2)) AS amount
FROM gen""")
    t_env.execute_sql("""
CREATE TEMPORARY VIEW pm AS
SELECT person, ts_ms / 60000 AS mb,
  COUNT(*) FILTER (WHERE et = 'page_view') AS n_views,
  COUNT(*) FILTER (WHERE et = 'add_to_cart') AS n_carts,
  COUNT(*) FILTER (WHERE et = 'purchase') AS n_purchases,
  COUNT(*) AS n_events,
  SUM(CASE WHEN et = 'purchase' THEN amount END) AS n_gmv,
  MIN(ts_ms) AS first_ts, MAX(ts_ms) AS last_ts,
  MAX(CASE WHEN et = 'purchase' THEN ts_ms END) AS last_purchase
FROM ev GROUP BY person, ts_ms / 60000""")


#: JVM threads that are not the job's per-row work: JIT compilers, GC, the JVM itself, py4j's threads
#: (they plan the SQL and generate code once per run) and the mini-cluster's coordination (RPC,
#: heartbeats, metrics: their CPU grows with the wall time, which the machine's load decides).
_NOT_JOB = re.compile(r"^(C\d CompilerThre|Thread-\d|GC Thread|G1 |VM |Sweeper|java$|Service Thread|jemalloc|"
                      r"process reaper|Signal Dispatch|Reference Handl|Finalizer|Common-Cleaner|Notification|Monitor|"
                      r"flink-|jobmanager|mini-cluster|Log4j|Flink-|pool-|Timer|IOManager|OutputFlusher|PemJa)")


class ThreadCpu:
    """CPU seconds of the JVM's threads (``/proc/<pid>/task``), sampled every 0.2 s while a job runs:
    task threads end with the job, so each keeps its last sample. ``job_s`` sums the threads doing the
    job's work (task threads, the Python operators in thread mode, checkpoints); ``tags_s`` those
    running the tag operator's chain. Steadier than wall time on a shared machine, and free of the
    JIT and planning CPU that wall time and process CPU include."""

    def __init__(self) -> None:
        from pyflink.java_gateway import get_gateway

        self.pid = get_gateway().jvm.java.lang.ProcessHandle.current().pid()
        self.seen: dict[str, tuple[str, float]] = {}
        self.tick = os.sysconf("SC_CLK_TCK")
        self.base = self._sample()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> dict[str, tuple[str, float]]:
        out = {}
        for t in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                st = (t / "stat").read_text()
            except OSError:
                continue
            f = st.rsplit(")", 1)[1].split()
            out[t.name] = (st[st.index("(") + 1 : st.rindex(")")], (int(f[11]) + int(f[12])) / self.tick)
        return out

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.seen.update(self._sample())

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self.seen.update(self._sample())
        used = {tid: (name, cpu - self.base.get(tid, (name, 0.0))[1]) for tid, (name, cpu) in self.seen.items()}
        return {"job_s": round(sum(c for n, c in used.values() if not _NOT_JOB.match(n)), 2),
                "tags_s": round(sum(c for n, c in used.values() if n.startswith("tags")), 2),
                "process_s": round(sum(c for _, c in used.values()), 2)}


def run_one(mode: str, rows: int, persons: int) -> dict[str, Any]:
    """One contender in this process (``sql`` or ``tags``); the tags come from whatever ``pipelines.tags``
    this interpreter imports (PYTHONPATH)."""
    from pyflink.common import Types

    from config import load_settings
    from pipelines.events import job_options
    from zhongtai.jobs.runner import RunOptions, make_envs

    settings = load_settings(overrides={"flink": {"parallelism": 1, "options": {
        "restart-strategy.type": "none", "execution.checkpointing.checkpoints-after-tasks-finish": "false"}}})
    try:
        from connectors.jvm import zhongtai_jar

        jars = [zhongtai_jar(settings)]
    except ImportError:  # a checkout from before the JVM module
        jars = []
    env, t_env = make_envs(settings, RunOptions(resume=False, job_name=f"tags-bench-{time.time_ns()}"), jars)
    for k, v in job_options(settings).items():
        t_env.get_config().set(k, v)
    _changelog(t_env, rows, persons)
    cpu, t0 = ThreadCpu(), time.monotonic()
    if mode == "sql":
        t_env.execute_sql("CREATE TEMPORARY TABLE sink (op STRING, person STRING, mb BIGINT, last_ts BIGINT) "
                          "WITH ('connector' = 'blackhole')")
        t_env.execute_sql("INSERT INTO sink SELECT op, person, mb, last_ts FROM TO_CHANGELOG(input => TABLE pm) "
                          "WHERE op <> 'UPDATE_BEFORE'").wait()
        return {"mode": mode, "wall_s": round(time.monotonic() - t0, 2), **cpu.stop()}
    control = env.from_collection(['{"kind": "rule", "op": "noop"}'], type_info=Types.STRING())
    t_env.create_temporary_view("ctl", t_env.from_data_stream(control).alias("payload"))
    try:
        from pipelines.person import attach_person

        attach_person(t_env, settings, person_minutes_view="pm", events_view=None, control_view="ctl")
    except ImportError:  # a checkout from before the person operator
        from pipelines.tags import attach_tags  # type: ignore[import-not-found]

        attach_tags(t_env, settings, "pm", "ctl")
    out = t_env.to_data_stream(t_env.sql_query(
        "SELECT person, tag, op, ts_ms, cause, tagset_version FROM zt_tag_changes"))
    with out.execute_and_collect() as results:
        changes = sorted(tuple(r) for r in results)
    wall, used = time.monotonic() - t0, cpu.stop()
    causes: dict[str, int] = {}
    for c in changes:
        causes[f"{c[1]}:{c[2]}:{c[4]}"] = causes.get(f"{c[1]}:{c[2]}:{c[4]}", 0) + 1
    return {"mode": mode, "wall_s": round(wall, 2), **used, "changes": len(changes),
            "digest": hashlib.sha256(orjson.dumps(changes)).hexdigest()[:16], "by_tag_op_cause": causes}


def _child(root: Path, mode: str, rows: int, persons: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", mode, "--rows", str(rows), "--persons", str(persons)]
    out = subprocess.run(cmd, env=env, cwd=root, check=True, capture_output=True, text=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return orjson.loads(line[len("RESULT "):])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=60_000, help="generated events = person-minute rows")
    p.add_argument("--persons", type=int, default=2_000)
    p.add_argument("--base", type=Path, help="a checkout of the original tags implementation")
    p.add_argument("--repeat", type=int, default=1, help="rounds of all contenders (interleaved)")
    p.add_argument("--out", type=Path)
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one:
        print("RESULT " + orjson.dumps(run_one(a.one, a.rows, a.persons)).decode(), flush=True)
        return
    roots = [("new", HERE)] + ([("base", a.base.resolve())] if a.base else [])
    rounds = []
    for i in range(a.repeat):
        sql = _child(HERE, "sql", a.rows, a.persons)
        rnd: dict[str, Any] = {"sql": sql}
        for name, root in (roots if i % 2 == 0 else roots[::-1]):
            r = _child(root, "tags", a.rows, a.persons)
            shell = max(r["wall_s"] - sql["wall_s"], 1e-3)
            cpu = max(r["job_s"] - sql["job_s"], 1e-3)
            r.update(root=str(root), shell_s=round(shell, 2), rows_per_s=round(a.rows / shell),
                     ms_per_row=round(shell * 1000 / a.rows, 4), cpu_ms_per_row=round(cpu * 1000 / a.rows, 4),
                     cpu_rows_per_s=round(a.rows / cpu))
            rnd[name] = r
            print(f"round {i + 1} {name:>4}: job-thread cpu {r['job_s']:6.2f} s (sql {sql['job_s']:.2f}) "
                  f"{r['cpu_ms_per_row']:.4f} ms/row = {r['cpu_rows_per_s']:>6} rows/s | wall {r['wall_s']:6.2f} s "
                  f"(sql {sql['wall_s']:.2f}) {r['ms_per_row']:.4f} ms/row | changes {r['changes']} {r['digest']}",
                  flush=True)
        rounds.append(rnd)
    result: dict[str, Any] = {"rows": a.rows, "persons": a.persons, "step_ms": STEP_MS, "rounds": rounds}
    if a.base:
        best = {n: min(r[n]["ms_per_row"] for r in rounds) for n in ("new", "base")}
        cpu = {n: min(r[n]["cpu_ms_per_row"] for r in rounds) for n in ("new", "base")}
        result.update(best_ms_per_row=best, speedup=round(best["base"] / best["new"], 2) if best["new"] else None,
                      best_cpu_ms_per_row=cpu, cpu_speedup=round(cpu["base"] / cpu["new"], 2),
                      same_changes=all(r["new"]["digest"] == r["base"]["digest"] for r in rounds))
        print(f"best wall ms/row: base {best['base']:.4f}, new {best['new']:.4f} -> {result['speedup']}x "
              "(0: the run with tags was not slower than the SQL alone; the machine's load decides); "
              f"best cpu ms/row: base {cpu['base']:.4f}, new {cpu['new']:.4f} -> {result['cpu_speedup']}x; "
              f"same changes: {result['same_changes']}")
    out = a.out or HERE / "bench" / "results" / f"tags-{a.rows}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
