"""Watermark probe: what ``ctx.timer_service().current_watermark()`` does inside the tags operator over a run.

Runs ``pipelines.tags.attach_tags`` on the mini-cluster over the bench's generated person-minute changelog
(``bench.tags_bench._changelog``), with the tag functions wrapped so that every instance appends to a
JSON-lines file: each change of the watermark it sees (wall ms, rows and timers so far, the watermark, the
largest ``last_ts`` it has received), every timer (its time and the watermark then), and every control
message (its record timestamp and the watermark then). Nothing else of the functions changes.

Variants of the changelog's event time (``--variant``):

* ``current``: ``pipelines.tags._keyed_changelog`` as it is (the Python ``TimestampAssigner``:
  ``for_bounded_out_of_orderness(lateness).with_idleness(idle)``, periodic emission every
  ``pipeline.auto-watermark-interval``);
* ``planner``: the planner watermark of commit 0580405 (``from_data_stream`` rowtime ``wm_ts``, watermark
  ``wm_ts - lateness - 1``, idleness from ``table.exec.source.idle-timeout``) planned under whatever table
  options are set: with the job's mini-batch on it becomes the wall clock. Monkeypatched in;
* ``planner-fixed``: the same, converted with mini-batch off (correct; measured in session 5 and not
  adopted: docs/tags.md "Event time"). Monkeypatched in.

``--rate`` > 0 makes the changelog unbounded-like (datagen ``rows-per-second``; the job is cancelled after
``--seconds``); ``--control`` chooses the control input: ``collection`` (bounded, the bench's and the tag
test's), ``unbounded`` (a datagen of ~1 message per 10 s, never ending, like the job's Kafka control
topic), ``none`` (the plain keyed function).

    python -m bench.wm_probe --variant current --rows 100000 --persons 5000 --rate 500 --seconds 60 --control unbounded
    python -m bench.wm_probe --variant planner --pytest "tests/test_job_identity.py::test_identity_graph_and_person_profiles_are_exact[2]"

Findings (2026-12-06, docs/tags.md "Event time"): paced and unbounded, both assigners follow
``max last_ts - lateness - 1`` (the Python one every ~1-2 s, the planner's per row); each control message
holds the watermark at its start for the idle timeout; in the whole job the 0580405 planner variant saw the
wall clock from its first row.
"""

from __future__ import annotations

import argparse
import functools
import glob
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson

_MAX = 2**63 - 1


def _planner_keyed_changelog(t_env: Any, view: str, job: Any, *, minibatch_off: bool = False) -> Any:
    """Commit 0580405's ``_keyed_changelog``: rowtime and watermark on the planner (no Python operator).

    ``minibatch_off``: the conversion is planned with ``table.exec.mini-batch.enabled`` false (the table
    config is put back afterwards); otherwise the job's mini-batch puts a proc-time ``MiniBatchAssigner``
    behind the ``WatermarkAssigner`` and the watermark becomes the wall clock."""
    from pyflink.common import Types
    from pyflink.datastream.data_stream import KeyedStream
    from pyflink.java_gateway import get_gateway
    from pyflink.table import Schema

    from pipelines.tags import _PACKED

    t_env.get_config().set("table.exec.source.idle-timeout", f"{job.source_idle_timeout_ms} ms")
    packed = ", ".join(f"CAST(COALESCE({c}, 0) AS STRING)" for c in _PACKED)
    rows = t_env.sql_query(
        f"SELECT person AS k, CONCAT_WS(',', op, {packed}, person) AS v, COALESCE(last_ts, 0) AS wm_ts "
        f"FROM TO_CHANGELOG(input => TABLE {view}) WHERE op <> 'UPDATE_BEFORE'")
    timed = t_env.from_data_stream(
        t_env.to_data_stream(rows),
        Schema.new_builder()
        .column_by_expression("rt", "TO_TIMESTAMP_LTZ(wm_ts, 3)")
        .watermark("rt", f"TO_TIMESTAMP_LTZ(wm_ts - {job.allowed_lateness_ms + 1}, 3)")
        .build())
    conf = t_env.get_config()
    saved = conf.get("table.exec.mini-batch.enabled", "false")
    if minibatch_off:
        conf.set("table.exec.mini-batch.enabled", "false")
    try:
        stream = t_env.to_data_stream(timed.select(timed.k, timed.v))  # translated now, under that config
    finally:
        conf.set("table.exec.mini-batch.enabled", saved)
    stream._j_data_stream.getTransformation().setOutputType(
        Types.ROW_NAMED(["k", "v"], [Types.STRING(), Types.STRING()]).get_java_type_info())
    j_keyed = stream._j_data_stream.keyBy(get_gateway().jvm.KeyByKeySelector(),
                                          Types.ROW([Types.STRING()]).get_java_type_info())
    return KeyedStream(j_keyed, Types.STRING(), stream)


def _use_variant(variant: str) -> None:
    from pipelines import tags

    if variant == "planner":
        tags._keyed_changelog = _planner_keyed_changelog
    elif variant == "planner-fixed":
        tags._keyed_changelog = functools.partial(_planner_keyed_changelog, minibatch_off=True)


def instrument(out_dir: str, every_row: bool = False) -> None:
    """Wrap ``pipelines.tags._function_classes`` so that the tag functions log what they see to ``out_dir``."""
    from pipelines import tags

    original = tags._function_classes

    def probed(tagset_json: str, result_tag: Any):
        plain, broadcast = original(tagset_json, result_tag)

        def mix(base: type) -> type:
            class Probe(base):  # type: ignore[misc, valid-type]
                def open(self, ctx: Any) -> None:
                    import os as _os
                    import threading as _th
                    import time as _t

                    super().open(ctx)
                    self._t = _t
                    self._f = open(f"{out_dir}/{_os.getpid()}-{_th.get_ident()}-{id(self)}.jsonl", "a")  # noqa: SIM115 (closed in close())
                    self._rows = self._timers = 0
                    self._wm = None
                    self._max_ts = 0

                def _log(self, rec: dict) -> None:
                    rec["t"] = int(self._t.time() * 1000)
                    self._f.write(orjson.dumps(rec).decode() + "\n")
                    self._f.flush()

                def _seen(self, ctx: Any, kind: str) -> None:
                    wm = ctx.timer_service().current_watermark()
                    if wm != self._wm:
                        self._wm = wm
                        self._log({"k": "wm", "at": kind, "wm": wm, "rows": self._rows, "timers": self._timers,
                                   "max_ts": self._max_ts})

                def process_element(self, value: Any, ctx: Any):
                    self._rows += 1
                    self._max_ts = max(self._max_ts, int(value.split(",", 10)[8]))
                    self._seen(ctx, "row")
                    if not every_row:
                        yield from super().process_element(value, ctx)
                        return
                    out = list(super().process_element(value, ctx))
                    f = value.split(",", 10)
                    self._log({"k": "row", "key": f[10], "op": f[0], "mb": int(f[1]), "last_ts": int(f[8]),
                               "wm": self._wm, "changes": [(c[1], c[2], c[3]) for c in out if len(c) == 7]})
                    yield from out

                def on_timer(self, timestamp: int, ctx: Any):
                    self._timers += 1
                    self._seen(ctx, "timer")
                    out = list(super().on_timer(timestamp, ctx))
                    self._log({"k": "timer", "key": ctx.get_current_key(), "ts": timestamp, "wm": self._wm,
                               "changes": len(out), "tags": [(c[1], c[2], c[3]) for c in out if len(c) == 7],
                               "rows": self._rows, "max_ts": self._max_ts})
                    yield from out

                def process_broadcast_element(self, value: Any, ctx: Any):
                    try:
                        record_ts = ctx.timestamp()
                    except Exception as e:  # noqa: BLE001 (a probe: record what the context offers)
                        record_ts = f"n/a: {e}"[:80]
                    self._log({"k": "control", "record_ts": record_ts, "wm": self._wm, "rows": self._rows})
                    yield from super().process_broadcast_element(value, ctx)

                def close(self) -> None:
                    self._log({"k": "close", "wm": self._wm, "rows": self._rows, "timers": self._timers,
                               "max_ts": self._max_ts})
                    self._f.close()

            Probe.__name__ = base.__name__
            return Probe

        return mix(plain), mix(broadcast)

    tags._function_classes = probed


def summarize(out_dir: str) -> dict[str, Any]:
    """Per operator instance: the watermark's path (thinned), timers before and at the end of input."""
    inst = []
    for path in sorted(glob.glob(f"{out_dir}/*.jsonl")):
        recs = [orjson.loads(x) for x in Path(path).read_text().splitlines()]
        if not recs:
            continue
        t0 = recs[0]["t"]
        wms = [r for r in recs if r["k"] == "wm"]
        timers = [r for r in recs if r["k"] == "timer"]
        live = [r for r in timers if r["wm"] is not None and r["wm"] < _MAX]
        controls = [r for r in recs if r["k"] == "control"]
        step = max(1, len(wms) // 12)
        inst.append({
            "file": Path(path).name,
            "rows": max((r.get("rows", 0) for r in recs), default=0),
            "max_ts": max((r.get("max_ts", 0) for r in recs), default=0),
            "wm_changes": len(wms),
            "wm_path": [(r["t"] - t0, r["rows"], r["wm"], r["max_ts"], r["at"]) for r in wms[::step] + wms[-2:]],
            "timers_live": len(live),
            "timers_live_changes": sum(r["changes"] for r in live),
            "timers_live_beyond_rows": sum(1 for r in live if r["ts"] > r["max_ts"]),
            "timers_at_end": len(timers) - len(live),
            "wm_max_live": max((r["wm"] for r in wms if r["wm"] < _MAX), default=None),
            "timers_live_max_ts": max((r["ts"] for r in live), default=None),
            "controls": [(c["t"] - t0, c["record_ts"], c["wm"]) for c in controls[:5]],
        })
    return {"instances": inst}


def run(variant: str, rows: int, persons: int, rate: int, seconds: float, control: str, idle_ms: int,
        parallelism: int, out_dir: str) -> dict[str, Any]:
    from pyflink.common import Types

    from bench.tags_bench import _changelog
    from config import load_settings
    from pipelines.events import job_options
    from zhongtai.runner import RunOptions, make_envs

    os.makedirs(out_dir, exist_ok=True)
    instrument(out_dir)
    _use_variant(variant)
    settings = load_settings(overrides={
        "flink": {"parallelism": parallelism, "options": {
            "restart-strategy.type": "none", "execution.checkpointing.checkpoints-after-tasks-finish": "false"}},
        "job": {"source_idle_timeout_ms": idle_ms}})
    env, t_env = make_envs(settings, RunOptions(resume=False, job_name=f"wm-probe-{time.time_ns()}"), [])
    for k, v in job_options(settings).items():
        t_env.get_config().set(k, v)
    _changelog(t_env, rows, persons, rate=rate or 1_000_000_000)
    from pipelines.tags import attach_tags

    if control == "collection":
        ctl = env.from_collection(['{"kind": "rule", "op": "noop"}'], type_info=Types.STRING())
        t_env.create_temporary_view("ctl", t_env.from_data_stream(ctl).alias("payload"))
    elif control == "unbounded":
        t_env.execute_sql("""
CREATE TEMPORARY TABLE ctl_gen (n BIGINT) WITH (
  'connector' = 'datagen', 'fields.n.kind' = 'random', 'fields.n.min' = '0', 'fields.n.max' = '9',
  'rows-per-second' = '1')""")
        t_env.execute_sql("CREATE TEMPORARY VIEW ctl AS SELECT '{\"kind\": \"rule\"}' AS payload FROM ctl_gen WHERE n = 0")
    attach_tags(t_env, settings, "pm", None if control == "none" else "ctl")
    out = t_env.to_data_stream(t_env.sql_query("SELECT person, tag, op, ts_ms, cause FROM zt_tag_changes"))
    t0 = time.monotonic()
    got = [0]

    def collect() -> None:
        with out.execute_and_collect() as results:
            for _ in results:
                got[0] += 1

    worker = threading.Thread(target=collect, daemon=True)
    worker.start()
    worker.join(seconds if rate else None)
    n = got[0]
    return {"variant": variant, "rows": rows, "rate": rate, "control": control, "idle_ms": idle_ms,
            "changes_collected": n, "wall_s": round(time.monotonic() - t0, 1), **summarize(out_dir)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", choices=("current", "planner", "planner-fixed"), default="current")
    p.add_argument("--rows", type=int, default=6000)
    p.add_argument("--persons", type=int, default=200)
    p.add_argument("--rate", type=int, default=0, help="generated rows per second (0: as fast as possible)")
    p.add_argument("--seconds", type=float, default=30.0, help="with --rate: stop after this long")
    p.add_argument("--control", choices=("collection", "unbounded", "none"), default="collection")
    p.add_argument("--idle-ms", type=int, default=10_000)
    p.add_argument("-p", "--parallelism", type=int, default=1)
    p.add_argument("--out", default=None)
    p.add_argument("--pytest", help="instead of the generated changelog: run this pytest node id, instrumented")
    a = p.parse_args(argv)
    out_dir = a.out or f"/tmp/wm-probe/{a.variant}-{a.control}-{a.rate}-{time.time_ns()}"
    if a.pytest:
        import pytest

        os.makedirs(out_dir, exist_ok=True)
        instrument(out_dir, every_row=True)
        _use_variant(a.variant)
        code = pytest.main(["-q", "-x", "-p", "no:cacheprovider", a.pytest])
        print(orjson.dumps({"pytest": int(code), "variant": a.variant, **summarize(out_dir)},
                           option=orjson.OPT_INDENT_2).decode())
        os._exit(int(code))
    res = run(a.variant, a.rows, a.persons, a.rate, a.seconds, a.control, a.idle_ms, a.parallelism, out_dir)
    print(orjson.dumps(res, option=orjson.OPT_INDENT_2).decode())
    os._exit(0)  # an unbounded job is still running in the mini-cluster: do not wait for it


if __name__ == "__main__":
    main()
