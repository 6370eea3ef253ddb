"""Where the SQL core's time goes, stage by stage: the same pre-filled stream through growing prefixes of the plan.

``python -m bench.stage_probe STAGE [STAGE ...]`` (after ``python -m bench.sql_core prefill --events N``) runs
each named stage (:data:`STAGES`) in its own child process on the embedded mini-cluster, reading the
sql_core stream to its end into a blackhole sink, and prints and writes (``bench/results/stage-probe.json``)
the job time (submission → bounded end: JVM start-up and planning excluded) and events/s per stage. The
difference between two consecutive stages is the cost of what the later one adds. ``--jfr S`` records a JFR
profile of each stage's JVM for S seconds from its start and prints its top frames (task threads).

Stages (each includes everything above it unless said otherwise):

| stage | what |
|---|---|
| ``source`` | the Kafka raw source alone (payload length into the sink) |
| ``parse`` | + the JVM parse alone (``zt_decode_event``, no identifier SQL) |
| ``decode`` | + the job's decode and validation (``zt_decoded``) |
| ``dedup`` | + keep-first dedup by event_id (``zt_unique``) |
| ``counters`` | + the live counters (``zt_counters``): what the SQL-only contender runs |
| ``foundation`` | + anchor minutes, identifier combinations, pipeline totals and the DLQ insert |
| ``jsonfmt`` | not a prefix: the Kafka source with Flink's ``json`` format (one Jackson parse per record, every field a STRING, parse errors skipped): what a single-parse decode would cost (it drops bad records without a reason, so it cannot feed the DLQ) |
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent

#: stage -> (the SELECTs into blackholes, as (view or query) strings)
STAGES: dict[str, list[str]] = {
    "source": ["SELECT CAST(CHAR_LENGTH(CAST(payload AS STRING)) AS BIGINT) AS n FROM zt_source"],
    "parse": ["SELECT CAST(CHAR_LENGTH(COALESCE(d.reason, d.event_id)) + CARDINALITY(d.ids) AS BIGINT) AS n FROM "
              "(SELECT zt_decode_event(payload, kts, '{config}') AS d FROM zt_source)"],
    "decode": ["SELECT CAST(CHAR_LENGTH(COALESCE(reason, event_id)) AS BIGINT) AS n FROM zt_decoded"],
    "dedup": ["SELECT ts_ms AS n FROM zt_unique"],
    "counters": ["SELECT n_events AS n FROM zt_counters"],
    "foundation": [
        "SELECT n_events AS n FROM zt_counters",
        "SELECT n_events AS n FROM zt_anchor_minutes",
        "SELECT ts_ms AS n FROM zt_combos",
        "SELECT n FROM zt_totals",
        "SELECT CAST(CHAR_LENGTH(reason) AS BIGINT) AS n FROM zt_decoded WHERE reason IS NOT NULL",
    ],
    "jsonfmt": ["SELECT CAST(CHAR_LENGTH(CONCAT_WS('|', event_id, event_type, ts, ids, props, source)) AS BIGINT) AS n "
                "FROM zt_source"],
}


def child(stage: str, out: Path) -> None:
    from bench.sql_core import _state_path
    from bench.sql_only import _jvm_cpu_seconds
    from config.settings import load_settings
    from connectors.kafka_tables import source_ddl
    from pipelines.decode import decode_config, function_statements
    from pipelines.events import job_options, view_statements
    from zhongtai.jobs.runner import RunOptions, connector_jars, make_table_env

    settings = load_settings()
    state = orjson.loads(_state_path(settings).read_bytes())
    pattern = "|".join(re.escape(t) for t in state["topics"])
    group = f"zt-stage-{stage}-{os.getpid()}"
    opts = RunOptions(bounded=True, group=group, topic_pattern=pattern, resume=False, job_name=group)
    t0 = time.monotonic()
    t_env = make_table_env(settings, opts, connector_jars(settings))
    conf = t_env.get_config()
    for k, v in job_options(settings).items():
        conf.set(k, v)
    ddl = source_ddl("zt_source", settings.kafka, topic_pattern=pattern, group=group, bounded=True,
                     idle_timeout_ms=settings.job.source_idle_timeout_ms, key_column=stage != "jsonfmt")
    if stage == "jsonfmt":
        ddl = re.sub(r"payload BYTES,", "event_id STRING, event_type STRING, ts STRING, ids STRING, props STRING, "
                     "source STRING,", ddl).replace("'format' = 'raw'", "'format' = 'json', "
                                                    "'json.ignore-parse-errors' = 'true'")
    t_env.execute_sql(ddl)
    if stage == "parse":
        for stmt in function_statements():
            t_env.execute_sql(stmt)
    elif stage not in ("source", "jsonfmt"):
        for stmt in view_statements("zt_source", settings):
            t_env.execute_sql(stmt)
    stmt_set = t_env.create_statement_set()
    for i, query in enumerate(STAGES[stage]):
        t_env.execute_sql(f"CREATE TEMPORARY TABLE zt_hole_{i} (n BIGINT) WITH ('connector' = 'blackhole')")
        config = decode_config(settings.job, settings.identity, settings.pii).replace("'", "''")
        stmt_set.add_insert_sql(f"INSERT INTO zt_hole_{i} {query.replace('{config}', config)}")
    result = stmt_set.execute()
    t1, cpu1 = time.monotonic(), _jvm_cpu_seconds()
    result.wait()
    t2 = time.monotonic()
    out.write_bytes(orjson.dumps({"job_s": t2 - t1, "wall_s": t2 - t0, "job_cpu_s": _jvm_cpu_seconds() - cpu1,
                                  "events": state["events"]}))


def _wait_for_jfr(jfr: Path, timeout_s: float = 60.0) -> None:
    """The gateway JVM writes the recording while it shuts down, after the child process has exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if jfr.exists() and subprocess.run(["jfr", "summary", str(jfr)], capture_output=True).returncode == 0:
            return
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stage_probe")
    p.add_argument("stages", nargs="+", choices=list(STAGES))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stage-probe.json")
    p.add_argument("--jfr", type=int, help="record a JFR profile of each stage's JVM for this many seconds "
                   "(bench.sql_core.top_frames summarises it)")
    args = p.parse_args(argv)
    if args.child:
        child(args.stages[0], args.out)
        return 0
    from bench.sql_core import _record_jfr, top_frames
    from zhongtai.devtools.stack._proc import inherited_env

    rows: list[dict[str, Any]] = []
    for stage in args.stages:
        tmp = args.out.with_suffix(f".{stage}.tmp")
        env = inherited_env()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        proc = subprocess.Popen([sys.executable, "-m", "bench.stage_probe", stage, "--child", "--out", str(tmp)],
                                env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        jfr = args.out.with_suffix(f".{stage}.jfr") if args.jfr else None
        if jfr is not None:
            threading.Thread(target=_record_jfr, args=(proc.pid, args.jfr, jfr), daemon=True).start()
        if proc.wait() != 0:
            raise RuntimeError(f"stage {stage} failed (exit {proc.returncode})")
        r = orjson.loads(tmp.read_bytes())
        tmp.unlink()
        row = {"stage": stage, "events": r["events"], "job_s": round(r["job_s"], 1),
               "job_events_per_s": round(r["events"] / r["job_s"]),
               "cpu_us_per_event": round(r["job_cpu_s"] * 1e6 / r["events"], 1),
               "load": os.getloadavg()[0]}
        rows.append(row)
        print(f"{stage:<12} job {row['job_s']:>7.1f} s  {row['job_events_per_s']:>8,} ev/s  "
              f"{row['cpu_us_per_event']:>7.1f} µs CPU/ev  load {row['load']:.1f}", flush=True)
        if jfr is not None:
            _wait_for_jfr(jfr)
        if jfr is not None and jfr.exists():
            row["jfr"] = str(jfr)
            for frame, count in top_frames(jfr):
                print(f"  {count:6d}  {frame}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
