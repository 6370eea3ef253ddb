"""Conversions attributed to the delivered action that preceded them, inside the event job (rules on).

The channel workers write a receipt to ``kafka.topics.delivery`` for every action they settle
(docs/workers.md). The job reads that topic back (a Kafka table, read_committed) together with its own
unique person events (``zt_person_events``) of type ``purchase`` and decides, per person, which delivered
action each purchase converts: ``operators.rules.attribution.attribution_step`` (last touch within
``job.attribution_window_ms``, ties to the larger action id; a purchase is decided once the watermark
passes ``ts + job.attribution_receipt_delay_ms``; a receipt that arrives after that does not reopen it).

Shape::

    delivery topic ── status = 'delivered', person_id + ts_ms present ─┐
    zt_person_events ── event_type = 'purchase' ────────────────────────┴─ UNION ALL (k = d | p) ─ to_data_stream
        timestamps = ts_ms, watermark = max ts − allowed_lateness_ms, idleness (as the rules engine)
        ─ key_by person ─ attribution (KeyedProcessFunction: read state, attribution_step, write, timers)
        ─ zt_conversions (append-only: each purchase at most once)
            ├─ GROUP BY rule × channel: COUNT, SUM(amount) ─ Redis {prefix}:conversions(:revenue) (absolute)
            └─ each conversion ─ HBase actions row = action id, a:c:<purchase event id> = its JSON

Why a keyed Python operator and not a Flink SQL interval join + ROW_NUMBER: the decision is made when
the watermark passes ``ts + receipt_delay``, and a receipt arriving after it must not count. An event-time
interval join expires its rows lazily (by timers, and during scans that join a late row *before* they
remove expired ones), so whether a late receipt still joins depends on timer timing: not the same
result as the pure function, and not reproducible. The Python operator runs the pure function itself
and sees only purchases and receipts (a few % of the events); the numbers are in docs/rules_job.md.

State (``attribution-person-v1``, key = person): ``AttributionState`` as chr(1) + JSON. No TTL: the pure
step forgets a delivery ``window + receipt_delay`` after it was delivered and a purchase once decided,
by event-time timers it asks for, and clears the key when nothing is left.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import orjson

from operators.rules.attribution import AttributionConfig, AttributionState

if TYPE_CHECKING:  # pragma: no cover
    from pyflink.table import StreamTableEnvironment

    from config.settings import Settings

CONVERSION_FIELDS = ("purchase_event_id", "person", "action_id", "rule_id", "campaign", "channel",
                     "delivered_ts", "purchase_ts", "amount", "payload")
_CACHE_MAX = 50_000  # decoded person states kept in front of the state (cleared when full)


def attribution_config(settings: Settings) -> AttributionConfig:
    job = settings.job
    channels = frozenset(job.attribution_channels) if job.attribution_channels is not None else None
    return AttributionConfig(window_ms=job.attribution_window_ms, receipt_delay_ms=job.attribution_receipt_delay_ms,
                             channels=channels)


# ---- SQL -----------------------------------------------------------------------------------------
def input_sql(receipts: str, events_view: str, purchase_type: str) -> str:
    """One append-only query: ``k`` = 'd' (a delivered receipt: s1 = its JSON) or 'p' (a purchase:
    s1 = event id, s2 = amount), with person and ts_ms. ``receipts`` has a ``payload`` BYTES column."""
    ptype = purchase_type.replace("'", "''")
    return f"""
SELECT k, person, ts_ms, s1, s2 FROM (
  SELECT 'd' AS k, JSON_VALUE(s, '$.person_id') AS person, TRY_CAST(JSON_VALUE(s, '$.ts_ms') AS BIGINT) AS ts_ms,
         s AS s1, CAST(NULL AS STRING) AS s2
  FROM (SELECT CAST(payload AS STRING) AS s FROM {receipts})
  WHERE JSON_VALUE(s, '$.status') = 'delivered'
  UNION ALL
  SELECT 'p', person, CAST(ts_ms AS BIGINT), event_id, CAST(amount AS STRING)
  FROM {events_view} WHERE event_type = '{ptype}')
WHERE person IS NOT NULL AND ts_ms IS NOT NULL"""


def store_rows_statements() -> list[str]:
    """``zt_attribution_rows`` in ``zt_store_rows``' shape: ``cv`` counters per ``<rule>|<channel>``
    (n1 = conversions, amount = revenue; absolute, from the GROUP BY state) and one ``cx`` row per
    conversion (HBase ``actions`` row = action id)."""
    zero = "CAST(0 AS BIGINT)"
    counts = """
CREATE TEMPORARY VIEW zt_conversion_counts AS
SELECT k, COUNT(*) AS n, SUM(a) AS revenue FROM (
  SELECT CONCAT(rule_id, '|', channel) AS k, CAST(COALESCE(amount, '0') AS DECIMAL(38, 2)) AS a FROM zt_conversions)
GROUP BY k"""
    rows = f"""
CREATE TEMPORARY VIEW zt_attribution_rows AS
SELECT kind, k, bucket, n1, n2, n3, n4, n5, amount, t1, t2, t3, s1 FROM (
  SELECT op, 'cv' AS kind, k, {zero} AS bucket, n AS n1, {zero} AS n2, {zero} AS n3, {zero} AS n4, {zero} AS n5,
         CAST(revenue AS DECIMAL(38, 2)) AS amount, {zero} AS t1, {zero} AS t2, {zero} AS t3,
         CAST(NULL AS STRING) AS s1
  FROM TO_CHANGELOG(input => TABLE zt_conversion_counts)
  UNION ALL
  SELECT 'INSERT', 'cx', action_id, purchase_ts, {zero}, {zero}, {zero}, {zero}, {zero},
         CAST(0 AS DECIMAL(38, 2)), {zero}, {zero}, {zero}, payload FROM zt_conversions)
WHERE op IN ('INSERT', 'UPDATE_AFTER')"""
    return [counts, rows]


# ---- the keyed function --------------------------------------------------------------------------
def _function_class() -> type:
    from pyflink.common import Row
    from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext

    from operators.rules.attribution import attribution_step, delivery_from
    from operators.rules.model import Event
    from state.attribution import decode_state, encode_state, person_state

    class AttributionFunction(KeyedProcessFunction):
        """Per person: decode the state, run ``attribution_step``, write it back, ask for its timers."""

        def __init__(self, config: AttributionConfig) -> None:
            self.config = config

        def open(self, runtime_context: RuntimeContext) -> None:

            self.state = runtime_context.get_state(person_state())
            self.counts = {"receipts": 0, "bad_receipts": 0, "purchases": 0, "conversions": 0}
            # person → (encoded, decoded) of the state this operator last wrote: skips decoding while the
            # stored value is still that string (always, unless restored from a checkpoint)
            self.cache: dict[str, tuple[str, AttributionState]] = {}

        def close(self) -> None:
            logging.getLogger(__name__).info("attribution: %s", getattr(self, "counts", {}))

        def process_element(self, value: Any, ctx: KeyedProcessFunction.Context):
            """A bundle of the person's inputs (``pipelines.bundles``), JSON rows ``[ts, k, s1, s2]``, each
            stepped at the current watermark as it would have been one by one (bundles flush before every
            watermark, so it is the same watermark)."""
            person = ctx.get_current_key()
            wm = ctx.timer_service().current_watermark()
            for ts, k, s1, s2 in orjson.loads(value):
                if k == "d":
                    self.counts["receipts"] += 1
                    try:
                        receipt = orjson.loads(s1)
                    except orjson.JSONDecodeError:
                        receipt = None
                    item: Any = delivery_from(receipt) if isinstance(receipt, dict) else None
                    if item is None:  # the SQL only checked status, person and ts_ms
                        self.counts["bad_receipts"] += 1
                        continue
                else:
                    self.counts["purchases"] += 1
                    item = Event(s1, self.config.purchase_type, ts, person, {"amount": s2})
                yield from self._step(item, wm, ctx, person)

        def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
            yield from self._step(None, timestamp, ctx, ctx.get_current_key())

        def _step(self, item: Any, now_ms: int, ctx: Any, person: str):
            raw = self.state.value()
            cached = self.cache.get(person)
            before = cached[1] if cached is not None and cached[0] == raw else decode_state(raw)
            if item is None and before is None:
                return
            after, conversions, timers = attribution_step(before, item, now_ms, self.config, person_id=person)
            if after is None:
                if raw:
                    self.state.clear()
                self.cache.pop(person, None)
            elif after is not before:
                enc = encode_state(after)
                self.state.update(enc)
                if len(self.cache) >= _CACHE_MAX:
                    self.cache.clear()
                self.cache[person] = (enc, after)
            for t in timers:
                ctx.timer_service().register_event_time_timer(t)
            for c in conversions:
                self.counts["conversions"] += 1
                yield Row(c.purchase_event_id, c.person_id, c.action_id, c.rule_id, c.campaign, c.channel,
                          c.delivered_ts_ms, c.purchase_ts_ms, c.amount, orjson.dumps(c.to_json()).decode())

    return AttributionFunction


def attach_attribution(t_env: StreamTableEnvironment, settings: Settings, *, receipts: str,
                       events_view: str = "zt_person_events") -> None:
    """Register ``zt_conversions`` (CONVERSION_FIELDS, append-only) from the receipts table ``receipts``
    (a ``payload`` BYTES column) and ``events_view``, and ``zt_attribution_rows`` for the store writer."""
    from pyflink.common import Types

    from pipelines.bundles import keyed_bundles

    config = attribution_config(settings)
    job = settings.job
    # Keyed by person with event time ts_ms (bounded out-of-orderness allowed_lateness_ms: a receipt can
    # lag its purchase), all on the JVM, the person's inputs bundled: one crossing per bundle.
    inputs = keyed_bundles(t_env, t_env.sql_query(
        f"SELECT person AS k, ts_ms AS ts, k AS kind, s1, s2 FROM ({input_sql(receipts, events_view, config.purchase_type)})"),
        ts_field=1, out_of_orderness_ms=job.allowed_lateness_ms, idle_ms=job.source_idle_timeout_ms,
        max_delay_ms=job.bundle_ms, max_rows=job.bundle_rows, name="attribution")
    s, n = Types.STRING(), Types.LONG()
    out = Types.ROW_NAMED(list(CONVERSION_FIELDS), [s, s, s, s, s, s, n, n, s, s])
    conversions = (inputs.process(_function_class()(config), output_type=out)
                   .name("attribution").uid("zt-attribution-v2"))  # v2: bundled input, Java event time
    t_env.create_temporary_view("zt_conversions", t_env.from_data_stream(conversions))
    for stmt in store_rows_statements():
        t_env.execute_sql(stmt)


def delivery_source_ddl(name: str, settings: Settings, *, topic: str, group: str, bounded: bool) -> str:
    """The delivery receipts topic as a raw Kafka table (read_committed, like the event source)."""
    from connectors.kafka_tables import source_ddl

    return source_ddl(name, settings.kafka, topic_pattern=re.escape(topic), group=group, bounded=bounded,
                      idle_timeout_ms=settings.job.source_idle_timeout_ms)
