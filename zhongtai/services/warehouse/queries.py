"""Queries over the archive: run one, the shipped examples, and the live counters recomputed from it.

``run_sql(settings, sql)`` opens the warehouse of ``settings`` (``connectors.archive.warehouse_url``; a local
folder) and returns the columns and rows. ``EXAMPLES`` are the queries ``zhongtai sql --example NAME`` runs
(docs/warehouse.md shows each, and the same tables from Spark, Trino and Hive). ``LIVE_COUNTERS`` computes
the job's live counters (docs/semantics.md, "Live counters") from the archived events: per
``campaign|channel`` (escaped as ``operators.scopes.scope_key``) and ``all``, per minute, the same fields
Redis holds; tests/integration/test_warehouse.py compares the two exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import Settings


@dataclass(frozen=True)
class Result:
    columns: list[str]
    rows: list[tuple[Any, ...]]


def _escape(col: str) -> str:
    """``operators.scopes._escape`` in DuckDB SQL: ``\\`` → ``\\\\``, then ``|`` → ``\\|``."""
    return f"replace(replace({col}, '\\', '\\\\'), '|', '\\|')"


#: The live counters from the archive: scope, minute label (YYYYMMDDHHMM, UTC) and the counter hash's fields.
#: ``persons`` counts distinct anchors (the counters' ``person``), ``revenue`` has 2 decimals. The string
#: concatenation ``||`` is NULL when a part is, like Flink's CONCAT: such events count only in ``all``.
LIVE_COUNTERS = f"""
WITH scoped AS (
  SELECT 'all' AS scope, ts_ms // 60000 AS mb, event_type, amount, anchor FROM events
  UNION ALL
  SELECT {_escape("campaign")} || '|' || {_escape("channel")}, ts_ms // 60000, event_type, amount, anchor
  FROM events)
SELECT scope, strftime(make_timestamp(mb * 60000000), '%Y%m%d%H%M') AS minute,
       count(*) FILTER (WHERE event_type = 'page_view') AS views,
       count(*) FILTER (WHERE event_type = 'add_to_cart') AS carts,
       count(*) FILTER (WHERE event_type = 'purchase') AS purchases,
       count(*) AS events,
       count(DISTINCT anchor) AS persons,
       CAST(coalesce(sum(amount), 0) AS DECIMAL(38, 2)) AS revenue
FROM scoped WHERE scope IS NOT NULL
GROUP BY scope, mb ORDER BY scope, mb"""

EXAMPLES: dict[str, tuple[str, str]] = {
    "funnel": ("views → carts → purchases per campaign × channel, with the conversion rates", """
SELECT campaign, channel,
       count(DISTINCT anchor) FILTER (WHERE event_type = 'page_view') AS viewers,
       count(DISTINCT anchor) FILTER (WHERE event_type = 'add_to_cart') AS carters,
       count(DISTINCT anchor) FILTER (WHERE event_type = 'purchase') AS buyers,
       round(carters / nullif(viewers, 0), 3) AS view_to_cart,
       round(buyers / nullif(carters, 0), 3) AS cart_to_purchase,
       sum(amount) FILTER (WHERE event_type = 'purchase') AS gmv
FROM events GROUP BY campaign, channel ORDER BY gmv DESC NULLS LAST, campaign, channel"""),
    "cohorts": ("retention by first-seen week: persons of each cohort active N weeks later", """
WITH act AS (
  SELECT p.person, date_trunc('week', make_timestamp(e.ts_ms * 1000)) AS wk
  FROM events e JOIN event_persons p USING (event_id)),
first AS (SELECT person, min(wk) AS cohort FROM act GROUP BY person)
SELECT CAST(f.cohort AS DATE) AS cohort_week, datediff('week', f.cohort, a.wk) AS week,
       count(DISTINCT a.person) AS active,
       round(count(DISTINCT a.person) / max(count(DISTINCT a.person)) OVER (PARTITION BY f.cohort), 3) AS share
FROM act a JOIN first f USING (person)
GROUP BY f.cohort, week ORDER BY cohort_week, week"""),
    "roi": ("per campaign: actions sent and suppressed, delivered, attributed conversions and GMV", """
WITH a AS (SELECT action_id, rule_id, status, json_extract_string(payload, '$.campaign') AS campaign FROM actions),
d AS (SELECT DISTINCT action_id FROM receipts WHERE status = 'delivered'),
c AS (SELECT action_id, count(*) AS conversions, sum(amount) AS gmv FROM conversions GROUP BY action_id)
SELECT coalesce(a.campaign, '(none)') AS campaign,
       count(*) FILTER (WHERE a.status = 'sent') AS sent,
       count(*) FILTER (WHERE a.status = 'suppressed') AS suppressed,
       count(d.action_id) AS delivered,
       coalesce(sum(c.conversions), 0) AS conversions,
       coalesce(sum(c.gmv), 0) AS attributed_gmv,
       round(coalesce(sum(c.gmv), 0) / nullif(count(*) FILTER (WHERE a.status = 'sent'), 0), 2) AS gmv_per_send
FROM a LEFT JOIN d USING (action_id) LEFT JOIN c USING (action_id)
GROUP BY 1 ORDER BY attributed_gmv DESC, campaign"""),
    "dlq": ("rejected records per day and reason", """
SELECT dt AS day, reason, count(*) AS records, sum(value_bytes) AS bytes
FROM dlq GROUP BY dt, reason ORDER BY dt, records DESC, reason"""),
}


def _root(settings: Settings, warehouse: str | None) -> Path:
    from connectors.archive import local_root, warehouse_url

    return local_root(warehouse or warehouse_url(settings))


def run_sql(settings: Settings, sql: str, *, warehouse: str | None = None) -> Result:
    """``sql`` (DuckDB's dialect) over the warehouse of ``settings`` (or the URL/folder ``warehouse``).

    Raises ``FileNotFoundError`` when the warehouse has no committed file yet, and DuckDB's own errors for
    the query (their messages name the table or column)."""
    from connectors.archive import connect, present_tables

    root = _root(settings, warehouse)
    if not present_tables(root):
        raise FileNotFoundError(f"the warehouse {root} has no archived table yet: run the job with "
                                "archive.enabled: true (ZT__ARCHIVE__ENABLED=true) and let a checkpoint complete")
    con = connect(root)
    try:
        cur = con.execute(sql)
        columns = [d[0] for d in cur.description] if cur.description else []
        return Result(columns, cur.fetchall() if columns else [])
    finally:
        con.close()


def live_counters(settings: Settings, *, warehouse: str | None = None) -> dict[str, dict[str, str]]:
    """The live counters recomputed from the archive, keyed like ``RedisStore.all_counters()``
    (``<scope>:<YYYYMMDDHHMM>``), values as Redis holds them (strings)."""
    res = run_sql(settings, LIVE_COUNTERS, warehouse=warehouse)
    fields = res.columns[2:]
    return {f"{r[0]}:{r[1]}": {f: str(v) for f, v in zip(fields, r[2:], strict=True)} for r in res.rows}
