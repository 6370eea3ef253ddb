"""Throughput of the experiment statistics SQL alone (no Kafka, no Redis): a CSV file -> views -> blackhole.

    .venv/bin/python -m bench.experiments_bench --events 1000000 [--lookup-ttl-ms 1] [--old] [--no-mini-batch]

The file (written once to /tmp): ``--units`` units (default 100k), 5% ``register``, 10% app
``exposure`` (of the experiment, variation 0/1), 10% ``purchase`` with an amount, the rest
``page_view``; event times increasing. One experiment ``bench`` assigned by the stream at
``register`` (so the assignment function runs once per registering unit). ``--old`` runs the
statements of the commit before run-time definitions (``git show <rev>:pipelines/experiments.py``,
definitions compiled into the SQL) for the before/after comparison in docs/experiments.md.
Prints one JSON line: events, wall seconds (job start to end, including start-up), events/s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFINITION = """
experiments:
  - key: bench
    variants: [control, treat]
    start: 0
    assign_on: [register]
    conversion: {event_type: purchase, window: 7d}
    revenue: {event_type: purchase, window: 7d}
    cuped: {covariate_days: 30}
"""


def write_events(path: Path, n: int, units: int, seed: int = 7) -> None:
    if path.exists():
        return
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            unit = f"u{rng.randrange(units)}"
            r = rng.random()
            ts = 1_790_000_000_000 + i * 1000
            if r < 0.05:
                f.write(f"register,{ts},{unit},,,\n")
            elif r < 0.15:
                f.write(f"exposure,{ts},{unit},,bench,{rng.randrange(2)}\n")
            elif r < 0.25:
                f.write(f"purchase,{ts},{unit},{rng.randrange(1, 50000) / 100:.2f},,\n")
            else:
                f.write(f"page_view,{ts},{unit},,,\n")


def _old_module(rev: str):
    text = subprocess.run(["git", "show", f"{rev}:pipelines/experiments.py"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout  # fmt: skip
    path = Path("/tmp/zt_old_experiments.py")
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("zt_old_experiments", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--units", type=int, default=100_000)
    ap.add_argument("--lookup-ttl-ms", type=int, default=None)
    ap.add_argument("--old", metavar="REV", nargs="?", const="cc86e32", default=None)
    ap.add_argument("--no-mini-batch", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from pyflink.table import EnvironmentSettings, TableEnvironment

    from operators.experiments.definitions import parse_definitions
    from pipelines.events import job_options
    from tests.helpers import make_settings

    path = Path(f"/tmp/zt_exp_bench_{args.events}_{args.units}.csv")
    write_events(path, args.events, args.units)
    defs = parse_definitions(DEFINITION)
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = t_env.get_config()
    for k, v in job_options(make_settings()).items():
        conf.set(k, v)
    if args.no_mini_batch:
        conf.set("table.exec.mini-batch.enabled", "false")
    conf.set("parallelism.default", "1")
    conf.set("python.executable", sys.executable)
    conf.set("python.client.executable", sys.executable)
    t_env.execute_sql(f"""
CREATE TEMPORARY TABLE exp_src (event_type STRING, ts_ms BIGINT, unit STRING, amount DECIMAL(18, 2),
  exp_key STRING, variation INT)
WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'csv', 'csv.null-literal' = '')""")
    if args.old:
        old = _old_module(args.old)
        t_env.create_temporary_function("zt_exp_assign", old.assign_udf(defs))
        stmts = old.experiment_statements(defs, "exp_src")
    else:
        from pipelines.experiment_stats import (
            assign_udf,
            definition_rows_statement,
            definitions_statements,
            experiment_statements,
        )

        t_env.create_temporary_function("zt_exp_assign", assign_udf())
        extra = {} if args.lookup_ttl_ms is None else {"lookup_ttl_ms": args.lookup_ttl_ms}
        stmts = [definition_rows_statement(defs, "exp_def_rows"), *definitions_statements("exp_def_rows"),
                 *experiment_statements("exp_src", unit="person", **extra)]
    for s in stmts:
        t_env.execute_sql(s)
    t_env.execute_sql("CREATE TEMPORARY TABLE exp_sink (k STRING, v STRING, n BIGINT, c BIGINT) "
                      "WITH ('connector' = 'blackhole')")  # fmt: skip
    t0 = time.monotonic()
    t_env.execute_sql("INSERT INTO exp_sink SELECT exp_key, variant_key, units, converted FROM zt_exp_store_rows").wait()
    wall = time.monotonic() - t0
    print(json.dumps({"events": args.events, "old": args.old, "lookup_ttl_ms": args.lookup_ttl_ms,
                      "mini_batch": not args.no_mini_batch, "wall_s": round(wall, 1),
                      "events_per_s": round(args.events / wall)}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
