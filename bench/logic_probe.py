"""The logic's ceiling: the job's own pure Python operators in a plain loop, µs per event per stage.

``python -m bench.logic_probe --events N [--rules] [--bundle B] [--out FILE] [--cprofile FILE]``

No Flink, no Kafka, no Redis: the generated stream (``zhongtai.devtools.generator``, default ``GeneratorConfig`` with
``events=N``, the bench's 2,000 persons over 6 hours of event time) goes through what the job runs in
Python, each call timed with ``time.perf_counter_ns`` and summed per stage (self time: a stage nested in
another, e.g. ``profile.fields`` inside ``rules``, is counted once, under its own name):

* ``decode`` — the oracle's ``decode`` (the job decodes on the JVM now: this is the Python reference's cost);
* ``identity`` — ``operators.identity.step`` plus the dict bookkeeping (``InMemoryGraph.observe``: components
  by cid, identifier → cid index, as ``pipelines/identity.py`` keeps them in state), for each new identifier
  combination, or an earlier event of a known one (what ``zt_combos`` feeds);
* ``person.rows`` — ``operators.person.on_rows`` on bundles. The person-minute changelog is built as the JVM
  emits it without mini-batch (per unique event, its person from the identity run's map: INSERT, or the
  bucket's old value as UPDATE_BEFORE and its new one as UPDATE_AFTER; a merge or split moves the anchor's
  buckets: DELETE / UPDATE rows on the old person, rows on the new one — ``bench.tuned_full.PersonMinutes``,
  not timed: the JVM's work), with ``--rules`` also an event row per event of the rule set's types
  (``pipelines.actions.load_ruleset()``). A bundle is a person's rows among the next B events (default
  2,000). Sub-stages: ``profile.apply``, ``profile.fields``, ``tags`` (``tag_step_memo``), ``rules``
  (``evaluate``); ``own`` is the rest of ``on_rows`` (row parsing, ``_cents``, the engine's event objects);
* ``state.encode`` once per bundle and timer (``state.person.encode_person``), ``state.decode`` when a person
  is not in the operator's cache (20,000 persons, as ``pipelines.person``);
* ``person.timers`` — after each bundle round the watermark moves to the newest event time −
  ``job.watermark_delay_ms`` and ``operators.person.on_timer`` runs for every person whose ``next_timer`` is
  at or before it, in time order; ``budget`` — the campaign budget step of budgeted actions (``--rules``).

The end-of-input timers (once per person, not per event) are reported apart. The table and
``bench/results/logic-probe-<N>[-rules].json`` hold µs/event, calls/event and µs/call per stage; the
total is the logic's ceiling in events/s on one core. ``cpu_share`` (process CPU time / wall time) below
~0.95 means other processes took the core meanwhile. Because this machine is shared, every figure also comes
normalized (``norm_*``): each 10,000 events' times × the interval's CPU share × ``REFERENCE_US`` / the µs per
record of a fixed calibration workload timed then (bench/README.md, "Logic probe").
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import orjson

from operators.person import END_OF_INPUT, PersonState
from operators.profile import Profile

from .tuned_full import FullWork, item_id

ROOT = Path(__file__).resolve().parents[1]
#: Decoded persons the job's person operator keeps in front of its state (``pipelines.person._CACHE_MAX``).
CACHE_MAX = 20_000
#: The calibration workload: the stream's first records decoded again (best of 3), every CALIBRATE_EVERY events.
CALIBRATION_RECORDS = 50
CALIBRATE_EVERY = 10_000
#: The reference speed of the normalized figures: the calibration's µs per record on this 2-core machine when
#: nothing else runs (see bench/README.md, "Logic probe").
REFERENCE_US = 8.0
TOP = ("decode", "identity", "person.rows", "person.timers", "state.encode", "state.decode", "budget")


class Stopwatch:
    """Self and inclusive ``perf_counter_ns`` per call path (``person.rows/rules/profile.fields``)."""

    def __init__(self, clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self.clock = clock
        self.self_ns: dict[str, int] = {}
        self.incl_ns: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self._stack: list[list[Any]] = []

    def wrap(self, fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        clock, stack = self.clock, self._stack
        self_ns, incl_ns, calls = self.self_ns, self.incl_ns, self.calls

        def timed(*args: Any, **kw: Any) -> Any:
            path = f"{stack[-1][0]}/{stage}" if stack else stage
            frame = [path, 0]
            stack.append(frame)
            t0 = clock()
            try:
                return fn(*args, **kw)
            finally:
                dt = clock() - t0
                stack.pop()
                if stack:
                    stack[-1][1] += dt
                incl_ns[path] = incl_ns.get(path, 0) + dt
                self_ns[path] = self_ns.get(path, 0) + dt - frame[1]
                calls[path] = calls.get(path, 0) + 1

        return timed

    @contextmanager
    def patched(self, owner: Any, name: str, stage: str, fn: Callable[..., Any] | None = None) -> Iterator[None]:
        """``owner.name`` (or ``fn`` in its place) timed as ``stage`` while the context is open."""
        orig = getattr(owner, name)
        setattr(owner, name, self.wrap(fn or orig, stage))
        try:
            yield
        finally:
            setattr(owner, name, orig)


class ProbeWork(FullWork):
    """``FullWork`` with the person operator's state handling: the state encoded once per bundle and timer,
    decoded when the person is not in the cache, the cache bounded as the job's."""

    def __init__(self, settings: Any, sw: Stopwatch, **kw: Any) -> None:
        from state.person import decode_person, encode_person

        super().__init__(settings, coalesce=False, **kw)
        self.state: dict[str, str] = {}
        self.cache: dict[str, PersonState] = {}
        #: characters encoded in total (the state's size is what an encode costs)
        self.encoded_chars = 0
        self._encode = sw.wrap(encode_person, "state.encode")
        self._decode = sw.wrap(decode_person, "state.decode")

    def _load(self, pid: str) -> PersonState:
        st = self.cache.pop(pid, None)
        if st is not None:
            return st
        raw = self.state.get(pid)
        return self._decode(pid, raw) if raw else PersonState(pid, Profile.empty())

    def _keep(self, pid: str, st: PersonState) -> None:
        self.cache[pid] = st

    def _save(self, pid: str, st: PersonState) -> None:
        super()._save(pid, st)
        if st.is_empty():
            self.state.pop(pid, None)
            return
        raw = self.state[pid] = self._encode(st)
        self.encoded_chars += len(raw)
        if len(self.cache) >= CACHE_MAX:
            del self.cache[next(iter(self.cache))]
        self.cache[pid] = st


#: ``--clock``: wall time (the default) or this thread's CPU time (for a machine other processes keep busy)
CLOCKS: dict[str, Callable[[], int]] = {"wall": time.perf_counter_ns, "cpu": time.thread_time_ns}


def _clock_cost_ns(clock: Callable[[], int], n: int = 200_000) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        clock()
    return (time.perf_counter_ns() - t0) / n


def probe(settings: Any, events: int, *, rules: bool = False, bundle: int = 2_000,
          span_hours: float | None = None, clock: str = "wall", reference_us: float = REFERENCE_US) -> dict[str, Any]:
    """Run the probe; returns the result document (see the module docstring)."""
    import bench.tuned_full as tf
    import operators.person as person
    import operators.rules.guards as guards
    from zhongtai.devtools.generator import GeneratorConfig, generate
    from zhongtai.devtools.generator.oracle import _Pseudonyms, decode

    job = settings.job
    sw = Stopwatch(CLOCKS[clock])
    work = ProbeWork(settings, sw, rules=rules)
    pseudo = _Pseudonyms(settings.pii, settings.identity)
    dec = sw.wrap(decode, "decode")
    work.graph.observe = sw.wrap(work.graph.observe, "identity")  # type: ignore[method-assign]
    counts = {"records": 0, "valid": 0, "unique": 0, "m_rows": 0, "e_rows": 0, "bundles": 0, "timers": 0,
              "outputs": 0}
    on_rows, on_timer = tf.on_rows, tf.on_timer

    def counting_rows(st: Any, rows: list[list[Any]], *a: Any) -> Any:
        counts["bundles"] += 1
        for r in rows:
            counts["m_rows" if r[1] == "m" else "e_rows"] += 1
        return on_rows(st, rows, *a)

    def counting_timer(*a: Any) -> Any:
        counts["timers"] += 1
        return on_timer(*a)

    def flush() -> None:
        outs = work.run_bundles() + work.advance()
        counts["outputs"] += len(outs)
        work.decide(outs)

    gc_ns = [0, 0, 0]  # per generation
    gc_t0 = [0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_t0[0] = sw.clock()
        else:
            gc_ns[info["generation"]] += sw.clock() - gc_t0[0]

    # The machine's speed over the run: a fixed workload (the first CALIBRATION_RECORDS records decoded again,
    # best of 3) timed every CALIBRATE_EVERY events; each interval's stage times are also given rescaled to the
    # reference speed (``norm_*``: × reference_us / the interval's calibration µs per record, and with the wall
    # clock × the interval's CPU share), so that a neighbour's load (two vCPUs shared with other benchmarks)
    # does not read as a growing cost.
    sample: list[tuple[bytes, int]] = []
    calib_pseudo = _Pseudonyms(settings.pii, settings.identity)
    intervals: list[tuple[int, float, dict[str, int], dict[str, int]]] = []
    last = [time.perf_counter(), time.process_time()]
    seen_self: dict[str, int] = {}
    seen_incl: dict[str, int] = {}

    def calibrate() -> int:
        best = 0
        for _ in range(3):
            t0 = sw.clock()
            for value, ts in sample:
                decode(value, ts, job, calib_pseudo)
            dt = sw.clock() - t0
            best = dt if not best or dt < best else best
        return best

    def checkpoint() -> None:
        # the share of the interval this process was on a core: wall-clock stage times × share ≈ CPU times
        wall, cpu = time.perf_counter(), time.process_time()
        share = min(1.0, (cpu - last[1]) / (wall - last[0])) if wall > last[0] else 1.0
        c = calibrate()
        last[:] = [time.perf_counter(), time.process_time()]
        d_self = {p: v - seen_self.get(p, 0) for p, v in sw.self_ns.items()}
        d_incl = {p: v - seen_incl.get(p, 0) for p, v in sw.incl_ns.items()}
        seen_self.update(sw.self_ns)
        seen_incl.update(sw.incl_ns)
        intervals.append((c, share if sw.clock is time.perf_counter_ns else 1.0, d_self, d_incl))

    gc.callbacks.append(on_gc)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with ExitStack() as patches:
        patches.callback(gc.callbacks.remove, on_gc)
        patches.enter_context(sw.patched(tf, "on_rows", "person.rows", counting_rows))
        patches.enter_context(sw.patched(tf, "on_timer", "person.timers", counting_timer))
        patches.enter_context(sw.patched(person, "tag_step_memo", "tags"))
        patches.enter_context(sw.patched(person, "evaluate", "rules"))
        patches.enter_context(sw.patched(Profile, "apply", "profile.apply"))
        patches.enter_context(sw.patched(Profile, "fields", "profile.fields"))
        patches.enter_context(sw.patched(guards, "budget_step", "budget"))
        n = 0
        cfg = GeneratorConfig(events=events) if span_hours is None else \
            GeneratorConfig(events=events, span_ms=int(span_hours * 3_600_000))
        for r in generate(cfg, job):
            n += 1
            if n <= CALIBRATION_RECORDS:
                sample.append((r.value, r.timestamp_ms))
            elif n % CALIBRATE_EVERY == 0:
                checkpoint()
            e = dec(r.value, r.timestamp_ms, job, pseudo)
            if type(e) is not str:
                counts["valid"] += 1
                if work.unique(e):
                    counts["unique"] += 1
                    changed = work.identity(e)
                    if changed:
                        work.moves(changed)
                    work.event(e, item_id(r.value) if e.event_type in work.routed else None)
            if n % bundle == 0:
                flush()
        flush()
        end = sw.wrap(lambda: work.advance(END_OF_INPUT), "end-of-input")()
        counts["outputs"] += len(end)
        work.decide(end)
        checkpoint()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    counts["records"] = n
    counts["identity_steps"] = sw.calls.get("identity", 0)
    counts["persons"] = len(work.state)
    counts["encoded_chars"] = work.encoded_chars
    encodes = sw.calls.get("state.encode", 0)
    counts["chars_per_encode"] = round(work.encoded_chars / encodes) if encodes else 0
    ref_ns = reference_us * 1e3 * len(sample)
    norm_self: dict[str, float] = {}
    norm_incl: dict[str, float] = {}
    for c, share, d_self, d_incl in intervals:
        for norm, d in ((norm_self, d_self), (norm_incl, d_incl)):
            for p, v in d.items():
                norm[p] = norm.get(p, 0.0) + v * share * ref_ns / c
    stages = {
        path: {"us_per_event": round(sw.self_ns[path] / n / 1e3, 3),
               "incl_us_per_event": round(sw.incl_ns[path] / n / 1e3, 3),
               "norm_us_per_event": round(norm_self[path] / n / 1e3, 3),
               "norm_incl_us_per_event": round(norm_incl[path] / n / 1e3, 3),
               "calls_per_event": round(sw.calls[path] / n, 4),
               "us_per_call": round(sw.incl_ns[path] / sw.calls[path] / 1e3, 2),
               "norm_us_per_call": round(norm_incl[path] / sw.calls[path] / 1e3, 2)}
        for path in sorted(sw.calls)
    }
    top = [p for p in sw.calls if "/" not in p and p != "end-of-input"]
    total_ns = sum(sw.incl_ns[p] for p in top)
    norm_total_ns = sum(norm_incl[p] for p in top)
    calib = sorted(c for c, _, _, _ in intervals)
    shares = sorted(sh for _, sh, _, _ in intervals)
    return {
        "events": events, "rules": rules, "bundle_events": bundle, "cache_persons": CACHE_MAX,
        "persons": cfg.persons, "span_hours": cfg.span_ms / 3_600_000, "clock": clock,
        # one reading of the clock: about that much of every call's time is the measurement itself
        "clock_ns_per_read": round(_clock_cost_ns(sw.clock), 1),
        "watermark_delay_ms": job.watermark_delay_ms, "counts": counts, "stages": stages,
        "total_us_per_event": round(total_ns / n / 1e3, 2),
        "norm_total_us_per_event": round(norm_total_ns / n / 1e3, 2),
        "norm_ceiling_events_per_s": round(n / (norm_total_ns / 1e9)) if norm_total_ns else None,
        # the calibration's µs per record: fastest, median, slowest interval; the reference of ``norm_*``
        "calibration_us": {"every_events": CALIBRATE_EVERY, "records": len(sample), "reference": reference_us,
                           **{k: round(calib[i] / len(sample) / 1e3, 2) for k, i in
                              (("fastest", 0), ("median", len(calib) // 2), ("slowest", -1))},
                           "cpu_share_min": round(shares[0], 3), "cpu_share_median": round(shares[len(shares) // 2], 3)},
        # the cyclic garbage collector's pauses, per generation (they fall inside the stages above)
        "gc_us_per_event": [round(x / n / 1e3, 2) for x in gc_ns],
        "ceiling_events_per_s": round(n / (total_ns / 1e9)) if total_ns else None,
        "wall_s": round(wall, 1), "cpu_share": round(cpu / wall, 3) if wall else None,
        "python": sys.version.split()[0], "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def format_table(doc: dict[str, Any]) -> str:
    c = doc["counts"]
    n = c["records"]
    lines = [
        f"logic probe: {n:,} events ({doc['persons']:,} persons, {doc['span_hours']:g} h of event time), rules "
        f"{'on' if doc['rules'] else 'off'}, bundle = a person's rows among the next "
        f"{doc['bundle_events']:,} events; {c['unique']:,} unique, {c['identity_steps']:,} identity steps, "
        f"{c['m_rows'] / n:.2f} bucket rows + {c['e_rows'] / n:.2f} event rows per event, {c['bundles'] / n:.3f} "
        f"bundles and {c['timers'] / n:.3f} timers per event, {c['persons']:,} persons in state",
        f"{'stage':<40} {'µs/event':>9} {'normalized':>10} {'calls/event':>12} {'µs/call':>9}",
    ]
    stages = doc["stages"]
    children: dict[str, list[str]] = {}
    for path in stages:
        parent = path.rpartition("/")[0]
        children.setdefault(parent, []).append(path)

    def show(path: str, depth: int) -> None:
        s = stages[path]
        kids = sorted(children.get(path, []), key=lambda p: -stages[p]["incl_us_per_event"])
        name = "  " * depth + path.rpartition("/")[2]
        lines.append(f"{name:<40} {s['incl_us_per_event']:>9.2f} {s['norm_incl_us_per_event']:>10.2f} "
                     f"{s['calls_per_event']:>12.3f} {s['us_per_call']:>9.2f}")
        for k in kids:
            show(k, depth + 1)
        if kids:
            lines.append(f"{'  ' * (depth + 1) + 'own':<40} {s['us_per_event']:>9.2f} {s['norm_us_per_event']:>10.2f}")

    top = [p for p in TOP if p in stages] + [p for p in children.get("", []) if p not in TOP and p != "end-of-input"]
    for p in top:
        show(p, 0)
    lines.append(f"{'total (the logic ceiling)':<40} {doc['total_us_per_event']:>9.2f} "
                 f"{doc['norm_total_us_per_event']:>10.2f}   = {doc['ceiling_events_per_s']:,} events/s on one core "
                 f"({doc['norm_ceiling_events_per_s']:,} normalized)")
    if "end-of-input" in stages:
        e = stages["end-of-input"]
        lines.append(f"{'end-of-input timers (once, not per event)':<40} "
                     f"{e['incl_us_per_event'] * n / 1e3:>9.1f} ms in total")
    lines.append(f"{'of which garbage collection (gen 0/1/2)':<40} "
                 f"{' / '.join(f'{x:.2f}' for x in doc['gc_us_per_event'])}")
    cal = doc["calibration_us"]
    lines.append(f"normalized: each {cal['every_events']:,} events' times × {cal['reference']} µs / that interval's "
                 f"calibration µs per record (fastest {cal['fastest']}, median {cal['median']}, slowest {cal['slowest']})"
                 + (f" × its CPU share (median {cal['cpu_share_median']})" if doc["clock"] == "wall" else ""))
    lines.append(f"state: {c['chars_per_encode']:,} characters per encode; clock {doc['clock']} "
                 f"({doc['clock_ns_per_read']} ns a reading); wall {doc['wall_s']} s (generator included), "
                 f"cpu share {doc['cpu_share']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from config.settings import load_settings

    ap = argparse.ArgumentParser(prog="python -m bench.logic_probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rules", action="store_true", help="the strategy engine too (config/rules.yaml)")
    ap.add_argument("--bundle", type=int, default=2_000, help="events per bundle round (default 2000)")
    ap.add_argument("--out", default=None, help="default bench/results/logic-probe-<N>[-rules].json")
    ap.add_argument("--span-hours", type=float, default=None,
                    help="event-time span of the stream (default: the generator's 6 h); a diagnostic: the same "
                         "events per person-hour at another length")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="wall: time.perf_counter_ns; cpu: this thread's CPU time (time.thread_time_ns), for a "
                         "machine other processes keep busy (each reading costs more: see clock_ns_per_read)")
    ap.add_argument("--reference-us", type=float, default=REFERENCE_US,
                    help=f"the normalized figures' calibration µs per record (default {REFERENCE_US})")
    ap.add_argument("--cprofile", default=None, help="also write a cProfile of the run to this file")
    args = ap.parse_args(argv)
    settings = load_settings()
    prof = cProfile.Profile() if args.cprofile else None
    if prof is not None:
        prof.enable()
    doc = probe(settings, args.events, rules=args.rules, bundle=args.bundle, span_hours=args.span_hours,
                clock=args.clock, reference_us=args.reference_us)
    if prof is not None:
        prof.disable()
        prof.dump_stats(args.cprofile)
    span = f"-span{args.span_hours:g}h" if args.span_hours is not None else ""
    out = Path(args.out) if args.out else \
        ROOT / "bench" / "results" / f"logic-probe-{args.events}{'-rules' if args.rules else ''}{span}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print(format_table(doc))
    print(f"[logic probe] written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
