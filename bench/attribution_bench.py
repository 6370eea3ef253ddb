"""Throughput of the attribution operator (``pipelines.attribution.attach_attribution``) on the mini-cluster.

``run(purchases, receipts, persons, parallelism)`` generates purchases and delivered receipts on the JVM
(datagen sequences, so the source is never the limit) of ``persons`` people over two hours of event time,
the receipts a minute ahead of the purchases; they go through the job's input query, watermarks and
the keyed Python function; the conversions go to a blackhole. Reports wall time from submission to the last
conversion (start-up included), inputs/s, and the CPU seconds the run took in this process and the
mini-cluster JVM (inputs per CPU second: what a quiet core would do, on a shared machine).

    python -m bench.attribution_bench 100000 50000 5000 1
"""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson

T0 = 1_767_232_800_000
SPAN_MS = 2 * 3_600_000


def _cpu_s() -> float:
    """CPU seconds of this process and its descendants (the mini-cluster's JVM), from /proc."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", encoding="ascii") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(d)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)  # ppid, utime + stime
    mine, total, grew = {os.getpid()}, 0.0, True
    while grew:
        new = {pid for pid, (ppid, _) in stats.items() if ppid in mine} - mine
        mine |= new
        grew = bool(new)
    for pid in mine:
        total += stats.get(pid, (0, 0.0))[1]
    return total


def run(purchases: int = 100_000, receipts: int = 50_000, persons: int = 5_000, parallelism: int = 1) -> dict[str, Any]:
    from config import load_settings
    from pipelines.attribution import attach_attribution
    from zhongtai.jobs.runner import RunOptions, make_envs

    settings = load_settings(overrides={
        "flink": {"parallelism": parallelism, "options": {"restart-strategy.type": "none"}},
        "job": {"allowed_lateness_ms": 300_000, "attribution_window_ms": 3_600_000,
                "attribution_receipt_delay_ms": 60_000}})
    _env, t_env = make_envs(settings, RunOptions(resume=False, job_name=f"attribution-bench-{time.time_ns()}"), [])

    def gen(name: str, n: int) -> None:
        t_env.execute_sql(f"""CREATE TEMPORARY TABLE {name} (seq BIGINT) WITH ('connector' = 'datagen',
            'fields.seq.kind' = 'sequence', 'fields.seq.start' = '1', 'fields.seq.end' = '{n}',
            'rows-per-second' = '1000000000')""")

    gen("gen_p", purchases)
    gen("gen_r", receipts)
    t_env.execute_sql(f"""CREATE TEMPORARY VIEW bench_events AS
        SELECT CONCAT('p', CAST(MOD(seq * 7919, {persons}) AS STRING)) AS person,
               CONCAT('b', CAST(seq AS STRING)) AS event_id, 'purchase' AS event_type,
               CAST({T0} + seq * {SPAN_MS // purchases} AS BIGINT) AS ts_ms,
               CAST(MOD(seq, 500) AS DECIMAL(18, 2)) AS amount FROM gen_p""")
    t_env.execute_sql(f"""CREATE TEMPORARY VIEW bench_receipts AS
        SELECT ENCODE(CONCAT('{{"action_id":"a', CAST(seq AS STRING), '","person_id":"p',
               CAST(MOD(seq * 104729, {persons}) AS STRING), '","channel":"coupon","status":"delivered","ts_ms":',
               CAST({T0 - 60_000} + seq * {SPAN_MS // receipts} AS STRING), ',"rule_id":"r',
               CAST(MOD(seq, 5) AS STRING), '","campaign":"c"}}'), 'UTF-8') AS payload FROM gen_r""")
    attach_attribution(t_env, settings, receipts="bench_receipts", events_view="bench_events")
    # A blackhole sink: collecting ~all conversions into this process would measure py4j instead.
    t_env.execute_sql("CREATE TEMPORARY TABLE bench_out (k STRING, n BIGINT) WITH ('connector' = 'blackhole')")
    t0, c0 = time.monotonic(), _cpu_s()
    t_env.execute_sql("INSERT INTO bench_out SELECT action_id, delivered_ts FROM zt_conversions").wait()
    wall, cpu = time.monotonic() - t0, _cpu_s() - c0
    inputs = purchases + receipts
    return {"purchases": purchases, "receipts": receipts, "persons": persons, "parallelism": parallelism,
            "wall_s": round(wall, 2), "inputs_per_s": round(inputs / wall),
            "cpu_s": round(cpu, 1), "inputs_per_cpu_s": round(inputs / cpu)}


def main(argv: list[str] | None = None) -> None:
    args = [int(a) for a in (sys.argv[1:] if argv is None else argv)]
    print(orjson.dumps(run(*args), option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
