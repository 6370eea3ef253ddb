"""Streaming per-variant experiment statistics as Flink SQL views (exact, on the JVM).

``experiment_statements(definitions, source_view)`` returns ``CREATE TEMPORARY VIEW`` statements;
the last view, ``{prefix}_store_rows``, has :data:`EXPERIMENT_STORE_COLUMNS` and carries absolute
values as upserts (one row per change of an experiment x variant, ``INSERT``/``UPDATE_AFTER``,
and zeros after a ``DELETE``), like ``zt_store_rows`` in ``pipelines.events``.

``source_view`` columns: ``event_type STRING, ts_ms BIGINT, unit STRING, amount DECIMAL(18, 2),
exp_key STRING, variation INT``; ``exposure`` events from apps carry ``exp_key``/``variation``.
It must be append-only (``zt_unique`` is). ``unit`` is the id the experiments hash: call once per
unit type (person, device) with a source view of that id and a distinct ``prefix``.

What the views compute, per experiment (all per-event work is SQL):

1. exposures: app ``exposure`` events with a known key, a variation index in range and an event
   time in [start, stop); and, for experiments with ``assign_on``, the unit's events of those
   types in [start, stop) ("triggers");
2. stream assignment: the first trigger per (experiment, unit) to *arrive* (keep-first dedup, so
   Python is called once per unit and experiment, never per event) goes through
   :func:`assign_udf` (GrowthBook assignment, ``operators.experiments.definitions.assign``);
3. per (experiment, unit): variation and first exposure time. The variation is the one of the
   unit's earliest app exposure (ties: the lowest index), else the stream's; the first exposure
   time is the earliest of its app exposures and (when the stream assigned it) its triggers.
   Both are exact under any arrival order: earlier exposures arriving late move the unit;
4. per unit: its conversion and revenue events (a regular join on ``unit``) split at the first
   exposure: ``converted`` = a conversion event at or after exposure (within the window),
   ``y`` = post-exposure revenue (within the window), ``x`` = revenue in the ``covariate_days``
   before exposure (CUPED covariate). Grouped by (experiment, unit, variation, first_ts), so a
   unit whose exposure moves is retracted from its old group;
5. per (experiment, variant): units, converted, sum y, sum y^2, sum x, sum x^2, sum x*y (DECIMAL,
   exact), which are :class:`operators.experiments.stats.VariantStats`.

State (see docs/experiments.md): per (experiment, unit) a few numbers in steps 2-4, plus the join's
copy of every conversion/revenue event of every unit (exposed or not yet) for ``state_ttl_ms``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from operators.experiments.definitions import ExperimentDefinition, assign

if TYPE_CHECKING:  # pragma: no cover
    from pyflink.table.udf import UserDefinedScalarFunctionWrapper

__all__ = [
    "EXPERIMENT_STORE_COLUMNS",
    "SOURCE_COLUMNS",
    "ExperimentStoreWriter",
    "assign_udf",
    "default_state_ttl_ms",
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

#: Stand-in for "no window": ~31,700 years in ms (keeps ``first_ts + window`` within BIGINT).
_NO_WINDOW_MS = 10**15
#: State TTL when an experiment has no stop time.
_OPEN_ENDED_TTL_MS = 180 * 86_400_000
_EXPOSURE = "exposure"


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _in(values: Sequence[str]) -> str:
    return ", ".join(_lit(v) for v in values)


def _window_pred(d: ExperimentDefinition, ts: str = "ts_ms") -> str:
    """``ts`` within the experiment's [start, stop)."""
    preds = []
    if d.experiment.start_ms is not None:
        preds.append(f"{ts} >= {d.experiment.start_ms}")
    if d.experiment.stop_ms is not None:
        preds.append(f"{ts} < {d.experiment.stop_ms}")
    return " AND ".join(preds) or "TRUE"


def _hint(alias: str, ttl_ms: int | None) -> str:
    return "" if ttl_ms is None else f"/*+ STATE_TTL({_lit(alias)} = {_lit(f'{ttl_ms} ms')}) */ "


def default_state_ttl_ms(definitions: Sequence[ExperimentDefinition]) -> int:
    """How long per-unit state must live: the longest run + metric window + covariate lookback
    (180 days for an experiment without start or stop)."""
    ttl = 0
    for d in definitions:
        e = d.experiment
        run = _OPEN_ENDED_TTL_MS if e.start_ms is None or e.stop_ms is None else e.stop_ms - e.start_ms
        window = max(d.conversion.window_ms or _OPEN_ENDED_TTL_MS, d.revenue.window_ms or _OPEN_ENDED_TTL_MS)
        ttl = max(ttl, run + window + d.covariate_ms)
    return ttl


def experiment_statements(
    definitions: Sequence[ExperimentDefinition],
    source_view: str,
    *,
    prefix: str = "zt_exp",
    assign_function: str = "zt_exp_assign",
    state_ttl_ms: int | None = None,
) -> list[str]:
    """``CREATE TEMPORARY VIEW`` statements ending in ``{prefix}_store_rows`` (see the module doc).

    ``assign_function`` names the registered :func:`assign_udf` (needed only when a definition has
    ``assign_on``). ``state_ttl_ms`` (default :func:`default_state_ttl_ms`) becomes ``STATE_TTL``
    hints on the per-unit join and aggregates, so they outlive the job's shorter global TTL.
    """
    defs = sorted(definitions, key=lambda d: d.key)
    if not defs:
        raise ValueError("experiment_statements: no definitions; leave the experiment views out instead")
    units = {d.unit for d in defs}
    if len(units) > 1:
        raise ValueError(
            f"experiment_statements: definitions hash different units {sorted(units)}; call once per unit "
            "with a source view keyed by that unit and a distinct prefix"
        )
    ttl = default_state_ttl_ms(defs) if state_ttl_ms is None else state_ttl_ms
    p = prefix
    stmts: list[str] = []

    app_preds = " OR ".join(
        f"(exp_key = {_lit(d.key)} AND variation >= 0 AND variation < {len(d.variations)} AND {_window_pred(d)})"
        for d in defs
    )
    stmts.append(f"""
CREATE TEMPORARY VIEW {p}_app_exposures AS
SELECT exp_key, unit, ts_ms, variation FROM {source_view}
WHERE event_type = {_lit(_EXPOSURE)} AND unit IS NOT NULL AND unit <> '' AND ts_ms >= 0
  AND ({app_preds})""")

    branches = [
        (
            f"SELECT exp_key, unit, ts_ms * 1024 + variation AS app_key, CAST(NULL AS BIGINT) AS trig_ts, "
            f"CAST(NULL AS INT) AS stream_var FROM {p}_app_exposures"
        )
    ]
    streamed = [d for d in defs if d.assign_on]
    if streamed:
        trigger_selects = "\n  UNION ALL ".join(
            f"SELECT CAST({_lit(d.key)} AS STRING) AS exp_key, unit, ts_ms FROM {source_view} "
            f"WHERE event_type IN ({_in(d.assign_on)}) AND unit IS NOT NULL AND unit <> '' "
            f"AND ts_ms IS NOT NULL AND {_window_pred(d)}"
            for d in streamed
        )
        stmts.append(f"""
CREATE TEMPORARY VIEW {p}_triggers AS
  {trigger_selects}""")
        # Keep-first on arrival (append-only once TO_CHANGELOG states it): one Python call per
        # (experiment, unit). Which trigger arrives first does not matter: assignment is timeless.
        stmts.append(f"""
CREATE TEMPORARY VIEW {p}_first_trigger AS
SELECT exp_key, unit FROM (
  SELECT exp_key, unit, ROW_NUMBER() OVER (PARTITION BY exp_key, unit ORDER BY pt ASC) AS rn
  FROM (SELECT exp_key, unit, PROCTIME() AS pt FROM {p}_triggers))
WHERE rn = 1""")
        stmts.append(f"""
CREATE TEMPORARY VIEW {p}_stream_assigned AS
SELECT exp_key, unit, {assign_function}(unit, exp_key) AS variation
FROM (SELECT exp_key, unit FROM TO_CHANGELOG(input => TABLE {p}_first_trigger) WHERE op = 'INSERT')""")
        branches.append(f"SELECT exp_key, unit, CAST(NULL AS BIGINT), ts_ms, CAST(NULL AS INT) FROM {p}_triggers")
        branches.append(
            f"SELECT exp_key, unit, CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), variation FROM {p}_stream_assigned"
        )
    union = "\n  UNION ALL ".join(branches)
    stmts.append(f"""
CREATE TEMPORARY VIEW {p}_exposure_units AS
SELECT {_hint('ex', ttl)}exp_key, unit, MIN(app_key) AS app_key, MIN(trig_ts) AS trig_ts, MAX(stream_var) AS stream_var
FROM (
  {union}) AS ex
GROUP BY exp_key, unit""")
    # app_key = ts * 1024 + variation: its MIN is the earliest app exposure and, on a tie, the lowest
    # variation (variation < 1024 by construction of the filter above). stream_var -1 = not assigned.
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

    metric_types = sorted({t for d in defs for t in (d.conversion.event_type, d.revenue.event_type)})
    stmts.append(f"""
CREATE TEMPORARY VIEW {p}_metric_events AS
SELECT unit, event_type, ts_ms, COALESCE(amount, CAST(0 AS DECIMAL(18, 2))) AS amount FROM {source_view}
WHERE event_type IN ({_in(metric_types)}) AND unit IS NOT NULL AND unit <> '' AND ts_ms IS NOT NULL""")

    def per_exp(cond: Any) -> str:
        return " OR ".join(f"(x.exp_key = {_lit(d.key)} AND {cond(d)})" for d in defs)

    conv = per_exp(lambda d: f"e.event_type = {_lit(d.conversion.event_type)} AND e.ts_ms >= x.first_ts "
                             f"AND e.ts_ms < x.first_ts + {d.conversion.window_ms or _NO_WINDOW_MS}")  # fmt: skip
    rev = per_exp(lambda d: f"e.event_type = {_lit(d.revenue.event_type)} AND e.ts_ms >= x.first_ts "
                            f"AND e.ts_ms < x.first_ts + {d.revenue.window_ms or _NO_WINDOW_MS}")  # fmt: skip
    cov_defs = [d for d in defs if d.covariate_days > 0]
    cov = " OR ".join(
        f"(x.exp_key = {_lit(d.key)} AND e.event_type = {_lit(d.revenue.event_type)} AND e.ts_ms < x.first_ts "
        f"AND e.ts_ms >= x.first_ts - {d.covariate_ms})"
        for d in cov_defs
    ) or "FALSE"
    zero = "CAST(0 AS DECIMAL(18, 2))"
    stmts.append(f"""
CREATE TEMPORARY VIEW {p}_unit_stats AS
SELECT {_hint('u', ttl)}exp_key, unit, variation, first_ts,
  SUM(c) AS n_conv, SUM(y) AS y, SUM(cx) AS x
FROM (
  SELECT {_join_hint(ttl)}x.exp_key AS exp_key, x.unit AS unit, x.variation AS variation, x.first_ts AS first_ts,
    CASE WHEN {conv} THEN 1 ELSE 0 END AS c,
    CASE WHEN {rev} THEN e.amount ELSE {zero} END AS y,
    CASE WHEN {cov} THEN e.amount ELSE {zero} END AS cx
  FROM {p}_exposed AS x LEFT JOIN {p}_metric_events AS e ON x.unit = e.unit) AS u
GROUP BY exp_key, unit, variation, first_ts""")

    names = " ".join(
        f"WHEN exp_key = {_lit(d.key)} AND variation = {i} THEN CAST({_lit(v)} AS STRING)"
        for d in defs
        for i, v in enumerate(d.variations)
    )
    stmts.append(f"""
CREATE TEMPORARY VIEW {p}_variant_stats AS
SELECT {_hint('s', ttl)}exp_key, CASE {names} END AS variant_key,
  COUNT(*) AS units,
  SUM(CASE WHEN n_conv > 0 THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END) AS converted,
  SUM(y) AS rev_sum, SUM(y * y) AS rev_sumsq, SUM(x) AS cov_sum, SUM(x * x) AS cov_sumsq, SUM(x * y) AS cov_rev_sum
FROM {p}_unit_stats AS s
GROUP BY exp_key, variation""")
    # A variant whose last unit moved to another variant ends in DELETE: written as zeros.
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


def _join_hint(ttl_ms: int | None) -> str:
    if ttl_ms is None:
        return ""
    t = _lit(f"{ttl_ms} ms")
    return f"/*+ STATE_TTL('x' = {t}, 'e' = {t}) */ "


class _Assigner:
    """The vectorised assignment function: (unit, exp_key) batches -> variation index (-1 = not in it).

    A plain callable (the vectorised path takes a function), holding frozen definitions only.
    """

    def __init__(self, definitions: Sequence[ExperimentDefinition]) -> None:
        self.__name__ = "zt_exp_assign"
        self._defs = {d.key: d for d in definitions}

    def __call__(self, units: Any, keys: Any) -> Any:
        import pandas as pd

        n = len(units)
        key_list = keys.tolist() if isinstance(keys, pd.Series) else [keys] * n
        out = []
        for unit, key in zip(units.tolist(), key_list, strict=True):
            d = self._defs.get(key)
            v = assign(d, unit) if d is not None else None
            out.append(-1 if v is None else v)
        return pd.Series(out, dtype="int32")


def assign_udf(definitions: Sequence[ExperimentDefinition]) -> UserDefinedScalarFunctionWrapper:
    """Pandas UDF ``(unit STRING, exp_key STRING) -> INT``: the GrowthBook variation index, or -1.

    Register it under the name passed to :func:`experiment_statements` (``zt_exp_assign``).
    Deterministic (same unit, same variation), so replays assign identically.
    """
    from pyflink.table import DataTypes
    from pyflink.table.udf import udf

    return udf(
        _Assigner(definitions),
        input_types=[DataTypes.STRING(), DataTypes.STRING()],
        result_type=DataTypes.INT(),
        func_type="pandas",
        name="zt_exp_assign",
    )


class ExperimentStoreWriter:
    """Writes Arrow batches of ``{prefix}_store_rows`` to Redis (``connectors.redis_experiments``).

    Returns the batch size per row. The client is created on the first batch in the worker (never
    at import time, never pickled); that first batch also records the definitions' meta hashes.
    """

    def __init__(self, settings_json: str, definitions: Sequence[ExperimentDefinition],
                 redis_prefix: str | None = None) -> None:  # fmt: skip
        self.__name__ = "zt_exp_store"
        self._settings_json = settings_json
        self._definitions = tuple(definitions)
        self._redis_prefix = redis_prefix
        self._store: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None}

    def _open(self) -> None:
        from config.settings import Settings
        from connectors.redis_experiments import RedisExperiments

        settings = Settings.model_validate_json(self._settings_json)
        self._store = RedisExperiments(settings.redis, prefix=self._redis_prefix)
        self._store.write_meta(self._definitions)

    def __call__(self, *cols: Any) -> Any:
        import pandas as pd

        from connectors.redis_experiments import ExperimentRow

        if self._store is None:
            self._open()
        n = next(len(c) for c in cols if isinstance(c, pd.Series))
        lists = [c.tolist() if isinstance(c, pd.Series) else [c] * n for c in cols]
        rows = [ExperimentRow(*vals) for vals in zip(*lists, strict=True)]
        self._store.write(rows)
        return pd.Series([len(rows)] * len(rows), dtype="int64")


def experiment_store_udf(settings_json: str, definitions: Sequence[ExperimentDefinition], *,
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
