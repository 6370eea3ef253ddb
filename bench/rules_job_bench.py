"""Throughput of the strategy engine in the person operator (``pipelines.person.attach_person``) on the mini-cluster.

``run(n_events, persons, parallelism)`` feeds seeded random events (page_view, add_to_cart, purchase, login,
register, and ``search`` which no shipped rule listens to, so SQL drops it) of ``persons`` people, spread
over one hour of event time and up to 3 s out of order, through the shipped ``config/rules.yaml`` with a
collection source, collects ``zt_actions`` + ``zt_suppressed`` and reports wall time from submission to
the last output (start-up included), events/s, events that reached Python, actions and suppressions.

    python -m bench.rules_job_bench 100000 5000 1
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from operators.rules.registry import RuleSet
from operators.rules.schema import load_file

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "rules.yaml"
TYPES = ["page_view", "add_to_cart", "purchase", "login", "register", "search"]
WEIGHTS = [55, 12, 4, 10, 2, 17]
T0 = 1_767_232_800_000


def events(n: int, persons: int, seed: int = 7) -> list[tuple]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        et = rnd.choices(TYPES, WEIGHTS)[0]
        ts = T0 + i * 3_600_000 // n - rnd.randrange(3000)
        amount = Decimal(rnd.randrange(100, 50000)) / 100 if et == "purchase" else None
        out.append((f"p{rnd.randrange(persons)}", f"e{i}", et, ts, "(none)", "app", amount, f"i{rnd.randrange(50)}"))
    return out


def collection_inputs(env: Any, t_env: Any, rows: list[tuple], person: str) -> None:
    """Register ``zt_person_events`` over ``rows`` (a collection source) and an updating
    ``zt_person_minutes`` (a GROUP BY over one constant bucket of ``person``)."""
    from pipelines.person import event_row_type

    t_env.create_temporary_view("zt_person_events_raw", t_env.from_data_stream(
        env.from_collection(rows, type_info=event_row_type())))
    t_env.create_temporary_view("zt_person_events", t_env.sql_query(
        "SELECT *, CAST(NULL AS STRING) AS props FROM zt_person_events_raw"))
    t_env.execute_sql(f"""CREATE TEMPORARY VIEW zt_person_minutes AS
        SELECT person, mb, SUM(v) AS n_views, SUM(v) AS n_carts, SUM(v) AS n_purchases, SUM(v) AS n_events,
               SUM(g) AS n_gmv, MIN(v) AS first_ts, MAX(v) AS last_ts, MAX(v) AS last_purchase
        FROM (VALUES ('{person}', CAST(1 AS BIGINT), CAST(1 AS BIGINT), CAST(0 AS DECIMAL(18, 2))))
          AS t(person, mb, v, g) GROUP BY person, mb""")


def run(n_events: int = 100_000, persons: int = 5_000, parallelism: int = 1) -> dict[str, Any]:
    from config import load_settings
    from connectors.jvm import zhongtai_jar
    from pipelines.person import attach_person
    from zhongtai.jobs.runner import RunOptions, make_envs

    settings = load_settings(overrides={"flink": {"parallelism": parallelism,
                                                  "options": {"restart-strategy.type": "none"}},
                                        "job": {"watermark_delay_ms": 60_000}})
    env, t_env = make_envs(settings, RunOptions(resume=False, job_name=f"rules-bench-{time.time_ns()}"),
                           [zhongtai_jar(settings)])
    rows = events(n_events, persons)
    collection_inputs(env, t_env, rows, "p0")
    ruleset = RuleSet.from_definitions(load_file(SHIPPED))
    attach_person(t_env, settings, ruleset=ruleset)
    out = t_env.to_data_stream(t_env.sql_query(
        "SELECT 'a' AS t, payload FROM zt_actions UNION ALL SELECT reason, payload FROM zt_suppressed"))
    t0 = time.monotonic()
    kinds: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    for r in out.execute_and_collect():
        kinds[r[0]] += 1
        rules[orjson.loads(r[1])["rule_id"]] += 1
    wall = time.monotonic() - t0
    routed = sum(1 for r in rows if r[2] in ruleset.event_types)
    return {"events": n_events, "routed_to_python": routed, "persons": persons, "parallelism": parallelism,
            "wall_s": round(wall, 2), "events_per_s": round(n_events / wall), "actions": kinds["a"],
            "suppressed": {k: v for k, v in kinds.items() if k != "a"}, "by_rule": dict(rules)}


def main(argv: list[str] | None = None) -> None:
    args = [int(a) for a in (sys.argv[1:] if argv is None else argv)]
    print(orjson.dumps(run(*args), option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
