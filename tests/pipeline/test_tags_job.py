"""Tags inside the event job (the person operator, ``pipelines.person``) on the embedded mini-cluster, plus the
person state codec.

One Flink run (parallelism 2) feeds a hand-made changelog as ``person_minutes_view`` and control
messages as ``control_view``, and checks the exact tag changes and control results:

* a control upsert lowers ``high_value`` to ``gmv_90d >= 100`` and takes effect (E's 150.00 would not
  qualify under the file's 1000); a broken v3 is rejected with its reason and v2 keeps running;
* A crosses the threshold through an UPDATE of one minute bucket (absolute values: B's 60 → 90 stays
  below, a double count would give 150);
* a DELETE of E's bucket (a merge moved it away) removes the tag; E's other bucket stays (E's id,
  ``E,1``, has a comma: the row reaches Python as one comma-separated string, the person last);
* ``churn_risk`` is added by a TIMER at exactly last_purchase + 30 days for A and C, once unrelated
  persons (Z0..Z5, on both parallel instances) moved the watermark past it; C's later purchase
  removes it; D's timer lies beyond the last real watermark and never fires (the end-of-input
  watermark is not taken as time, nor is the wall clock: the run uses the job's table options, mini-batch
  on, under which a planner watermark can silently become processing time, and W's row comes after a
  pause in which such a watermark would pass D's timer);
* F's next flip moves later (a second purchase two minutes on): the first timer is replaced and the
  tag comes at exactly the new time (Y0..Y5 move the watermark past both).
"""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from operators import profile_windows
from operators.person import PersonState
from operators.profile import DictRows, Profile
from operators.tags import TagSet, TagState
from state.person import CodecError, decode_person, encode_person
from tests.helpers import ROOT, fresh_names, make_settings

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z
DAY = profile_windows.DAY_MS
TAGS = """
version: 1
tags:
  - name: high_value
    description: test
    expression: gmv_90d >= 1000
  - name: churn_risk
    description: test
    expression: purchases >= 2 and days_since(last_purchase) >= 30
"""
SLEEP_S = 2.0


def _row(op: str, person: str, ts: int, *, views=0, purchases=0, events=1, gmv="0.00", first=None, lp=None,
         minute=None, sleep=False) -> tuple:
    return (op, person, minute if minute is not None else ts // 60_000, views, 0, purchases, events, Decimal(gmv),
            first if first is not None else ts, ts, lp or 0, sleep)  # lp 0 = NULL (tuples hold no nulls)


def _rows() -> list[tuple]:
    ma, me = T0 // 60_000, (T0 + DAY) // 60_000
    a_old = {"purchases": 1, "gmv": "60.00", "lp": T0 + 1000}
    b_old = {"purchases": 1, "gmv": "60.00", "lp": T0 + 2000}
    e1 = {"purchases": 1, "gmv": "150.00", "lp": T0 + DAY + 1000}
    return [
        _row("+I", "A", T0 + 1000, sleep=True, **a_old),
        _row("-U", "A", T0 + 1000, **a_old),
        _row("+U", "A", T0 + 20_000, minute=ma, purchases=2, events=2, gmv="110.00", first=T0 + 1000, lp=T0 + 20_000),
        _row("+I", "B", T0 + 2000, **b_old),
        _row("-U", "B", T0 + 2000, **b_old),
        _row("+U", "B", T0 + 30_000, minute=ma, purchases=1, events=2, gmv="90.00", first=T0 + 2000, lp=T0 + 2000),
        _row("+I", "E,1", T0 + DAY + 1000, **e1),
        _row("+I", "E,1", T0 + DAY + 120_000, views=1),
        _row("-D", "E,1", T0 + DAY + 1000, minute=me, **e1),
        _row("+I", "C", T0 + 2 * DAY, purchases=1, gmv="50.00", lp=T0 + 2 * DAY),
        _row("+I", "C", T0 + 2 * DAY + 60_000, purchases=1, gmv="30.00", lp=T0 + 2 * DAY + 60_000),
        # F's churn timer moves later (33 d -> 33 d + 2 min): the one for 33 d must not add the tag.
        _row("+I", "F", T0 + 3 * DAY, purchases=2, events=2, gmv="10.00", lp=T0 + 3 * DAY),
        _row("+I", "F", T0 + 3 * DAY + 120_000, purchases=1, gmv="5.00", lp=T0 + 3 * DAY + 120_000),
        # Watermark drivers: persons on every parallel instance move event time past C's timer.
        *(_row("+I", f"Z{i}", T0 + 32 * DAY + 60_000 + 3_600_000 + 300_000, views=1) for i in range(6)),
        *(_row("+I", f"Y{i}", T0 + 34 * DAY + 3_600_000, views=1) for i in range(6)),  # ... and past F's
        _row("+I", "C", T0 + 40 * DAY, purchases=1, gmv="10.00", lp=T0 + 40 * DAY, sleep=True),
        _row("+I", "D", T0 + 39 * DAY, purchases=1, gmv="10.00", lp=T0 + 39 * DAY),
        _row("+I", "D", T0 + 39 * DAY + 60_000, purchases=1, gmv="10.00", lp=T0 + 39 * DAY + 60_000),
        # A pause with D's timer registered: a watermark that is not event time (the wall clock) fires it now.
        _row("+I", "W", T0 + 39 * DAY + 120_000, views=1, sleep=True),
    ]


CONTROL = [
    {"kind": "rule", "op": "upsert", "name": "other", "version": 1},
    {"kind": "tag", "op": "upsert", "name": "high_value", "version": 2, "definition": {"expression": "gmv_90d >= 100"}},
    {"kind": "tag", "op": "upsert", "name": "high_value", "version": 3, "definition": {"expression": "gmv_90d >= "}},
]

EXPECTED = sorted([
    ("A", "high_value", "add", T0 + 20_000, "profile", 2),
    ("E,1", "high_value", "add", T0 + DAY + 1000, "profile", 2),
    ("E,1", "high_value", "remove", T0 + DAY + 120_000, "profile", 2),
    ("A", "churn_risk", "add", T0 + 20_000 + 30 * DAY, "timer", 2),
    ("C", "churn_risk", "add", T0 + 2 * DAY + 60_000 + 30 * DAY, "timer", 2),
    ("C", "churn_risk", "remove", T0 + 40 * DAY, "profile", 2),
    ("F", "churn_risk", "add", T0 + 3 * DAY + 120_000 + 30 * DAY, "timer", 2),
])


def _changelog_source(env, t_env, rows: list[tuple]):
    """The rows as a changelog table; a row flagged ``sleep`` is held back ``SLEEP_S`` first (pacing)."""
    from pyflink.common import Row, Types
    from pyflink.common.types import RowKind
    from pyflink.table import DataTypes, Schema

    kinds = {"+I": RowKind.INSERT, "-U": RowKind.UPDATE_BEFORE, "+U": RowKind.UPDATE_AFTER, "-D": RowKind.DELETE}
    names = ["person", "mb", "n_views", "n_carts", "n_purchases", "n_events", "n_gmv", "first_ts", "last_ts",
             "last_purchase"]
    out_type = Types.ROW_NAMED(names, [Types.STRING(), Types.LONG(), Types.LONG(), Types.LONG(), Types.LONG(),
                                       Types.LONG(), Types.BIG_DEC(), Types.LONG(), Types.LONG(), Types.LONG()])
    in_type = Types.TUPLE([Types.STRING(), Types.STRING(), Types.LONG(), Types.LONG(), Types.LONG(), Types.LONG(),
                           Types.LONG(), Types.BIG_DEC(), Types.LONG(), Types.LONG(), Types.LONG(), Types.BOOLEAN()])

    def pace(t):
        import time

        if t[11]:
            time.sleep(SLEEP_S)
        r = Row(*t[1:10], t[10] or None)
        r.set_row_kind(kinds[t[0]])
        return r

    # Keyed by person before the SQL stage so that each person's rows stay in order at any parallelism
    # (in the job, the person-minute aggregate is hash-partitioned the same way).
    ds = env.from_collection(rows, type_info=in_type).set_parallelism(1).map(pace, output_type=out_type) \
        .set_parallelism(1).key_by(lambda r: r[0], key_type=Types.STRING()).map(lambda r: r, output_type=out_type)
    schema = (Schema.new_builder().column("person", DataTypes.STRING()).column("mb", DataTypes.BIGINT())
              .column("n_views", DataTypes.BIGINT()).column("n_carts", DataTypes.BIGINT())
              .column("n_purchases", DataTypes.BIGINT()).column("n_events", DataTypes.BIGINT())
              .column("n_gmv", DataTypes.DECIMAL(18, 2)).column("first_ts", DataTypes.BIGINT())
              .column("last_ts", DataTypes.BIGINT()).column("last_purchase", DataTypes.BIGINT()).build())
    return t_env.from_changelog_stream(ds, schema)


@pytest.mark.flink
def test_tags_in_the_job_profile_changes_timers_deletes_and_control() -> None:
    from pyflink.common import Types

    from connectors.jvm import zhongtai_jar
    from pipelines.events import job_options
    from pipelines.person import attach_person
    from zhongtai.jobs.runner import RunOptions, make_envs

    settings = make_settings(flink={"parallelism": 2, "options": {"pipeline.auto-watermark-interval": "50 ms",
                                                               "restart-strategy.type": "none",
                                                               "python.fn-execution.bundle.size": "1"}},
                             # bundle_rows 1: every changelog row is its own bundle, so the tags are evaluated after
                             # each row and the changes below are exact (bigger bundles evaluate less often)
                             job={"source_idle_timeout_ms": 60_000, "bundle_ms": 50, "bundle_rows": 1})
    n = fresh_names()
    env, t_env = make_envs(settings, RunOptions(resume=False, job_name=n.job), [zhongtai_jar(settings)])
    # The job's table options (mini-batch on, ...): with them, a careless planner watermark becomes the wall
    # clock (a proc-time mini-batch assigner behind it), and D's and every other timer fires at once.
    for k, v in job_options(settings).items():
        t_env.get_config().set(k, v)
    t_env.create_temporary_view("pm", _changelog_source(env, t_env, _rows()))
    control = env.from_collection([orjson.dumps(m).decode() for m in CONTROL], type_info=Types.STRING()) \
        .set_parallelism(1)
    t_env.create_temporary_view("ctl", t_env.from_data_stream(control).alias("payload"))
    attach_person(t_env, settings, tagset=TagSet.from_yaml_text(TAGS, "test-tags.yaml"), person_minutes_view="pm",
                  events_view=None, control_view="ctl")
    table = t_env.sql_query("""
        SELECT 'change' AS k, payload, CONCAT_WS('|', person, tag, op, CAST(ts_ms AS STRING), cause,
                                                  CAST(tagset_version AS STRING)) AS cols FROM zt_tag_changes
        UNION ALL SELECT 'result', payload, '' FROM zt_control_results_tags""")
    with t_env.to_data_stream(table).execute_and_collect(n.job) as results:
        out = [(r[0], r[1], r[2]) for r in results]
    changes = [orjson.loads(p) for k, p, _ in out if k == "change"]
    got = sorted((c["person"], c["tag"], c["op"], c["ts"], c["cause"], c["tagset_version"]) for c in changes)
    assert got == EXPECTED
    # The view's columns say the same as the JSON payload.
    assert sorted(c for k, _, c in out if k == "change") == sorted("|".join(map(str, e)) for e in EXPECTED)
    results = sorted((orjson.loads(p) for k, p, _ in out if k == "result"), key=lambda r: r["version"])
    assert [(r["name"], r["version"], r["status"], r["tagset_version"]) for r in results] == [
        ("high_value", 2, "applied", 2), ("high_value", 3, "rejected", 2)]
    assert results[0]["reason"] is None
    assert results[1]["reason"].startswith("invalid expression")


# ------------------------------------------------------------------------------------------- pure


def test_person_codec_round_trip_and_versions() -> None:
    from operators.rules.engine import PersonState as RulesState
    from operators.rules.guards import Consent

    p, rows = Profile.empty(), DictRows()
    p.apply(rows, T0 // 60_000, None, (1, 0, 1, 2, 5000, T0, T0 + 5, T0 + 5))
    st = PersonState("E,1", p, TagState(frozenset({"x", "y"}), 4), 123, 456, RulesState("E,1", (Consent("sms", True, 7),)),
                     [500, 900], 456, None, {9: (1, 0, 0, 1, 0, 1, 1, 0)})
    back = decode_person("E,1", encode_person(st))
    assert back.profile.to_json() == p.to_json()
    assert (back.tags, back.now_ms, back.tag_due, back.rules, back.rule_timers, back.timer_ms, back.pending_old) == (
        st.tags, 123, 456, st.rules, [500, 900], 456, {9: (1, 0, 0, 1, 0, 1, 1, 0)})
    empty = PersonState("x", Profile.empty())
    assert decode_person("x", encode_person(empty)).is_empty()
    with pytest.raises(CodecError, match="codec version 9"):
        decode_person("x", chr(9) + "[]")


def test_pure_modules_load_without_pyflink() -> None:
    import subprocess
    import sys

    code = ("import sys; sys.modules['pyflink'] = None\n"
            "import operators.tags, operators.person, operators.profile, state.tags, state.person, pipelines.person\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
