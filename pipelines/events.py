"""The event job's SQL: decode + validate → DLQ | dedup → live counters, anchor buckets, identifier
combinations, totals; person minutes and person events over the identity map; the store rows.

The statements and helpers here are used by the stages of ``pipelines.job`` (the composition root):
``view_statements`` (the core), ``person_minutes_statement`` / ``attach_person_events`` (people),
``store_rows_statement`` and ``store_insert`` (the store: the transactional store log applied to
Redis/HBase by ``zhongtai.services.applier``, or with ``job.store_mode: direct`` the vectorised writer
``pipelines.store_sink``), ``dlq_insert``.

Everything per event runs as Flink SQL on the JVM; Python sees new identifier combinations (the
identity graph) and person-bucket changes (tags). See docs/performance.md for the measurements.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from operators.scopes import scope_key_sql
from pipelines.decode import decode_statements

if TYPE_CHECKING:  # pragma: no cover
    from pyflink.table import StreamTableEnvironment

    from config.settings import Settings


@dataclass(frozen=True)
class Sinks:
    """Names of the sink tables.

    ``dlq``, ``identity_changes``, ``tag_changes`` and ``control_results`` take (payload, headers, ts). ``store``
    takes the store-row columns (``amount`` as a decimal STRING; the store log,
    ``connectors.kafka_tables.store_log_sink_ddl``), or, when ``store_udf`` names a registered function, the one
    BIGINT column that function returns (the direct Redis/HBase writer, ``pipelines.store_sink``).
    """

    dlq: str
    store: str
    store_udf: str | None = None
    identity_changes: str | None = None
    #: raw control topic table (payload BYTES, ..., kts) and the results sink (DLQ-shaped)
    control_source: str | None = None
    control_results: str | None = None
    tag_changes: str | None = None


#: Columns of the ``zt_store_rows`` view, in order (see connectors.redis_store.StoreRow, whose first
#: two fields are swapped: a pandas UDF measures the batch by its first argument, which must
#: therefore never be a constant such as the row kind).
STORE_COLUMNS = ("k", "kind", "bucket", "n1", "n2", "n3", "n4", "n5", "amount", "t1", "t2", "t3", "s1")


def job_options(settings: Settings) -> dict[str, str]:
    """Table options the statements rely on (UTC, mini-batch, state TTL)."""
    job = settings.job
    ttl_ms = max(job.dedup_ttl_ms, job.allowed_lateness_ms + job.max_future_skew_ms + 3_600_000)
    return {
        "table.local-time-zone": "UTC",
        "table.exec.mini-batch.enabled": "true",
        "table.exec.mini-batch.allow-latency": f"{job.mini_batch_latency_ms} ms",
        "table.exec.mini-batch.size": str(job.mini_batch_size),
        "table.optimizer.agg-phase-strategy": "TWO_PHASE",
        "table.exec.state.ttl": f"{ttl_ms} ms",
        "table.exec.source.idle-timeout": f"{job.source_idle_timeout_ms} ms",
        "pipeline.object-reuse": "true",
        # SQL views are expanded per INSERT; this lets the optimiser plan a shared view once
        # (one decode, one dedup) instead of once per consumer with different projections.
        "table.optimizer.reuse-optimize-block-with-digest-enabled": "true",
        **sql_uid_options(settings),
    }


def sql_uid_options(settings: Settings) -> dict[str, str]:
    """Every SQL operator gets an explicit uid, so that its state survives a savepoint restore across what an
    upgrade changes (tests/integration/test_upgrade.py, docs/upgrade.md). ``flink.options`` may set either key otherwise.

    Measured on this job (rules on, experiments off: 183 operators, 34 of them with state; the operator ids of
    the job graph, each build in a fresh process unless said otherwise):

    * Flink's default ``PLAN_ONLY`` puts no uid on SQL operators but the TO_CHANGELOG calls (built-in process
      table functions always get ``<planner node id>_process``); the other ids are hashes of the graph's shape.
      They stayed (183 of 183) when only definitions (rules file: version, template), ``job.bundle_ms``,
      ``job.watermark_delay_ms``, ``flink.checkpoint_interval_ms`` or the parallelism (1 → 2) changed, but with
      operator chaining switched off (what a change of one operator's parallelism, of slot sharing or of
      Flink's chaining rules does) 4 of the 34 stateful ids stayed: the restore is refused, and
      ``execution.state-recovery.ignore-unclaimed-state`` would start the job without that state.
    * ``ALWAYS`` (uid ``<planner node id>_<transformation>``): the same changes keep 183 of 183; chaining off
      keeps all 34 stateful ids (4 stateless Table/DataStream conversions change; with experiments on: 58 of 58).
    * The planner numbers its nodes with a counter of the JVM: a second build in the same process kept 104
      (PLAN_ONLY) and 14 (ALWAYS) of 183 ids. ``zhongtai.jobs.runner.reset_sql_node_ids`` restarts the count for every
      build (then 183 of 183 with either setting).
    * PLAN_ONLY → ALWAYS keeps 4 of the 34 stateful ids: savepoints and checkpoints taken before this setting
      do not restore into it (docs/upgrade.md: replay once, or keep ``PLAN_ONLY`` through ``flink.options``).
    * A change of the SQL plan's shape moves the node numbers after it (experiments switched on kept 16 of 34
      with ALWAYS, 7 of 34 with PLAN_ONLY): a replay, not an upgrade.
    """
    uids = {"table.exec.uid.generation": "ALWAYS", "table.exec.uid.format": "<id>_<transformation>"}
    # flink.options may keep another choice (a deployment restoring a savepoint taken with PLAN_ONLY ids)
    uids.update({k: v for k, v in settings.flink.options.items() if k in uids})
    return uids


def view_statements(source: str, settings: Settings) -> list[str]:
    # The dedup input is one opaque ROW (behind a materialisation barrier) so that every consumer
    # asks for the same columns: the planner then keeps ONE dedup operator and state for all of them.
    all_ids = settings.event_schema.id_types()
    id_cols = ", ".join(f"id_{t}" for t in all_ids)
    id_types = ", ".join(f"id_{t} STRING" for t in all_ids)
    dedup = f"""
CREATE TEMPORARY VIEW zt_first AS
SELECT x.u AS u
FROM (
  SELECT u, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY pt ASC) AS rn
  FROM (SELECT event_id,
               CASE WHEN RAND() >= 0 THEN CAST(ROW(event_type, ts_ms, person, campaign, channel, amount, event_id, item_id, exp_key, variation,
                 {id_cols}, props) AS
                 ROW<event_type STRING, ts_ms BIGINT, person STRING, campaign STRING, channel STRING,
                     amount DECIMAL(18, 2), event_id STRING, item_id STRING, exp_key STRING,
                     variation INT, {id_types}, props STRING>) END AS u,
               PROCTIME() AS pt
        FROM zt_decoded WHERE reason IS NULL)) AS x
WHERE x.rn = 1"""
    # Keep-first dedup only ever inserts, but with mini-batch on the planner declares its output an
    # updating stream, which turns every downstream aggregate into its retracting variant (MIN/MAX
    # then keep a map of all values). TO_CHANGELOG states the truth: an append-only stream.
    unique = f"""
CREATE TEMPORARY VIEW zt_unique AS
SELECT y.u.event_type AS event_type, y.u.ts_ms AS ts_ms, y.u.person AS person, y.u.campaign AS campaign,
       y.u.channel AS channel, y.u.amount AS amount, y.u.event_id AS event_id, y.u.item_id AS item_id,
       y.u.exp_key AS exp_key, y.u.variation AS variation,
       {", ".join(f"y.u.id_{t} AS id_{t}" for t in all_ids)}, y.u.props AS props
FROM TO_CHANGELOG(input => TABLE zt_first) AS y
WHERE y.op = 'INSERT'"""
    # Live counters per scope (campaign|channel, and 'all') and minute. Distinct persons are NOT a
    # COUNT(DISTINCT): its per-key MapState under state TTL made the heap backend's incremental TTL
    # cleanup copy whole person maps on every state access (22 % of the job's CPU in a JFR profile,
    # docs/performance.md "SQL core (session 4)"). Instead each event appears once per scope
    # (zt_scoped), a keep-first dedup on (scope, minute, person) marks a person's first event there,
    # and one aggregate sums both append-only streams with plain value accumulators.
    scoped = f"""
CREATE TEMPORARY VIEW zt_scoped AS
SELECT 'all' AS k, ts_ms / 60000 AS mb, event_type, amount, person FROM zt_unique
UNION ALL
SELECT {scope_key_sql("campaign", "channel")} AS k, ts_ms / 60000 AS mb, event_type, amount, person FROM zt_unique"""
    scope_first = """
CREATE TEMPORARY VIEW zt_scope_first AS
SELECT k, mb FROM (
  SELECT k, mb, ROW_NUMBER() OVER (PARTITION BY k, mb, person ORDER BY pt ASC) AS rn
  FROM (SELECT k, mb, person, PROCTIME() AS pt FROM zt_scoped WHERE person IS NOT NULL))
WHERE rn = 1"""
    # keep-first dedup only inserts (see zt_unique)
    scope_persons = """
CREATE TEMPORARY VIEW zt_scope_persons AS
SELECT y.k AS k, y.mb AS mb FROM TO_CHANGELOG(input => TABLE zt_scope_first) AS y WHERE y.op = 'INSERT'"""
    one, zero = "CAST(1 AS BIGINT)", "CAST(0 AS BIGINT)"
    counters = f"""
CREATE TEMPORARY VIEW zt_counters AS
SELECT k, mb AS bucket, SUM(v) AS n_views, SUM(c) AS n_carts, SUM(p) AS n_purchases, SUM(e) AS n_events,
       SUM(np) AS n_persons, SUM(amount) AS n_revenue
FROM (
  SELECT k, mb,
         CASE WHEN event_type = 'page_view' THEN {one} ELSE {zero} END AS v,
         CASE WHEN event_type = 'add_to_cart' THEN {one} ELSE {zero} END AS c,
         CASE WHEN event_type = 'purchase' THEN {one} ELSE {zero} END AS p,
         {one} AS e, {zero} AS np, amount
  FROM zt_scoped
  UNION ALL
  SELECT k, mb, {zero}, {zero}, {zero}, {zero}, {one}, CAST(NULL AS DECIMAL(18, 2)) FROM zt_scope_persons)
GROUP BY k, mb"""
    # Profile buckets per anchor (the event's strongest identifier) and minute; the identity graph
    # maps anchors to persons (pipelines.identity) and zt_person_minutes re-aggregates per person.
    anchor_minutes = """
CREATE TEMPORARY VIEW zt_anchor_minutes AS
SELECT person AS anchor, mb,
  COUNT(*) FILTER (WHERE event_type = 'page_view') AS n_views,
  COUNT(*) FILTER (WHERE event_type = 'add_to_cart') AS n_carts,
  COUNT(*) FILTER (WHERE event_type = 'purchase') AS n_purchases,
  COUNT(*) AS n_events,
  SUM(amount) AS n_gmv,
  MIN(ts_ms) AS first_ts,
  MAX(ts_ms) AS last_ts,
  MAX(CASE WHEN event_type = 'purchase' THEN ts_ms END) AS last_purchase
FROM (SELECT *, ts_ms / 60000 AS mb FROM zt_unique)
GROUP BY person, mb"""
    # Each distinct identifier combination once, at its earliest (ts_ms, event_id): the identity
    # graph's input. A combination seen again later is dropped here, on the JVM; an earlier event of a
    # known combination arrives as an update (the graph then re-resolves in canonical order).
    combos = f"""
CREATE TEMPORARY VIEW zt_combos AS
SELECT {id_cols}, ts_ms, event_id FROM (
  SELECT {id_cols}, ts_ms, event_id,
         ROW_NUMBER() OVER (PARTITION BY {id_cols} ORDER BY ts_ms ASC, event_id ASC) AS rn
  FROM zt_unique)
WHERE rn = 1"""
    # Pipeline totals: one row per record (its outcome) plus one per unique event; two-phase
    # (local/global) aggregation keeps this cheap. ``received`` and ``dlq`` are sums the reader
    # derives (connectors.redis_store.RedisStore.stats).
    totals = """
CREATE TEMPORARY VIEW zt_totals AS
SELECT name, COUNT(*) AS n FROM (
  SELECT CASE WHEN reason IS NULL THEN 'valid' ELSE CONCAT('dlq:', reason) END AS name FROM zt_decoded
  UNION ALL SELECT CASE WHEN event_type IS NOT NULL THEN 'unique' END AS name FROM zt_unique)
GROUP BY name"""
    return [
        *decode_statements(source, settings.job, settings.pii, settings.identity, settings.event_schema),
        dedup,
        unique,
        scoped,
        scope_first,
        scope_persons,
        counters,
        anchor_minutes,
        combos,
        totals,
    ]


#: The views the job plans once and shares (see ``materialize``).
SHARED_VIEWS = frozenset({"zt_decoded", "zt_unique"})
#: The control topic as one shared view (``build`` registers it when ``Sinks.control_source`` is set);
#: every run-time-controlled part of the job reads its messages from here.
CONTROL_VIEW = "zt_control"
_VIEW_NAME = re.compile(r"CREATE TEMPORARY VIEW (\w+)")


def materialize(t_env: StreamTableEnvironment, view: str, *, changelog: bool = False) -> None:
    """Re-register ``view`` as a table over a DataStream of itself, so that it is planned ONCE.

    The job is several pipelines to the planner: every Table → DataStream conversion (the identity
    graph, the tags, the rules) is optimised on its own, and so is the statement set. A view they all
    read (the decoded events) would otherwise be planned, and run, once per pipeline: on the
    standalone cluster the Kafka source, the JSON decode and the dedup ran three times
    (docs/performance.md, "One source"). Behind the DataStream the view is one operator chain whose
    output fans out; the conversion stays on the JVM (no Python), insert-only views stay insert-only.
    """
    table = t_env.from_path(view)
    shared = (t_env.from_changelog_stream(t_env.to_changelog_stream(table)) if changelog
              else t_env.from_data_stream(t_env.to_data_stream(table)))
    t_env.drop_temporary_view(view)
    t_env.create_temporary_view(view, shared)


def person_minutes_statement() -> str:
    """``zt_person_minutes``: the anchor buckets re-aggregated per person over ``zt_id_map``
    (identifier → pid, an upsert table from the identity graph).

    When the graph moves an anchor to another person (merge) or back (split), the join retracts the
    anchor's buckets from the old person and adds them to the new one, so both profiles stay exact; a
    bucket left empty is deleted.
    """
    return """
CREATE TEMPORARY VIEW zt_person_minutes AS
SELECT m.pid AS person, a.mb,
  SUM(a.n_views) AS n_views, SUM(a.n_carts) AS n_carts, SUM(a.n_purchases) AS n_purchases,
  SUM(a.n_events) AS n_events, SUM(a.n_gmv) AS n_gmv,
  MIN(a.first_ts) AS first_ts, MAX(a.last_ts) AS last_ts, MAX(a.last_purchase) AS last_purchase
FROM zt_anchor_minutes AS a JOIN zt_id_map AS m ON a.anchor = m.identifier
GROUP BY m.pid, a.mb"""


#: The columns of ``zt_person_events`` after ``person`` (the data fields of the enrichment).
PERSON_EVENT_FIELDS = ("event_id", "event_type", "ts_ms", "campaign", "channel", "amount", "item_id", "exp_key",
                       "variation", "props")


def person_events_input_statement() -> str:
    """``zt_person_events_in``: the identity map's changes and the unique events in ONE append-only stream,
    keyed by identifier (``k``): a value row (``is_value``) sets or clears (``v`` null) the identifier's
    person, a data row is an event of that anchor (the input of :func:`enrich_once`)."""
    nulls = ", ".join(f"CAST(NULL AS {t}) AS {c}" for c, t in zip(PERSON_EVENT_FIELDS, (
        "STRING", "STRING", "BIGINT", "STRING", "STRING", "DECIMAL(18, 2)", "STRING", "STRING", "INT", "STRING")))
    return f"""
CREATE TEMPORARY VIEW zt_person_events_in AS
SELECT identifier AS k, TRUE AS is_value, CASE WHEN op = 'DELETE' THEN CAST(NULL AS STRING) ELSE pid END AS v,
       {nulls}
FROM TO_CHANGELOG(input => TABLE zt_id_map) WHERE op IN ('INSERT', 'UPDATE_AFTER', 'DELETE')
UNION ALL
SELECT person AS k, FALSE AS is_value, CAST(NULL AS STRING) AS v, {", ".join(PERSON_EVENT_FIELDS)}
FROM zt_unique"""


def enrich_once(rows: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """The Python reference of ``io.zhongtai.flink.enrich.EnrichOnce`` (jvm/), over rows in arrival order.

    A row is ``(k, is_value, v, d1, ..., dn)``. A value row sets key ``k``'s value to ``v`` (None clears
    it); a data row comes out once as ``(value, d1, ..., dn)``: at once when ``k`` has a value, else when
    ``k``'s first value arrives (waiting rows in arrival order). A later value change emits nothing.
    """
    value: dict[Any, Any] = {}
    pending: dict[Any, list[Sequence[Any]]] = {}
    out: list[tuple[Any, ...]] = []
    for r in rows:
        k = "" if r[0] is None else r[0]
        if r[1]:
            if r[2] is None:
                value.pop(k, None)
                continue
            value[k] = r[2]
            out += [(r[2], *w[3:]) for w in pending.pop(k, ())]
        elif k in value:
            out.append((value[k], *r[3:]))
        else:
            pending.setdefault(k, []).append(r)
    return out


def attach_person_events(t_env: StreamTableEnvironment, pending_ttl_ms: int) -> None:
    """``zt_person_events``: each unique event once, with the person its anchor had when the event met the
    identity map (append-only; for rules, attribution and experiments, which act on an event once).

    ``zt_person_events_in`` through the JVM's ``EnrichOnce`` keyed by anchor: an event whose anchor has a
    person is emitted at once and not stored; one that arrives before its anchor's first mapping waits (at
    most ``pending_ttl_ms``). Later merges move the profile buckets (``zt_person_minutes``), not the event's
    past decisions. (Before: an inner join kept every event for ever, plus a keep-first per event_id.)
    """
    from pyflink.common import Types
    from pyflink.datastream import DataStream
    from pyflink.java_gateway import get_gateway

    t_env.execute_sql(person_events_input_statement())
    j_in = t_env.to_data_stream(t_env.from_path("zt_person_events_in"))._j_data_stream
    s, long_, dec, int_ = Types.STRING(), Types.LONG(), Types.BIG_DEC(), Types.INT()
    out_type = Types.ROW_NAMED(["person", *PERSON_EVENT_FIELDS], [s, s, s, long_, s, s, dec, s, s, int_, s])
    enrich = get_gateway().jvm.io.zhongtai.flink.enrich.EnrichOnce
    j_out = enrich.apply(j_in, out_type.get_java_type_info(), pending_ttl_ms, "person-events",
                         "zt-person-events-enrich-v1")
    t_env.create_temporary_view("zt_person_events_enriched", t_env.from_data_stream(DataStream(j_out)))
    cols = ", ".join("CAST(amount AS DECIMAL(18, 2)) AS amount" if c == "amount" else c for c in PERSON_EVENT_FIELDS)
    t_env.execute_sql(f"CREATE TEMPORARY VIEW zt_person_events AS SELECT person, {cols} FROM zt_person_events_enriched")


def store_rows_statement(trait_values: str | None = None) -> str:
    """``zt_store_rows``: every upsert for Redis/HBase, one shape (``STORE_COLUMNS``; kinds in
    ``connectors.redis_store.StoreRow``): counters, person buckets, identifier mappings, identity
    edges, tag changes, computed trait values (``trait_values``: the person operator's view, with declared
    traits) and pipeline totals."""
    zero = "CAST(0 AS BIGINT)"
    no_amount = "CAST(0 AS DECIMAL(38, 2))"
    none = "CAST(NULL AS STRING)"
    traits = "" if trait_values is None else f"""
  UNION ALL
  SELECT 'INSERT', 'tv', person, ts_ms, {zero}, {zero}, {zero}, {zero}, {zero}, {no_amount}, {zero}, {zero}, {zero},
         CONCAT(trait, '=', v)
  FROM {trait_values}"""
    return f"""
CREATE TEMPORARY VIEW zt_store_rows AS
SELECT kind, k, bucket, n1, n2, n3, n4, n5, amount, t1, t2, t3, s1 FROM (
  SELECT op, 'c' AS kind, k, bucket, n_views AS n1, n_carts AS n2, n_purchases AS n3, n_events AS n4, n_persons AS n5,
         CAST(COALESCE(n_revenue, 0) AS DECIMAL(38, 2)) AS amount, {zero} AS t1, {zero} AS t2, {zero} AS t3,
         {none} AS s1
  FROM TO_CHANGELOG(input => TABLE zt_counters)
  UNION ALL
  SELECT op, CASE WHEN op = 'DELETE' THEN 'pd' ELSE 'p' END, person, mb, n_views, n_carts, n_purchases, n_events,
         {zero}, CAST(COALESCE(n_gmv, 0) AS DECIMAL(38, 2)), first_ts, last_ts,
         COALESCE(last_purchase, {zero}), {none}
  FROM TO_CHANGELOG(input => TABLE zt_person_minutes)
  UNION ALL
  SELECT op, CASE WHEN op = 'DELETE' THEN 'id' ELSE 'i' END, identifier, {zero}, {zero}, {zero}, {zero}, {zero},
         {zero}, {no_amount}, {zero}, {zero}, {zero}, pid
  FROM TO_CHANGELOG(input => TABLE zt_id_map)
  UNION ALL
  SELECT 'INSERT', 'e', a, ts_ms, CASE WHEN accepted THEN 1 ELSE 0 END, {zero}, {zero}, {zero}, {zero},
         {no_amount}, {zero}, {zero}, {zero}, CONCAT(b, '|', reason, '|', event_id)
  FROM zt_identity_edges
  UNION ALL
  SELECT 'INSERT', CASE WHEN op = 'add' THEN 't' ELSE 'tr' END, person, ts_ms, {zero}, {zero}, {zero}, {zero},
         {zero}, {no_amount}, {zero}, {zero}, {zero}, tag
  FROM zt_tag_changes{traits}
  UNION ALL
  SELECT op, 's', name, {zero}, n, {zero}, {zero}, {zero}, {zero}, {no_amount}, {zero}, {zero}, {zero}, {none}
  FROM TO_CHANGELOG(input => TABLE zt_totals))
WHERE op IN ('INSERT', 'UPDATE_AFTER', 'DELETE')"""


#: zhongtai's generic JVM functions the job's SQL calls (jvm/, docs/jvm.md), registered by ``register_functions``.
JVM_FUNCTIONS = {
    "ZT_TRUNCATE_BYTES": "io.zhongtai.flink.bytes.TruncateBytes",
    "ZT_BYTE_LENGTH": "io.zhongtai.flink.bytes.ByteLength",
}


def register_functions(t_env: StreamTableEnvironment) -> None:
    for name, cls in JVM_FUNCTIONS.items():
        t_env.execute_sql(f"CREATE TEMPORARY SYSTEM FUNCTION IF NOT EXISTS {name} AS '{cls}' LANGUAGE JAVA")


def dlq_insert(sink: str, max_value_bytes: int = 524_288) -> str:
    """Every rejected record to the DLQ: the original bytes as the value, the reason and source coordinates
    as headers (docs/semantics.md). A value longer than ``max_value_bytes`` (``job.dlq_max_value_bytes``) is
    cut to that length and marked (``zt.truncated: true``, ``zt.value.bytes``: the original length): a
    record the source topic accepted can exceed what the DLQ producer may send (an 8 MiB record stopped the
    job before); the whole record stays in its source topic at the offset the headers name."""
    ts_format = "'yyyy-MM-dd''T''HH:mm:ss.SSS''Z'''"
    return f"""
INSERT INTO {sink}
SELECT ZT_TRUNCATE_BYTES(payload, {max_value_bytes}), rkey,
  MAP['zt.reason', ENCODE(reason, 'UTF-8'),
      'zt.source.topic', ENCODE(topic, 'UTF-8'),
      'zt.source.partition', ENCODE(CAST(part AS STRING), 'UTF-8'),
      'zt.source.offset', ENCODE(CAST(off AS STRING), 'UTF-8'),
      'zt.source.timestamp', ENCODE(DATE_FORMAT(kts, {ts_format}), 'UTF-8'),
      'zt.value.bytes', ENCODE(CAST(COALESCE(ZT_BYTE_LENGTH(payload), 0) AS STRING), 'UTF-8'),
      'zt.truncated', ENCODE(CASE WHEN ZT_BYTE_LENGTH(payload) > {max_value_bytes} THEN 'true' ELSE 'false' END,
                             'UTF-8')],
  kts
FROM zt_decoded WHERE reason IS NOT NULL"""


def store_insert(sinks: Sinks, *views: str) -> str:
    """THE one INSERT into the store sink: the union of ``views`` (each with ``STORE_COLUMNS``; the job's
    ``zt_store_rows``, plus the rules' and attribution's rows), through ``sinks.store_udf`` when one is named
    (the direct writer), else the columns as they are (the store log). One INSERT, because every INSERT
    into a Kafka table is a sink of its own, and two transactional sinks may not share an id prefix."""
    cols = ", ".join(STORE_COLUMNS)
    union = "\n  UNION ALL\n  ".join(f"SELECT {cols} FROM {v}" for v in views)
    select = f"{sinks.store_udf}({cols})" if sinks.store_udf else cols.replace("amount", "CAST(amount AS STRING)")
    return f"INSERT INTO {sinks.store}\nSELECT {select} FROM (\n  {union})"
