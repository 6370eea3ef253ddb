"""``zhongtai replay``: a rule set over archived events, through the same job graph on a bounded source.

What-if for a rule author: which actions would this rule set (a new version, a draft) have sent over the
events of ``[from, to)``, which would its guard rails have suppressed and why, and whom would it have reached
— sending nothing.

How: the window's records are read from the archive's ``records`` table (the original bytes, as the job
received them) in their arrival order (DuckDB writes them into one file of a scratch folder: each Kafka
partition in offset order, the partitions merged by time), and the whole event job of ``pipelines.job`` runs over that file as a bounded
source on the embedded mini-cluster: the same decode, dedup, identity graph, profile, tags and strategy
engine with its guard rails (``operators.rules``). Its sinks are blackholes (nothing reaches Kafka, Redis or
HBase); only the engine's decisions (``zt_actions`` and ``zt_suppressed``) are written, by the archive
stage's own ``actions`` table, to the scratch folder, and summarised from there.

The replay starts with empty state at ``from``: the profile, tags, caps and identity graph know only the
window's events (start the window earlier to warm them up). Over the same records, rule set and settings it
decides what the live job decided (tests/integration/test_warehouse.py compares them action by action).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import Settings

logger = logging.getLogger(__name__)

#: The source columns the job's decode reads (``pipelines.decode``), as the replay file has them.
_RECORD_COLUMNS = [("payload", "BYTES"), ("rkey", "BYTES"), ("topic", "STRING"), ("part", "INT"), ("off", "BIGINT"),
                   ("kts", "TIMESTAMP(3)"), ("dt", "STRING")]
_PREFIX = "zt.replay."  # the actions' (blackhole) topic prefix: nothing is written to Kafka


@dataclass(frozen=True)
class ReplayReport:
    """What the rule set would have done: per ``rule|channel`` the actions sent, per reason the suppressions,
    the distinct persons a sent action reached, and every decision (``DECISION_COLUMNS``: status, action_id,
    rule, channel, person, reason, ts_ms and the triggering event's id) sorted by action id."""

    records: int
    sent: dict[str, int]
    suppressed: dict[str, int]
    persons_reached: int
    decisions: list[tuple[Any, ...]] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"records": self.records, "sent": self.sent, "suppressed": self.suppressed,
                "persons_reached": self.persons_reached, "actions": sum(self.sent.values())}


#: The decisions of an ``actions`` table: the columns of ``ReplayReport.decisions``.
DECISION_COLUMNS = ("status", "action_id", "rule_id", "channel", "person", "reason", "ts_ms", "trigger")
DECISIONS_SQL = ("SELECT status, action_id, rule_id, channel, person, reason, ts_ms, "
                 "coalesce(json_extract_string(payload, '$.trigger.event_id'), "
                 "json_extract_string(payload, '$.trigger.type')) AS trigger FROM actions ORDER BY action_id, status")


def _window_file(root: Path, out: Path, t_from: int, t_to: int) -> int:
    """The window's records, in arrival order, as one Parquet file ``out/records/dt=all/part-0``."""
    from connectors.archive import connect

    con = connect(root)
    try:
        target = out / "records" / "dt=all"
        target.mkdir(parents=True)
        path = str(target / "part-0").replace("'", "''")
        # Each partition in offset order (its arrival order), the partitions merged by the newest Kafka time
        # seen so far in each (a record's own timestamp may lie in the past: the producer sets it).
        con.execute(f"""
COPY (SELECT payload, rkey, topic, part, off, kts FROM (
        SELECT *, max(kts) OVER (PARTITION BY topic, part ORDER BY off ROWS UNBOUNDED PRECEDING) AS seen
        FROM records WHERE ts_ms >= {int(t_from)} AND ts_ms < {int(t_to)})
      ORDER BY seen, topic, part, off)
TO '{path}' (FORMAT parquet)""")
        n = con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()
        return int(n[0]) if n else 0
    finally:
        con.close()


def _blackholes(t_env: Any) -> None:
    from connectors.kafka_tables import STORE_LOG_COLUMNS

    store = ", ".join(f"{c} {t}" for c, t in STORE_LOG_COLUMNS)
    for name, cols in (
        ("zt_replay_dlq", "payload BYTES, rkey BYTES, headers MAP<STRING, BYTES>, ts TIMESTAMP_LTZ(3)"),
        ("zt_replay_actions", "payload BYTES, topic STRING, headers MAP<STRING, BYTES>, ts TIMESTAMP_LTZ(3)"),
        ("zt_replay_store", store),
    ):
        t_env.execute_sql(f"CREATE TEMPORARY TABLE {name} ({cols}) WITH ('connector' = 'blackhole')")


def _summarise(out: Path, records: int) -> ReplayReport:
    from connectors.archive import connect

    con = connect(out)
    try:
        rows = con.execute(DECISIONS_SQL).fetchall()
    finally:
        con.close()
    sent: dict[str, int] = {}
    suppressed: dict[str, int] = {}
    for status, _aid, rule, channel, _p, reason, _ts, _trigger in rows:
        if status == "sent":
            sent[f"{rule}|{channel}"] = sent.get(f"{rule}|{channel}", 0) + 1
        else:
            suppressed[reason] = suppressed.get(reason, 0) + 1
    persons = len({r[4] for r in rows if r[0] == "sent"})
    return ReplayReport(records, dict(sorted(sent.items())), dict(sorted(suppressed.items())), persons, rows)


def replay(settings: Settings, rules_file: str, t_from: int, t_to: int, *, warehouse: str | None = None,
           scratch: str | None = None) -> ReplayReport:
    """Run the rule set of ``rules_file`` over the archived records with ``t_from <= ts_ms < t_to`` (see the
    module docstring); ``warehouse`` defaults to ``connectors.archive.warehouse_url(settings)``. Raises
    ``FileNotFoundError`` when the warehouse has no records, ``ValueError`` for an empty window."""
    from connectors.archive import local_root, present_tables, source_ddl, warehouse_url
    from pipelines.actions import load_ruleset
    from pipelines.archive import attach_archive
    from pipelines.job import JobPlan, JobTables, build_job
    from zhongtai.jobs.runner import RunOptions, connector_jars, execute, make_envs, reset_sql_node_ids

    if t_to <= t_from:
        raise ValueError(f"replay: the window is empty (--from {t_from} is not before --to {t_to})")
    root = local_root(warehouse or warehouse_url(settings))
    if "records" not in present_tables(root):
        raise FileNotFoundError(f"the warehouse {root} has no archived records: run the job with "
                                "archive.enabled: true first (docs/warehouse.md)")
    ruleset = load_ruleset(rules_file)  # validated before the JVM starts: a bad file fails fast
    out = Path(tempfile.mkdtemp(prefix="zt-replay-", dir=scratch))
    try:
        n = _window_file(root, out, t_from, t_to)
        if n == 0:
            raise ValueError(f"replay: the warehouse {root} has no records with {t_from} <= ts_ms < {t_to}")
        # the job's own settings with nothing else switched on: no archive of the replay itself, no recs
        run = settings.model_copy(update={"archive": settings.archive.model_copy(update={"enabled": True}),
                                          "recs": settings.recs.model_copy(update={"enabled": False})})
        tag = uuid.uuid4().hex[:10]
        opts = RunOptions(bounded=True, resume=False, job_name=f"zt-replay-{tag}", experiments=False,
                          attribution=False, rules=True, rules_file=rules_file)
        env, t_env = make_envs(run, opts, connector_jars(run))
        t_env.get_config().set("table.local-time-zone", "UTC")
        t_env.execute_sql(source_ddl("zt_replay_file", "records", _RECORD_COLUMNS, out.as_uri()))
        t_env.execute_sql("CREATE TEMPORARY VIEW zt_replay_source AS SELECT payload, rkey, topic, part, off, "
                          "CAST(kts AS TIMESTAMP_LTZ(3)) AS kts FROM zt_replay_file")
        _blackholes(t_env)
        tables = JobTables(source="zt_replay_source", dlq="zt_replay_dlq", store="zt_replay_store",
                           actions="zt_replay_actions", actions_prefix=_PREFIX)
        reset_sql_node_ids(t_env)
        no_archive = run.model_copy(update={"archive": settings.archive.model_copy(update={"enabled": False})})
        stmt_set = build_job(t_env, no_archive, tables, JobPlan(ruleset=ruleset, attribution=False, experiments=False))
        attach_archive(t_env, stmt_set, no_archive, rules=True, receipts=None, conversions=False,
                       url=out.as_uri(), tables=("actions",))
        execute(env, stmt_set, opts.job_name_for(run)).get_job_execution_result().result()
        return _summarise(out, n)
    finally:
        shutil.rmtree(out, ignore_errors=True)
