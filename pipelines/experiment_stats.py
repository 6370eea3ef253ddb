"""Streaming per-variant experiment statistics as Flink SQL views, generic over run-time definitions.

The definitions are a table, not SQL text: :func:`experiment_statements` reads ``defs_view``, an
append-only table ``(exp_key STRING, packed STRING)`` of definition rows
(``operators.experiments.control.packed_row``: version, active flag, JSON record), fed by the YAML
initial set (:func:`definition_rows_statement`) and by the job's control operator
(``pipelines.experiments``). Per key the row with the highest version is the running
definition (``{prefix}_defs``); a deleted key has none. Changing a definition never re-plans the job.

``source_view`` columns: ``event_type STRING, ts_ms BIGINT, unit STRING, amount DECIMAL(18, 2),
exp_key STRING, variation INT``; append-only (``zt_unique`` is); ``unit`` is the id the experiments
hash: call once per unit type (person, device) with its source view, ``unit`` and a distinct ``prefix``.
The last view, ``{prefix}_store_rows``, has :data:`EXPERIMENT_STORE_COLUMNS` and carries absolute
values as upserts (one row per change of an experiment x variant; zeros after a ``DELETE``).

What the views compute (all per-event work is SQL; Python runs once per (experiment, unit)):

1. exposures: app ``exposure`` events of a running experiment with a variation index in range and
   an event time in [start, stop); triggers: events of a running experiment's ``assign_on`` types in
   [start, stop). Both are *lookups* of the definition current when the event reaches the join
   (a regular join whose event side lives ``lookup_ttl_ms``, 5 s: a definition applies to the events
   processed after it and in the 5 s before it, never to older history);
2. stream assignment: the first trigger per (experiment, unit) to arrive goes, with the definition
   it met, to the assignment function (:func:`assign_udf`: targeting on the person's tags as the
   job's Redis holds them at that moment, then GrowthBook's hash). The first trigger decides: a
   unit not targeted then is not assigned later by the stream, and a unit assigned stays;
3. per (experiment, unit): variation (earliest app exposure, else the stream's) and first exposure
   time (earliest app exposure or, if the stream assigned it, trigger), exact under any arrival order;
4. per unit: its conversion and revenue events (``metric_types``: the event types any accepted
   definition measures, from then on) split at the first exposure with the *current* definition's
   windows (a changed window re-evaluates every unit of the experiment; a deleted experiment
   retracts its units, so its statistics drop to zero);
5. per (experiment, variant): units, converted, sum y, y^2, x, x^2, x*y (DECIMAL, exact).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from operators.experiments.control import definition_from_record, eligible, packed_row
from operators.experiments.definitions import ExperimentDefinition, assign

if TYPE_CHECKING:  # pragma: no cover
    from pyflink.table.udf import UserDefinedScalarFunctionWrapper

__all__ = [
    "DEFAULT_STATE_TTL_MS",
    "EXPERIMENT_STORE_COLUMNS",
    "LOOKUP_BUCKETS",
    "LOOKUP_TTL_MS",
    "SOURCE_COLUMNS",
    "ExperimentStoreWriter",
    "assign_udf",
    "definition_rows_statement",
    "definitions_statements",
    "experiment_meta_udf",
    "experiment_statements",
    "experiment_store_udf",
]

#: Columns the source view must have (names and types).
SOURCE_COLUMNS = (
    ("event_type", "STRING"), ("ts_ms", "BIGINT"), ("unit", "STRING"), ("amount", "DECIMAL(18, 2)"),
    ("exp_key", "STRING"), ("variation", "INT"),
)  # fmt: skip

#: Columns of ``{prefix}_store_rows``, in order. Types: exp_key, variant_key STRING; units, converted
#: BIGINT; rev_sum, cov_sum DECIMAL(38, 2); rev_sumsq, cov_sumsq, cov_rev_sum DECIMAL(38, 4).
EXPERIMENT_STORE_COLUMNS = (
    "exp_key", "variant_key", "units", "converted", "rev_sum", "rev_sumsq", "cov_sum", "cov_sumsq", "cov_rev_sum",
)  # fmt: skip

#: Per-unit state (exposures, the join's metric events, aggregates): an experiment's longest run +
#: metric window + covariate lookback is not known in advance at run time, so one year.
DEFAULT_STATE_TTL_MS = 365 * 86_400_000
#: The definitions (and tag lists) never expire while the job runs (~10 years).
_FOREVER_MS = 3650 * 86_400_000
#: How long an event stays in a lookup join (ms): a definition that arrives up to this long after an
#: event still sees it (the job's start: the YAML rows and the first events race). Consumers are
#: idempotent, so a changed definition re-emitting these events counts nothing twice.
LOOKUP_TTL_MS = 5_000
#: The lookups' event side is keyed by (event type or key, hash(unit) mod this): every TTL clean-up
#: copies a key's whole map, so one hot key (page_view) with 5 s of events made the job 4x slower.
LOOKUP_BUCKETS = 64
_EXPOSURE = "exposure"


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ttl(**sides: int) -> str:
    """A ``STATE_TTL`` hint: alias -> milliseconds."""
    return "/*+ STATE_TTL(" + ", ".join(f"{_lit(a)} = {_lit(f'{ms} ms')}" for a, ms in sides.items()) + ") */ "


def definition_rows_statement(definitions: Sequence[ExperimentDefinition], view: str) -> str:
    """``CREATE TEMPORARY VIEW {view}`` of the definition rows of ``definitions`` (the YAML initial
    set; an empty list gives an empty view of the right type)."""
    rows = [packed_row(d.key, d.version, d) for d in definitions]
    if not rows:
        return (f"CREATE TEMPORARY VIEW {view} AS SELECT CAST(NULL AS STRING) AS exp_key, "
                "CAST(NULL AS STRING) AS packed FROM (VALUES (1)) AS t(x) WHERE x = 0")  # fmt: skip
    values = ", ".join(f"(CAST({_lit(k)} AS STRING), CAST({_lit(p)} AS STRING))" for k, p in rows)
    return f"CREATE TEMPORARY VIEW {view} AS SELECT exp_key, packed FROM (VALUES {values}) AS t(exp_key, packed)"


def definitions_statements(rows_view: str, *, prefix: str = "zt_exp") -> list[str]:
    """``{prefix}_definitions`` (the running definition per key, an updating table) and
    ``{prefix}_metric_types`` (every event type an accepted definition measures; insert-only)."""
    j = "SUBSTRING(packed FROM 23)"

    def num(field: str) -> str:
        return f"CAST(JSON_VALUE(def_json, '$.{field}') AS BIGINT)"

    return [
        # The highest version per key, as a LEFT JOIN anti-pattern rather than an aggregate: joins emit
        # at once (mini-batch aggregates wait for the next batch, in the job for the next watermark).
        f"""
CREATE TEMPORARY VIEW {prefix}_defs_latest AS
SELECT {_ttl(r=_FOREVER_MS, n=_FOREVER_MS)}r.exp_key AS exp_key, r.packed AS packed
FROM {rows_view} AS r LEFT JOIN {rows_view} AS n ON n.exp_key = r.exp_key AND n.packed > r.packed
WHERE r.exp_key IS NOT NULL AND n.exp_key IS NULL""",
        f"""
CREATE TEMPORARY VIEW {prefix}_definitions AS
SELECT exp_key, version, def_json, JSON_VALUE(def_json, '$.unit') AS unit,
  CAST({num('n_var')} AS INT) AS n_var, JSON_VALUE(def_json, '$.variants') AS variants,
  {num('start_ms')} AS start_ms, {num('stop_ms')} AS stop_ms,
  JSON_QUERY(def_json, '$.assign_on' RETURNING ARRAY<STRING>) AS assign_on,
  JSON_VALUE(def_json, '$.conv_type') AS conv_type, {num('conv_window')} AS conv_window,
  JSON_VALUE(def_json, '$.rev_type') AS rev_type, {num('rev_window')} AS rev_window, {num('cov_ms')} AS cov_ms
FROM (SELECT exp_key, CAST(SUBSTRING(packed FROM 1 FOR 19) AS BIGINT) AS version,
             SUBSTRING(packed FROM 21 FOR 1) = '1' AS active, {j} AS def_json FROM {prefix}_defs_latest)
WHERE active""",
        f"""
CREATE TEMPORARY VIEW {prefix}_metric_type_rows AS
SELECT JSON_VALUE({j}, '$.conv_type') AS event_type, packed FROM {rows_view}
UNION ALL SELECT JSON_VALUE({j}, '$.rev_type'), packed FROM {rows_view}
WHERE JSON_VALUE({j}, '$.rev_type') <> JSON_VALUE({j}, '$.conv_type')""",
        # One row per type, for good: the first row (lowest version) of the type; later rows of the
        # same type never change it, so the metric lookup never re-emits (which would double count).
        f"""
CREATE TEMPORARY VIEW {prefix}_metric_types AS
SELECT {_ttl(t=_FOREVER_MS, o=_FOREVER_MS)}t.event_type AS event_type
FROM {prefix}_metric_type_rows AS t
LEFT JOIN {prefix}_metric_type_rows AS o ON o.event_type = t.event_type AND o.packed < t.packed
WHERE t.event_type IS NOT NULL AND o.event_type IS NULL""",
    ]


def experiment_statements(
    source_view: str,
    *,
    unit: str,
    defs_prefix: str = "zt_exp",
    prefix: str = "zt_exp",
    assign_function: str = "zt_exp_assign",
    state_ttl_ms: int = DEFAULT_STATE_TTL_MS,
    lookup_ttl_ms: int = LOOKUP_TTL_MS,
    lookup_buckets: int = LOOKUP_BUCKETS,
) -> list[str]:
    """``CREATE TEMPORARY VIEW`` statements ending in ``{prefix}_store_rows`` (see the module doc).

    Needs :func:`definitions_statements` with ``defs_prefix`` first and ``assign_function`` registered
    (:func:`assign_udf`; for targeting, with the Redis settings where the job keeps the person tags).
    """
    if unit not in ("person", "device", "item"):
        raise ValueError(f"experiment_statements: unit must be person, device or item, got {unit!r}")
    p, d = prefix, defs_prefix
    ttl, look, forever = state_ttl_ms, lookup_ttl_ms, _FOREVER_MS
    valid_unit = "unit IS NOT NULL AND unit <> '' AND ts_ms IS NOT NULL"
    nb = max(1, lookup_buckets)
    array = "ARRAY[" + ", ".join(str(i) for i in range(nb)) + "]"

    def buckets(column: str) -> str:  # correlated with the row: a per-row UNNEST, not a stateful cross join
        return f"CASE WHEN CHAR_LENGTH({column}) >= 0 THEN {array} END"

    bucket = f"MOD(MOD(HASH_CODE(unit), {nb}) + {nb}, {nb})"
    stmts = [
        f"CREATE TEMPORARY VIEW {p}_defs AS SELECT * FROM {d}_definitions WHERE unit = {_lit(unit)}",
        f"""
CREATE TEMPORARY VIEW {p}_app_defs AS
SELECT d.exp_key, k.b, d.n_var, d.start_ms, d.stop_ms FROM {p}_defs AS d CROSS JOIN UNNEST({buckets('d.exp_key')}) AS k(b)""",
        f"""
CREATE TEMPORARY VIEW {p}_trigger_defs AS
SELECT d.exp_key, t.event_type, k.b, d.start_ms, d.stop_ms, d.def_json
FROM {p}_defs AS d CROSS JOIN UNNEST(d.assign_on) AS t(event_type) CROSS JOIN UNNEST({buckets('d.exp_key')}) AS k(b)""",
        f"""
CREATE TEMPORARY VIEW {p}_metric_buckets AS
SELECT m.event_type, k.b FROM {d}_metric_types AS m CROSS JOIN UNNEST({buckets('m.event_type')}) AS k(b)""",
        f"""
CREATE TEMPORARY VIEW {p}_exposure_events AS
SELECT exp_key, unit, ts_ms, variation, {bucket} AS b FROM {source_view}
WHERE event_type = {_lit(_EXPOSURE)} AND {valid_unit} AND ts_ms >= 0 AND variation IS NOT NULL""",
        (f"CREATE TEMPORARY VIEW {p}_unit_events AS SELECT event_type, unit, ts_ms, amount, {bucket} AS b "
         f"FROM {source_view} WHERE {valid_unit}"),
        # Lookups: the event side lives lookup_ttl_ms; a changed definition re-emits the events still
        # there (INSERT-only below keeps the first emission: every consumer is idempotent).
        f"""
CREATE TEMPORARY VIEW {p}_app_lookup AS
SELECT {_ttl(e=look, d=forever)}e.exp_key, e.unit, e.ts_ms, e.variation
FROM {p}_exposure_events AS e JOIN {p}_app_defs AS d ON e.exp_key = d.exp_key AND e.b = d.b
WHERE e.variation >= 0 AND e.variation < d.n_var AND e.ts_ms >= d.start_ms AND e.ts_ms < d.stop_ms""",
        f"""
CREATE TEMPORARY VIEW {p}_trigger_lookup AS
SELECT {_ttl(e=look, t=forever)}t.exp_key, e.unit, e.ts_ms, t.def_json
FROM {p}_unit_events AS e JOIN {p}_trigger_defs AS t ON e.event_type = t.event_type AND e.b = t.b
WHERE e.ts_ms >= t.start_ms AND e.ts_ms < t.stop_ms""",
        f"""
CREATE TEMPORARY VIEW {p}_metric_lookup AS
SELECT {_ttl(e=look, m=forever)}e.unit, e.event_type, e.ts_ms, COALESCE(e.amount, CAST(0 AS DECIMAL(18, 2))) AS amount
FROM {p}_unit_events AS e JOIN {p}_metric_buckets AS m ON e.event_type = m.event_type AND e.b = m.b""",
    ]
    for name, cols in (("app", "exp_key, unit, ts_ms, variation"), ("trigger", "exp_key, unit, ts_ms, def_json"),
                       ("metric", "unit, event_type, ts_ms, amount")):
        stmts.append(f"CREATE TEMPORARY VIEW {p}_{name}s AS SELECT {cols} FROM "
                     f"TO_CHANGELOG(input => TABLE {p}_{name}_lookup) WHERE op = 'INSERT'")  # fmt: skip
    # Per (experiment, unit): the earliest trigger and the definition at the first to arrive. Its first
    # emission (INSERT) is the unit's first trigger: only that row goes to the assignment function
    # with a definition (the others, earlier triggers arriving late, only move trig_ts). One chain,
    # one consumer: the lookup join below is never planned twice.
    stmts.append(f"""
CREATE TEMPORARY VIEW {p}_trigger_units AS
SELECT {_ttl(tu=ttl)}exp_key, unit, MIN(ts_ms) AS trig_ts, FIRST_VALUE(def_json) AS def_json FROM {p}_triggers AS tu
GROUP BY exp_key, unit""")
    stmts.append(f"""
CREATE TEMPORARY VIEW {p}_stream_assigned AS
SELECT exp_key, unit, trig_ts, {assign_function}(unit, def_json) AS variation FROM (
  SELECT exp_key, unit, trig_ts, CASE WHEN op = 'INSERT' THEN def_json END AS def_json
  FROM TO_CHANGELOG(input => TABLE {p}_trigger_units) WHERE op IN ('INSERT', 'UPDATE_AFTER'))""")
    stmts.append(f"""
CREATE TEMPORARY VIEW {p}_exposure_units AS
SELECT {_ttl(ex=ttl)}exp_key, unit, MIN(app_key) AS app_key, MIN(trig_ts) AS trig_ts, MAX(stream_var) AS stream_var
FROM (
  SELECT exp_key, unit, ts_ms * 1024 + variation AS app_key, CAST(NULL AS BIGINT) AS trig_ts,
         CAST(NULL AS INT) AS stream_var FROM {p}_apps
  UNION ALL SELECT exp_key, unit, CAST(NULL AS BIGINT), trig_ts, variation FROM {p}_stream_assigned
) AS ex
GROUP BY exp_key, unit""")
    # app_key = ts * 1024 + variation: its MIN is the earliest app exposure and, on a tie, the lowest
    # variation (variation < 1024: definitions allow at most 1024 variants). stream_var -1 = not assigned.
    stmts.append(f"""
CREATE TEMPORARY VIEW {p}_exposed AS
SELECT exp_key, unit, variation, first_ts FROM (
  SELECT exp_key, unit,
    CASE WHEN app_key IS NOT NULL THEN CAST(MOD(app_key, 1024) AS INT) ELSE sv END AS variation,
    CASE WHEN sv IS NULL OR trig_ts IS NULL THEN app_key / 1024
         WHEN app_key IS NULL THEN trig_ts
         ELSE LEAST(app_key / 1024, trig_ts) END AS first_ts
  FROM (SELECT exp_key, unit, app_key, trig_ts, CASE WHEN stream_var >= 0 THEN stream_var END AS sv
        FROM {p}_exposure_units))
WHERE variation IS NOT NULL AND first_ts IS NOT NULL""")
    # The current definition's metric spec for every exposed unit (a regular join: a new version
    # re-evaluates the experiment's units; a deleted experiment retracts them).
    stmts.append(f"""
CREATE TEMPORARY VIEW {p}_exposed_defs AS
SELECT {_ttl(x=ttl, d=forever)}x.exp_key, x.unit, x.variation, x.first_ts, d.variants, d.conv_type, d.conv_window,
  d.rev_type, d.rev_window, d.cov_ms
FROM {p}_exposed AS x JOIN {p}_defs AS d ON x.exp_key = d.exp_key""")
    zero = "CAST(0 AS DECIMAL(18, 2))"
    stmts.append(f"""
CREATE TEMPORARY VIEW {p}_unit_stats AS
SELECT {_ttl(u=ttl)}exp_key, unit, variation, first_ts, variants,
  SUM(c) AS n_conv, SUM(y) AS y, SUM(cx) AS x
FROM (
  SELECT {_ttl(x=ttl, e=ttl)}x.exp_key AS exp_key, x.unit AS unit, x.variation AS variation,
    x.first_ts AS first_ts, x.variants AS variants,
    CASE WHEN e.event_type = x.conv_type AND e.ts_ms >= x.first_ts AND e.ts_ms < x.first_ts + x.conv_window
         THEN 1 ELSE 0 END AS c,
    CASE WHEN e.event_type = x.rev_type AND e.ts_ms >= x.first_ts AND e.ts_ms < x.first_ts + x.rev_window
         THEN e.amount ELSE {zero} END AS y,
    CASE WHEN x.cov_ms > 0 AND e.event_type = x.rev_type AND e.ts_ms < x.first_ts AND e.ts_ms >= x.first_ts - x.cov_ms
         THEN e.amount ELSE {zero} END AS cx
  FROM {p}_exposed_defs AS x LEFT JOIN {p}_metrics AS e ON x.unit = e.unit) AS u
GROUP BY exp_key, unit, variation, first_ts, variants""")
    stmts.append(f"""
CREATE TEMPORARY VIEW {p}_variant_stats AS
SELECT {_ttl(s=ttl)}exp_key, SPLIT_INDEX(variants, ',', variation) AS variant_key,
  COUNT(*) AS units,
  SUM(CASE WHEN n_conv > 0 THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END) AS converted,
  SUM(y) AS rev_sum, SUM(y * y) AS rev_sumsq, SUM(x) AS cov_sum, SUM(x * x) AS cov_sumsq, SUM(x * y) AS cov_rev_sum
FROM {p}_unit_stats AS s
GROUP BY exp_key, variation, variants""")
    # A variant whose last unit left (moved, or the experiment was deleted) ends in DELETE: zeros.
    alive = "op <> 'DELETE'"
    stmts.append(f"""
CREATE TEMPORARY VIEW {p}_store_rows AS
SELECT exp_key, variant_key,
  CASE WHEN {alive} THEN units ELSE CAST(0 AS BIGINT) END AS units,
  CASE WHEN {alive} THEN converted ELSE CAST(0 AS BIGINT) END AS converted,
  CASE WHEN {alive} THEN rev_sum ELSE CAST(0 AS DECIMAL(38, 2)) END AS rev_sum,
  CASE WHEN {alive} THEN rev_sumsq ELSE CAST(0 AS DECIMAL(38, 4)) END AS rev_sumsq,
  CASE WHEN {alive} THEN cov_sum ELSE CAST(0 AS DECIMAL(38, 2)) END AS cov_sum,
  CASE WHEN {alive} THEN cov_sumsq ELSE CAST(0 AS DECIMAL(38, 4)) END AS cov_sumsq,
  CASE WHEN {alive} THEN cov_rev_sum ELSE CAST(0 AS DECIMAL(38, 4)) END AS cov_rev_sum
FROM TO_CHANGELOG(input => TABLE {p}_variant_stats)
WHERE op IN ('INSERT', 'UPDATE_AFTER', 'DELETE')""")
    return stmts


class _Assigner:
    """The vectorised assignment function: (unit, definition record JSON) -> variation index (-1 = none).

    A definition with targeting first needs the unit's tags: the person's live tag set in Redis
    (``{prefix}:tags:{pid}``, written by the job from ``zt_tag_changes``), read once per batch in one
    pipelined round trip; then :func:`operators.experiments.control.eligible`, then GrowthBook's
    assignment. Without Redis settings every unit has no tags. Definitions are cached by their text.
    """

    def __init__(self, settings_json: str | None = None, redis_prefix: str | None = None) -> None:
        self.__name__ = "zt_exp_assign"
        self._settings_json = settings_json
        self._redis_prefix = redis_prefix
        self._tags: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tags": None}

    def _tags_of(self, units: list[str]) -> dict[str, frozenset[str]]:
        if not units or self._settings_json is None:
            return {}
        if self._tags is None:
            from config.settings import settings_from_json
            from connectors.redis_experiments import RedisPersonTags

            self._tags = RedisPersonTags(settings_from_json(self._settings_json).redis, self._redis_prefix)
        return self._tags.tags_of(units)

    def __call__(self, units: Any, records: Any) -> Any:
        import pandas as pd

        n = len(units)
        cols = [c.tolist() if isinstance(c, pd.Series) else [c] * n for c in (units, records)]
        defs = [definition_from_record(r) if r else None for r in cols[1]]
        tags = self._tags_of(sorted({u for u, d in zip(cols[0], defs, strict=True) if d is not None and d.targeting}))
        out = []
        for unit, d in zip(cols[0], defs, strict=True):
            v = assign(d, unit) if d is not None and eligible(d, tags.get(unit)) else None
            out.append(-1 if v is None else v)
        return pd.Series(out, dtype="int32")


def assign_udf(settings_json: str | None = None, *, redis_prefix: str | None = None
               ) -> UserDefinedScalarFunctionWrapper:  # fmt: skip
    """Pandas UDF ``(unit STRING, def_json STRING) -> INT``: the variation index, or -1 (not targeted,
    not in the experiment, or no definition). ``settings_json`` (+ ``redis_prefix``): where the person
    tags are, for targeting.

    Register it under the name passed to :func:`experiment_statements` (``zt_exp_assign``).
    Deterministic for a unit, definition and tag set, so replays assign identically.
    """
    from pyflink.table import DataTypes
    from pyflink.table.udf import udf

    s = DataTypes.STRING()
    return udf(_Assigner(settings_json, redis_prefix), input_types=[s, s], result_type=DataTypes.INT(),
               func_type="pandas", deterministic=False, name="zt_exp_assign")  # fmt: skip


class _RedisBatchWriter:
    """A pandas UDF body writing Arrow batches through ``connectors.redis_experiments`` (one BIGINT per row).

    The client is created on the first batch in the worker (never at import time, never pickled).
    """

    def __init__(self, name: str, settings_json: str, redis_prefix: str | None) -> None:
        self.__name__ = name
        self._settings_json = settings_json
        self._redis_prefix = redis_prefix
        self._store: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None}

    def _open(self) -> None:
        from config.settings import settings_from_json
        from connectors.redis_experiments import RedisExperiments

        settings = settings_from_json(self._settings_json)
        self._store = RedisExperiments(settings.redis, prefix=self._redis_prefix)

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def __call__(self, *cols: Any) -> Any:
        import pandas as pd

        if self._store is None:
            self._open()
        n = next(len(c) for c in cols if isinstance(c, pd.Series))
        lists = [c.tolist() if isinstance(c, pd.Series) else [c] * n for c in cols]
        rows = list(zip(*lists, strict=True))
        self._write(rows)
        return pd.Series([len(rows)] * len(rows), dtype="int64")


class ExperimentStoreWriter(_RedisBatchWriter):
    """Writes batches of ``{prefix}_store_rows`` (absolute per-variant values) to Redis; with
    ``definitions`` (a static set) the first batch also records their meta hashes."""

    def __init__(self, settings_json: str, definitions: Sequence[ExperimentDefinition] = (),
                 redis_prefix: str | None = None) -> None:  # fmt: skip
        super().__init__("zt_exp_store", settings_json, redis_prefix)
        self._definitions = tuple(definitions)

    def _open(self) -> None:
        super()._open()
        if self._definitions:
            self._store.write_meta(self._definitions)

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        from connectors.redis_experiments import ExperimentRow

        self._store.write([ExperimentRow(*r) for r in rows])


class _MetaWriter(_RedisBatchWriter):
    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        self._store.write_definition_rows([(k, p) for k, p in rows if k is not None])


def experiment_store_udf(settings_json: str, definitions: Sequence[ExperimentDefinition] = (), *,
                         redis_prefix: str | None = None) -> UserDefinedScalarFunctionWrapper:  # fmt: skip
    """Pandas UDF over :data:`EXPERIMENT_STORE_COLUMNS` -> BIGINT that writes them to Redis.

    Use: ``INSERT INTO <blackhole> SELECT zt_exp_store(<columns>) FROM {prefix}_store_rows``.
    Non-deterministic so that the planner never folds or drops it.
    """
    from pyflink.table import DataTypes
    from pyflink.table.udf import udf

    s, d2, d4 = DataTypes.STRING(), DataTypes.DECIMAL(38, 2), DataTypes.DECIMAL(38, 4)
    return udf(
        ExperimentStoreWriter(settings_json, definitions, redis_prefix),
        input_types=[s, s, DataTypes.BIGINT(), DataTypes.BIGINT(), d2, d4, d2, d4, d4],
        result_type=DataTypes.BIGINT(),
        func_type="pandas",
        deterministic=False,
        name="zt_exp_store",
    )


def experiment_meta_udf(settings_json: str, *, redis_prefix: str | None = None) -> UserDefinedScalarFunctionWrapper:
    """Pandas UDF ``(exp_key, packed) -> BIGINT`` recording definition rows in the Redis meta hashes
    (``RedisExperiments.write_definition_rows``: version-guarded, so replays and restores are safe)."""
    from pyflink.table import DataTypes
    from pyflink.table.udf import udf

    s = DataTypes.STRING()
    return udf(_MetaWriter("zt_exp_meta", settings_json, redis_prefix), input_types=[s, s],
               result_type=DataTypes.BIGINT(), func_type="pandas", deterministic=False, name="zt_exp_meta")  # fmt: skip
