"""Dynamic list prices and personal offers inside the event job (``pricing.enabled``; docs/pricing.md).

ONE keyed Python operator (key = item), the pure step of ``operators.pricing.step`` behind the JVM bundler
(``pipelines.bundles``), with the pricing control messages on its broadcast side::

    zt_person_events (views, carts, purchases; inventory; competitor_price) ─┐
    zt_actions (rules on: channel pricing.offer_channel, params.offer = true) ─┴─ key item ─ pricing
        ├─ 'pr' rows: a list-price change (key item) ─┐
        ├─ 'po' rows: an offer decision (key person) ──┴─ zt_pricing_rows ─ the store (Redis + HBase)
        │                                                └─ the pricing topic (kafka.topics.pricing)
        └─ side output: one result per control message (kind pricing) ─ the control results topic

Inputs are absorbed as they come; every input asks for an event-time timer on the next tick (a multiple of
``pricing.tick_ms``), where the step settles the inputs before it and reprices. After a tick the item asks
for the next one while its demand windows still hold weight or the step limit held it back
(``operators.pricing.step.needs_tick``), so the price follows demand back; then it is quiet until its next
input (a policy installed by a control message reaches a quiet item with its next input). The ticks are a
function of the inputs' event times only, so at the end of a bounded input they still run, as the rules
engine's timers do (``operators.person.on_timer``): a replay prices exactly as the live run did. The TTL's
timer (``pricing.item_ttl_ms`` after the last input, rounded up to the day) does not fire at the end of a
bounded input: that time has not come. State: ``state.pricing``.
"""

from __future__ import annotations

import logging
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import orjson

from operators.person import END_OF_INPUT

if TYPE_CHECKING:  # pragma: no cover
    from pyflink.table import StreamTableEnvironment

    from config.settings import PricingSettings, Settings
    from operators.pricing.step import PricingContext

logger = logging.getLogger(__name__)
_ZERO = "CAST(0 AS BIGINT)"
_DAY = 86_400_000
_COLUMNS = ("k", "ts", "eid", "etype", "store", "qty", "cost", "price", "mapp", "category", "competitor", "extra")


class ItemVariant:
    """item, ts → the variant of the pricing experiment (``operators.experiments.definitions.assign``: the
    same hash as the experiments' own statistics), or None. Picklable: it keeps the definition's mapping."""

    def __init__(self, definition: dict[str, Any] | None) -> None:
        self.raw = definition
        self.defn: Any = None

    def __call__(self, item: str, ts_ms: int) -> str | None:
        if self.raw is None:
            return None
        if self.defn is None:
            from operators.experiments.definitions import definition_from_mapping

            self.defn = definition_from_mapping(self.raw)
        from operators.experiments.definitions import assign

        idx = assign(self.defn, item, ts_ms)
        return None if idx is None else self.defn.variations[idx]

    def __getstate__(self) -> dict[str, Any]:
        return {"raw": self.raw, "defn": None}


def pricing_context(p: PricingSettings, definition: dict[str, Any] | None = None,
                    extra: tuple[tuple[int, Any], ...] = ()) -> PricingContext:
    """The step's context from the settings (raises ``PricingPolicyError`` naming the bad key): the configured
    policies in force from time 0, then ``extra`` (effective ms, Policies) from control messages."""
    from operators.pricing.policy import policies_from_mapping
    from operators.pricing.step import PricingContext

    base = policies_from_mapping(p.policies, p.default, p.experiment, p.variants, p.version)
    return PricingContext(((0, base), *extra), tick_ms=p.tick_ms, item_ttl_ms=p.item_ttl_ms,
                          variant_of=ItemVariant(definition))


def experiment_definition(settings: Settings) -> dict[str, Any] | None:
    """The pricing experiment's definition (``pricing.experiment`` in ``experiments.definitions_file``)."""
    key = settings.pricing.experiment
    if not key:
        return None
    from operators.pricing.policy import PricingPolicyError
    from pipelines.experiments import definitions

    for d in definitions(settings):
        if d.key == key:
            if d.unit != "item":
                raise PricingPolicyError(f"pricing.experiment {key!r} has unit {d.unit!r}; a pricing experiment "
                                         "assigns items (unit: item), never persons: the list price is the same "
                                         "for everyone (docs/pricing.md)")
            missing = sorted(set(d.variations) - set(settings.pricing.variants))
            if missing:
                raise PricingPolicyError(f"pricing.experiment {key!r}: variants {missing} have no policy in "
                                         "pricing.variants")
            return dict(d.to_dict())
    raise PricingPolicyError(f"pricing.experiment {key!r} is not in {settings.experiments.definitions_file}")


def cents(text: Any) -> int | None:
    """A money text (``"12.30"``) as cents, None when absent or not a non-negative number."""
    if text is None or text == "":
        return None
    try:
        d = Decimal(str(text))
    except InvalidOperation:
        return None
    if not d.is_finite() or d < 0:
        return None
    return int((d * 100).to_integral_value())


def _int(text: Any) -> int | None:
    try:
        return int(Decimal(str(text))) if text not in (None, "") else None
    except (InvalidOperation, ValueError):
        return None


def parse_row(k: str, row: list[Any], offer_valid_ms: int) -> Any:
    """One bundled row (``_COLUMNS`` after the key) as the step's input, or None (an offer without a person)."""
    from operators.pricing.offers import OfferRequest
    from operators.pricing.step import ItemInput

    ts, eid, etype, store, qty, cost, price, mapp, category, competitor, extra = row
    if etype == "offer":
        a = orjson.loads(extra)
        params = a.get("params") or {}
        try:
            pct = float(params.get("discount_pct", 0))
        except (TypeError, ValueError):
            pct = 0.0
        return OfferRequest(int(ts), eid, a.get("person_id", ""), k, a.get("rule_id", ""), pct,
                            _int(params.get("valid_ms")) or offer_valid_ms, params.get("pickup_city") or None)
    if etype == "competitor_price":
        return ItemInput(int(ts), eid, etype, competitor=competitor or "", competitor_cents=cents(price))
    if etype == "inventory":
        return ItemInput(int(ts), eid, etype, store=store or "", qty=_int(qty), cost_cents=cents(cost),
                         base_cents=cents(price), map_cents=cents(mapp), category=category or None)
    return ItemInput(int(ts), eid, etype)


def input_sql(events_view: str, actions_view: str | None, p: PricingSettings) -> str:
    """Demand, inventory and competitor events by item (``item_id``, else ``props.sku``), and with a rule set
    the offer requests (``pricing.offer_channel`` actions with ``params.offer`` true) by their ``item_id``."""
    weights: set[str] = set()
    for pol in p.policies:
        weights |= set(pol.get("demand_weights") or {"page_view": 1, "add_to_cart": 1, "purchase": 1})
    types = ", ".join("'" + t.replace("'", "''") + "'" for t in sorted(weights | {"inventory", "competitor_price"}))

    def prop(name: str) -> str:
        return f"JSON_VALUE(props, '$.{name}')"

    item = f"COALESCE(NULLIF(item_id, ''), {prop('sku')})"
    sql = f"""
SELECT * FROM (
SELECT {item} AS k, CAST(ts_ms AS BIGINT) AS ts, event_id AS eid, event_type AS etype, {prop('store_id')} AS store,
       {prop('qty')} AS qty, {prop('cost')} AS cost, {prop('price')} AS price, {prop('map_price')} AS mapp,
       {prop('category')} AS category, {prop('competitor')} AS competitor, CAST(NULL AS STRING) AS extra
FROM {events_view} WHERE event_type IN ({types})) WHERE k IS NOT NULL AND k <> ''"""
    if actions_view is not None:
        channel = p.offer_channel.replace("'", "''")
        n = "CAST(NULL AS STRING)"
        sql += f"""
UNION ALL
SELECT * FROM (
SELECT JSON_VALUE(payload, '$.params.item_id') AS k, CAST(ts_ms AS BIGINT) AS ts, action_id AS eid,
       CAST('offer' AS STRING) AS etype, {n}, {n}, {n}, {n}, {n}, {n}, {n}, payload AS extra
FROM {actions_view} WHERE channel = '{channel}' AND JSON_VALUE(payload, '$.params.offer') = 'true')
WHERE k IS NOT NULL AND k <> ''"""
    return sql


def store_rows_sql(out_view: str, offer_key_ttl_s: int) -> str:
    """``zt_pricing_rows``: ``pr`` / ``po`` rows in ``zt_store_rows``' shape (``po``: n2 = the offers key's TTL)."""
    z = _ZERO
    return f"""
CREATE TEMPORARY VIEW zt_pricing_rows AS
SELECT kind, k, ts AS bucket, n AS n1, CASE WHEN kind = 'po' THEN CAST({int(offer_key_ttl_s)} AS BIGINT) ELSE {z} END AS n2, {z} AS n3, {z} AS n4, {z} AS n5,
       CAST(0 AS DECIMAL(38, 2)) AS amount, {z} AS t1, {z} AS t2, {z} AS t3, s1
FROM {out_view}"""


def _function(p_json: str, definition: dict[str, Any] | None, result_tag: Any) -> Any:
    from pyflink.common import Row
    from pyflink.datastream.functions import KeyedBroadcastProcessFunction

    from config.settings import PricingSettings
    from operators.pricing.control import Versions, apply_control
    from operators.pricing.offers import Offer
    from operators.pricing.step import PriceChange, Tick, needs_tick, next_tick, step
    from state.pricing import ITEM, control_log_state, decode_item, descriptors, encode_item

    p = PricingSettings.model_validate_json(p_json)

    def _rows(outs: list[Any]) -> Any:
        for o in outs:
            if isinstance(o, PriceChange):
                yield Row("pr", o.item, o.ts_ms, o.price_cents, orjson.dumps(o.record).decode())
            elif isinstance(o, Offer):
                yield Row("po", o.person, o.ts_ms, int(o.record.get("offer_cents", 0)) if o.granted else 0,
                          orjson.dumps(o.record).decode())

    class PricingFunction(KeyedBroadcastProcessFunction):
        """Key = item; value = a bundle of ``_COLUMNS`` rows. Broadcast side: pricing control messages."""

        def open(self, runtime_context: Any) -> None:
            from pipelines.runtime import subtask_index

            self.state = runtime_context.get_state(descriptors()[ITEM])
            self.subtask = subtask_index(runtime_context)
            self.ctx = pricing_context(p, definition)
            self.versions = Versions(((p.version, 0, self.ctx.versions[0][1]),))
            self.loaded = False
            self.counts = {"bundles": 0, "rows": 0, "ticks": 0, "prices": 0, "offers": 0}

        def close(self) -> None:
            logger.info("pricing subtask %s: %s", getattr(self, "subtask", "?"), getattr(self, "counts", {}))

        def _ensure(self, ctx: Any) -> None:
            """After a restore: the accepted control messages, from broadcast state, in version order."""
            if self.loaded:
                return
            self.loaded = True
            for _, msg in sorted(ctx.get_broadcast_state(control_log_state()).items()):
                self._install(orjson.loads(msg))

        def _install(self, msg: Any) -> Any:
            from dataclasses import replace

            self.versions, result = apply_control(self.versions, msg)
            if result.ok:
                self.ctx = replace(self.ctx, versions=self.versions.by_time())
            return result

        def _tick_at(self, ctx: Any, ts: int) -> None:
            ctx.timer_service().register_event_time_timer(min(next_tick(ts, self.ctx.tick_ms), END_OF_INPUT - 1))

        def _ttl_at(self, ctx: Any, last_ts: int) -> None:
            """The TTL's timer, rounded up to the day: at most one per item and day of inputs."""
            ctx.timer_service().register_event_time_timer(
                min(-(-(last_ts + self.ctx.item_ttl_ms) // _DAY) * _DAY, END_OF_INPUT - 1))

        def process_element(self, value: Any, ctx: Any):  # noqa: ANN201 - a generator
            self._ensure(ctx)
            item = ctx.get_current_key()
            st = decode_item(self.state.value())
            rows = orjson.loads(value)
            self.counts["bundles"] += 1
            self.counts["rows"] += len(rows)
            for row in rows:
                msg = parse_row(item, row, p.offer_valid_ms)
                st, outs = step(st, msg, msg.ts_ms, self.ctx, item)
                yield from _rows(outs)
                # a late input (before the watermark) is settled at the next tick after the watermark
                self._tick_at(ctx, max(msg.ts_ms, ctx.timer_service().current_watermark()))
            if st is not None:
                self.state.update(encode_item(st))
                self._ttl_at(ctx, st.last_ts)

        def on_timer(self, timestamp: int, ctx: Any):  # noqa: ANN201 - a generator
            self._ensure(ctx)
            st = decode_item(self.state.value())
            if st is None:
                return
            if timestamp >= st.last_ts + self.ctx.item_ttl_ms:  # the TTL timer
                if ctx.timer_service().current_watermark() < END_OF_INPUT and not st.pending:
                    self.state.clear()  # (at the end of a bounded input that time has not come)
                return
            st, outs = step(st, Tick(timestamp), timestamp, self.ctx)
            self.counts["ticks"] += 1
            self.counts["prices"] += sum(isinstance(o, PriceChange) for o in outs)
            self.counts["offers"] += sum(isinstance(o, Offer) for o in outs)
            yield from _rows(outs)
            if st is None:
                self.state.clear()
                return
            self.state.update(encode_item(st))
            if needs_tick(st, timestamp, self.ctx):
                self._tick_at(ctx, timestamp)

        def process_broadcast_element(self, value: Any, ctx: Any):  # noqa: ANN201 - a generator
            self._ensure(ctx)
            payload = value[0] if not isinstance(value, str) else value
            try:
                msg = orjson.loads(payload)
            except orjson.JSONDecodeError as e:
                msg = {"op": None, "error": f"control message is not JSON ({e}); send a JSON object"}
            if not isinstance(msg, dict):
                msg = {"op": None}
            result = self._install(msg)
            if result.ok:
                ctx.get_broadcast_state(control_log_state()).put(f"{result.version:010d}", payload)
            else:
                logger.warning("pricing: control message refused: %s", result.reason)
            if self.subtask == 0:
                yield result_tag, Row(orjson.dumps(result.to_json()).decode())

    return PricingFunction()


def attach_pricing(t_env: StreamTableEnvironment, settings: Settings, *, events_view: str = "zt_person_events",
                   actions_view: str | None = None, control_view: str | None = None) -> None:
    """Register ``zt_pricing_rows`` (store rows ``pr`` / ``po``), ``zt_pricing_out`` (kind, k, ts, n, s1) and,
    with a control view, ``zt_pricing_control_results`` (payload)."""
    from pyflink.common import Types
    from pyflink.datastream import OutputTag

    from pipelines.bundles import control_stream, keyed_bundles
    from state.pricing import control_log_state

    p = settings.pricing
    definition = experiment_definition(settings)
    pricing_context(p, definition)  # a bad policy fails the build, naming the key
    job = settings.job
    keyed = keyed_bundles(t_env, t_env.sql_query(input_sql(events_view, actions_view, p)), ts_field=1,
                          out_of_orderness_ms=job.watermark_delay_ms, idle_ms=job.source_idle_timeout_ms,
                          max_delay_ms=job.bundle_ms, max_rows=job.bundle_rows, name="pricing")
    ctl = control_stream(t_env, None if control_view is None else f"""
SELECT s AS payload FROM (SELECT CAST(payload AS STRING) AS s FROM {control_view})
WHERE JSON_VALUE(s, '$.kind') = 'pricing'""", idle_ms=job.source_idle_timeout_ms, name="pricing")
    result_tag = OutputTag("pricing-control-results", Types.ROW_NAMED(["payload"], [Types.STRING()]))
    s, n = Types.STRING(), Types.LONG()
    out = keyed.connect(ctl.broadcast(control_log_state())) \
        .process(_function(p.model_dump_json(), definition, result_tag),
                 output_type=Types.ROW_NAMED(["kind", "k", "ts", "n", "s1"], [s, s, n, n, s])) \
        .name("pricing").uid("zt-pricing-v1")
    t_env.create_temporary_view("zt_pricing_out", t_env.from_data_stream(out))
    t_env.execute_sql(store_rows_sql("zt_pricing_out", p.offer_key_ttl_s))
    if control_view is not None:
        t_env.create_temporary_view("zt_pricing_control_results",
                                    t_env.from_data_stream(out.get_side_output(result_tag)))


def topic_insert(sink: str) -> str:
    """Every price change and offer decision on the pricing topic: the record as the value, its kind
    (``price`` / ``offer``) and key (item / person) in the headers ``zt.kind`` and ``zt.key``."""
    return f"""
INSERT INTO {sink}
SELECT ENCODE(s1, 'UTF-8'),
       MAP['zt.kind', ENCODE(CASE WHEN kind = 'pr' THEN 'price' ELSE 'offer' END, 'UTF-8'), 'zt.key', ENCODE(k, 'UTF-8')],
       CAST(NULL AS TIMESTAMP_LTZ(3))
FROM zt_pricing_out"""


def control_results_insert(sink: str) -> str:
    return f"""
INSERT INTO {sink}
SELECT ENCODE(payload, 'UTF-8'), MAP['zt.kind', ENCODE('pricing', 'UTF-8')], CAST(NULL AS TIMESTAMP_LTZ(3))
FROM zt_pricing_control_results"""
