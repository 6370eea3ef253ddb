"""The strategy engine's outputs in the event job: the actions' Kafka sink, their counters and audit rows.

The engine itself runs in the person operator (``pipelines.person``); the composition root
(``pipelines.job``) wires these statements to its views. Actions go to ``zt.actions.<channel>``
through ONE transactional Kafka sink whose topic is a column (exactly once for read_committed
consumers: the channel workers); every emitted and suppressed action is recorded in HBase ``actions`` (row = action_id) and live counters per rule × channel and per
suppression reason go to Redis (``{prefix}:actions`` hash, absolute values from Flink state).

Kafka record timestamps of actions (and of tag / identity changes) are the write time: their event
times can lie ahead of the broker clock (timers, quiet-hour holds) and the broker rejects records
beyond ``message.timestamp.after.max.ms``; the event time is in the payload.

With rules on, conversions are attributed to the delivered actions that preceded them
(``pipelines.attribution``: the delivery receipts topic read back, ``RunOptions.attribution``).

Opt-in (``RunOptions(rules=True)``, ``zhongtai run --rules``): measured at ~2k events/s on this
2-core machine (docs/rules_job.md, docs/performance.md: measured again in session 6) because most events reach the Python engine (the job's other Python
operators, identity and tags, are the limit without it: docs/performance.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from connectors.channels.base import CHANNELS
from connectors.kafka_security import table_properties

if TYPE_CHECKING:  # pragma: no cover

    from config.settings import Settings
    from operators.rules.registry import RuleSet

RULES_FILE = Path(__file__).resolve().parent.parent / "config" / "rules.yaml"

__all__ = ["ACTIONS_DELIVERY", "CHANNELS", "RULES_FILE", "actions_insert", "actions_sink_ddl", "load_ruleset",
           "rule_store_rows"]

#: The sink's delivery guarantees (at-least-once only for the kill test's negative control).
ACTIONS_DELIVERY = ("exactly-once", "at-least-once")


def actions_sink_ddl(name: str, settings: Settings, transactional_id_prefix: str, prefix: str, *,
                     delivery: str = "exactly-once") -> str:
    """One transactional sink for every channel: the ``topic`` column picks ``<prefix><channel>`` among the
    declared topics (the connector needs them listed).

    ``delivery="at-least-once"`` writes without transactions (records are visible at once and a replay
    after a failure writes them again): only the kill test's negative control (``RunOptions.actions_control_prefix``) uses it."""
    if delivery not in ACTIONS_DELIVERY:
        raise ValueError(f"actions sink: delivery {delivery!r} is not one of {', '.join(ACTIONS_DELIVERY)}; "
                         "use exactly-once (the default) unless you are testing duplicates")
    k = settings.kafka
    topics = ";".join(f"{prefix}{c}" for c in CHANNELS)
    client = "".join(f"\n  '{key}' = '{value}'," for key, value in table_properties(k).items())
    if delivery == "at-least-once":
        guarantee = "'sink.delivery-guarantee' = 'at-least-once'"
    else:
        guarantee = f"""'sink.delivery-guarantee' = 'exactly-once',
  'sink.transactional-id-prefix' = '{transactional_id_prefix}'"""
    return f"""
CREATE TEMPORARY TABLE {name} (
  payload BYTES,
  `topic` STRING METADATA,
  headers MAP<STRING, BYTES> METADATA,
  ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp'
) WITH (
  'connector' = 'kafka',
  'topic' = '{topics}',{client}
  'format' = 'raw',
  {guarantee},
  'properties.transaction.timeout.ms' = '{k.transaction_timeout_ms}'
)"""


def actions_insert(sink: str, prefix: str) -> str:
    """Every ``zt_actions`` row to ``<prefix><channel>`` of ``sink`` (headers: action id, person)."""
    return f"""
INSERT INTO {sink}
SELECT ENCODE(payload, 'UTF-8'), CONCAT('{prefix}', channel),
       MAP['zt.action_id', ENCODE(action_id, 'UTF-8'), 'zt.person', ENCODE(person, 'UTF-8')],
       CAST(NULL AS TIMESTAMP_LTZ(3))
FROM zt_actions"""


def load_ruleset(rules_file: str | Path | None = None) -> RuleSet:
    """The rule set a job starts with (``config/rules.yaml`` by default), validated."""
    from operators.rules.registry import RuleSet
    from operators.rules.schema import load_file

    return RuleSet.from_definitions(load_file(rules_file or RULES_FILE))


def rule_store_rows() -> list[str]:
    """Counters and audit rows of the engine's outputs, in ``zt_store_rows``' shape (kinds ``ac`` =
    counter ``<rule>|<channel>`` or ``suppressed:<reason>``, ``ax`` = action audit row)."""
    zero = "CAST(0 AS BIGINT)"
    none_amount = "CAST(0 AS DECIMAL(38, 2))"
    counts = """
CREATE TEMPORARY VIEW zt_rule_counts AS
SELECT k, COUNT(*) AS n FROM (
  SELECT CONCAT(rule_id, '|', channel) AS k FROM zt_actions
  UNION ALL SELECT CONCAT('suppressed:', reason) AS k FROM zt_suppressed)
GROUP BY k"""
    return [counts, f"""
CREATE TEMPORARY VIEW zt_rule_rows AS
SELECT kind, k, bucket, n1, n2, n3, n4, n5, amount, t1, t2, t3, s1 FROM (
  SELECT op, 'ac' AS kind, k, {zero} AS bucket, n AS n1, {zero} AS n2, {zero} AS n3, {zero} AS n4, {zero} AS n5,
         {none_amount} AS amount, {zero} AS t1, {zero} AS t2, {zero} AS t3, CAST(NULL AS STRING) AS s1
  FROM TO_CHANGELOG(input => TABLE zt_rule_counts)
  UNION ALL
  SELECT 'INSERT', 'ax', action_id, ts_ms, 1, {zero}, {zero}, {zero}, {zero}, {none_amount}, {zero}, {zero}, {zero},
         payload FROM zt_actions
  UNION ALL
  SELECT 'INSERT', 'ax', action_id, ts_ms, 0, {zero}, {zero}, {zero}, {zero}, {none_amount}, {zero}, {zero}, {zero},
         payload FROM zt_suppressed)
WHERE op IN ('INSERT', 'UPDATE_AFTER')"""]
