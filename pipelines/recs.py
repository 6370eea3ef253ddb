"""Item-to-item recommendations inside the event job (``recs.enabled``; docs/recommendations.md).

Three keyed Python operators, each one pure step of ``operators.recs.cooccurrence`` (read the state, step,
write it back, ask for a timer), fed by the JVM bundler (``pipelines.bundles``: one crossing per key and
flush) with event time from the rows::

    zt_person_events (item_id set, weighted type) ─ key person ─ recs-person   (person_step)
        ├─ 'rp' rows: the person's window ────────────────────────────────────────────────┐
        └─ 'n' NormDelta (key item) / 'p' PairDelta (key b) ─ key ─ recs-norm (norm_step)  │
              └─ 's' SelfNorm / 'q' NormedPair (key a) ─ key ─ recs-neighbours (neighbour_step)
                    └─ 'ri' rows: the item's top-K list after each bundle that changed it ─┤
    zt_recs_rows (zt_store_rows' shape) ─ the store (log → applier → Redis) ◄──────────────┘

Every store row is an absolute value (the whole list, the whole window): a replay writes the same.
Timers (event time) drop state ``recs.person_ttl_ms`` / ``recs.pair_ttl_ms`` after its last update,
rounded up to the hour so that a key holds one timer per hour, not one per event; the final watermark of a
bounded input is the end of the input, not a time that has come, and expires nothing. State: ``state.recs``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson

from operators.person import END_OF_INPUT
from operators.recs.cooccurrence import RecsConfig

if TYPE_CHECKING:  # pragma: no cover
    from pyflink.table import StreamTableEnvironment

    from config.settings import RecsSettings, Settings

logger = logging.getLogger(__name__)
_HOUR = 3_600_000
_ZERO = "CAST(0 AS BIGINT)"


def recs_config(s: RecsSettings) -> RecsConfig:
    return RecsConfig(weights=dict(s.weights), purchase_types=frozenset(s.purchase_types),
                      window_items=s.window_items, window_ms=s.window_ms, half_life_ms=s.half_life_ms,
                      damping=s.damping, max_neighbours=s.max_neighbours, top_k=s.top_k, pair_ttl_ms=s.pair_ttl_ms,
                      person_ttl_ms=s.person_ttl_ms, max_purchased=s.max_purchased)


def _timer_at(ts_ms: int) -> int:
    return min(-(-ts_ms // _HOUR) * _HOUR, END_OF_INPUT - 1)


def input_sql(events_view: str, cfg: RecsConfig) -> str:
    types = ", ".join("'" + t.replace("'", "''") + "'" for t in sorted(cfg.weights))
    return f"""
SELECT person AS k, CAST(ts_ms AS BIGINT) AS ts, event_type, item_id FROM {events_view}
WHERE item_id IS NOT NULL AND item_id <> '' AND person IS NOT NULL AND event_type IN ({types})"""


def store_rows_sql(person_out: str, neighbours_out: str) -> str:
    """``zt_recs_rows``: ``rp`` (person window) and ``ri`` (item list) rows in ``zt_store_rows``' shape."""
    z = _ZERO
    cols = f"{z} AS bucket, {z} AS n1, {z} AS n2, {z} AS n3, {z} AS n4, {z} AS n5, CAST(0 AS DECIMAL(38, 2)) AS amount, " \
           f"{z} AS t1, {z} AS t2, {z} AS t3"
    return f"""
CREATE TEMPORARY VIEW zt_recs_rows AS
SELECT CAST('rp' AS STRING) AS kind, k, {cols}, s1 FROM {person_out} WHERE kind = 'rp'
UNION ALL
SELECT CAST('ri' AS STRING) AS kind, k, {cols}, s1 FROM {neighbours_out}"""


def _functions() -> tuple[type, type, type]:
    from pyflink.common import Row
    from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext

    from operators.recs.cooccurrence import (
        ItemEvent,
        NormDelta,
        NormedPair,
        PairDelta,
        SelfNorm,
        neighbour_step,
        norm_step,
        person_step,
        top_neighbours,
    )
    from state.recs import (
        NEIGHBOURS,
        NORM,
        PERSON,
        decode_neighbours,
        decode_norm,
        decode_window,
        descriptors,
        encode_neighbours,
        encode_neighbours_row,
        encode_norm,
        encode_window,
        encode_window_row,
    )

    def _ended(ctx: Any) -> bool:
        return bool(ctx.timer_service().current_watermark() >= END_OF_INPUT)

    class PersonFunction(KeyedProcessFunction):
        """Per person: ``person_step`` for each row of a bundle ``[[ts, event_type, item], ...]``; the
        updates out as they come, the window once per bundle (``rp``)."""

        def __init__(self, cfg: RecsConfig) -> None:
            self.cfg = cfg

        def open(self, runtime_context: RuntimeContext) -> None:
            self.state = runtime_context.get_state(descriptors()[PERSON])

        def process_element(self, value: Any, ctx: KeyedProcessFunction.Context):
            person = ctx.get_current_key()
            st = decode_window(self.state.value())
            for ts, etype, item in orjson.loads(value):
                st, outs = person_step(st, ItemEvent(person, item, etype, ts), ts, self.cfg)
                for m in outs:
                    if isinstance(m, NormDelta):
                        yield Row(m.item, "n", m.item, None, m.delta, m.ts_ms, None)
                    else:
                        yield Row(m.b, "p", m.a, m.b, m.delta, m.ts_ms, None)
            if st is not None:
                self.state.update(encode_window(st))
                ctx.timer_service().register_event_time_timer(_timer_at(st.last_ts + self.cfg.person_ttl_ms))
                yield Row(person, "rp", None, None, 0.0, st.last_ts, encode_window_row(st))

        def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
            if _ended(ctx):
                return
            before = decode_window(self.state.value())
            after, _ = person_step(before, None, timestamp, self.cfg)
            if before is not None and after is None:
                self.state.clear()
                yield Row(ctx.get_current_key(), "rp", None, None, 0.0, timestamp, "")

    class NormFunction(KeyedProcessFunction):
        """Per item: ``norm_step`` for each ``[ts, kind, a, b, x]`` (kind ``n`` NormDelta, ``p`` PairDelta)."""

        def __init__(self, cfg: RecsConfig) -> None:
            self.cfg = cfg

        def open(self, runtime_context: RuntimeContext) -> None:
            self.state = runtime_context.get_state(descriptors()[NORM])

        def process_element(self, value: Any, ctx: KeyedProcessFunction.Context):
            st = decode_norm(self.state.value())
            for ts, kind, a, b, x in orjson.loads(value):
                msg = NormDelta(a, float(x), ts) if kind == "n" else PairDelta(a, b, float(x), ts)
                st, outs = norm_step(st, msg, ts, self.cfg)
                for f in outs:
                    if isinstance(f, SelfNorm):
                        yield Row(f.item, "s", f.item, None, f.norm, f.ts_ms, 0.0, 0)
                    else:
                        yield Row(f.a, "q", f.a, f.b, f.delta, f.ts_ms, f.norm_b, f.norm_ts_ms)
            if st is not None:
                self.state.update(encode_norm(st))
                ctx.timer_service().register_event_time_timer(_timer_at(st.ts_ms + self.cfg.pair_ttl_ms))

        def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
            if _ended(ctx):
                return
            st, _ = norm_step(decode_norm(self.state.value()), None, timestamp, self.cfg)
            if st is None:
                self.state.clear()

    class NeighbourFunction(KeyedProcessFunction):
        """Per item: ``neighbour_step`` for each ``[ts, kind, b, x, norm_b, norm_ts]`` (``s`` SelfNorm, ``q``
        NormedPair); the item's top-K list (``ri``) once per bundle that changed it."""

        def __init__(self, cfg: RecsConfig) -> None:
            self.cfg = cfg

        def open(self, runtime_context: RuntimeContext) -> None:
            self.state = runtime_context.get_state(descriptors()[NEIGHBOURS])

        def process_element(self, value: Any, ctx: KeyedProcessFunction.Context):
            item = ctx.get_current_key()
            st = decode_neighbours(self.state.value())
            changed = False
            for ts, kind, b, x, nb, nts in orjson.loads(value):
                msg = SelfNorm(item, float(x), ts) if kind == "s" else NormedPair(item, b, float(x), ts, float(nb), nts)
                st, ch = neighbour_step(st, msg, ts, self.cfg)
                changed = changed or ch
            if st is not None:
                self.state.update(encode_neighbours(st))
                ctx.timer_service().register_event_time_timer(_timer_at(st.last_ts + self.cfg.pair_ttl_ms))
                if changed:
                    yield Row(item, encode_neighbours_row(top_neighbours(st, self.cfg)))

        def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
            if _ended(ctx):
                return
            st, changed = neighbour_step(decode_neighbours(self.state.value()), None, timestamp, self.cfg)
            if st is None:
                self.state.clear()
            else:
                self.state.update(encode_neighbours(st))
            if changed:
                yield Row(ctx.get_current_key(), encode_neighbours_row(top_neighbours(st, self.cfg)))

    return PersonFunction, NormFunction, NeighbourFunction


def attach_recs(t_env: StreamTableEnvironment, settings: Settings, *, events_view: str = "zt_person_events") -> None:
    """Register ``zt_recs_rows`` (store rows ``rp`` / ``ri``) from ``events_view``; private views ``zt_recs_*``."""
    from pyflink.common import Types

    from pipelines.bundles import keyed_bundles

    cfg = recs_config(settings.recs)
    job = settings.job
    person_fn, norm_fn, neighbour_fn = _functions()
    s, n, d = Types.STRING(), Types.LONG(), Types.DOUBLE()

    def bundles(sql: str, name: str) -> Any:
        return keyed_bundles(t_env, t_env.sql_query(sql), ts_field=1, out_of_orderness_ms=job.allowed_lateness_ms,
                             idle_ms=job.source_idle_timeout_ms, max_delay_ms=job.bundle_ms, max_rows=job.bundle_rows,
                             name=name)

    person_out = (bundles(input_sql(events_view, cfg), "recs-person")
                  .process(person_fn(cfg), output_type=Types.ROW_NAMED(["k", "kind", "a", "b", "x", "ts", "s1"],
                                                                       [s, s, s, s, d, n, s]))
                  .name("recs-person").uid("zt-recs-person-v1"))
    t_env.create_temporary_view("zt_recs_person_out", t_env.from_data_stream(person_out))
    norm_out = (bundles("SELECT k, ts, kind, a, b, x FROM zt_recs_person_out WHERE kind <> 'rp'", "recs-norm")
                .process(norm_fn(cfg), output_type=Types.ROW_NAMED(["k", "kind", "a", "b", "x", "ts", "nb", "nts"],
                                                                   [s, s, s, s, d, n, d, n]))
                .name("recs-norm").uid("zt-recs-norm-v1"))
    t_env.create_temporary_view("zt_recs_norm_out", t_env.from_data_stream(norm_out))
    neighbours_out = (bundles("SELECT k, ts, kind, b, x, nb, nts FROM zt_recs_norm_out", "recs-neighbours")
                      .process(neighbour_fn(cfg), output_type=Types.ROW_NAMED(["k", "s1"], [s, s]))
                      .name("recs-neighbours").uid("zt-recs-neighbours-v1"))
    t_env.create_temporary_view("zt_recs_neighbours_out", t_env.from_data_stream(neighbours_out))
    t_env.execute_sql(store_rows_sql("zt_recs_person_out", "zt_recs_neighbours_out"))
