"""The event job's composition root: ONE function builds the whole graph from its stages.

``build_job(t_env, settings, tables, plan)`` takes the connector tables the caller created (Kafka sources
and sinks, the store sink: ``JobTables``) and what to run (``JobPlan``: rules, attribution, experiments,
the negative control), runs every stage of ``STAGES`` in order and returns the statement set. Every stage
has one signature, ``stage(build: Build) -> None``: it reads views of the catalog (``pipelines.catalog``)
that earlier stages produced, registers the views the catalog gives it and adds its INSERTs. Topic
creation and table DDL are not here: they belong to the caller (``zhongtai.jobs.runner``), so the graph is the
same whether the tables are Kafka topics, a test's collections or a bench's blackholes.

The stages, in order (docs/architecture.md has the picture):

===============  ==========================================================================================
core             decode + validate (→ DLQ), dedup, live counters, anchor buckets, identifier combinations, totals
control          the control topic, read once
identity         the identity graph (Python, bundled) → identifier → person map, edges, changes
people           person minutes (anchor buckets ⋈ map) and person events (each event with its person)
person           the person operator: profile, tags, and with a rule set the strategy engine
store            every Redis/HBase upsert of the above as one row shape (the store log or the direct writer)
rules            the engine's actions to their topics, counters and audit rows (rules on)
attribution      purchases attributed to delivered actions (rules on)
recs             item-to-item recommendations: item lists and person windows as store rows (recs.enabled)
pricing          list prices within guard rails and personal offers: store rows and the pricing topic
                 (pricing.enabled)
archive          every event and decision as Parquet partitioned by day (archive.enabled; pipelines.archive)
experiments      assignment and per-variant statistics (experiments on)
store_insert     THE one INSERT into the store sink (the union of every stage's store rows)
naive            the per-event HINCRBY negative control (tests only)
===============  ==========================================================================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipelines.catalog import CATALOG, CatalogError, is_private, produced_by

if TYPE_CHECKING:  # pragma: no cover
    from pyflink.table import StatementSet, StreamTableEnvironment

    from config.settings import Settings
    from operators.rules.registry import RuleSet

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobTables:
    """Names of the connector tables the caller created (``connectors.kafka_tables`` DDL in the runner).

    ``source``: raw records (payload BYTES, topic, part, off, kts; and the key ``rkey`` once the decode has
    it). ``dlq``, ``identity_changes``, ``tag_changes``, ``control_results``: (payload, headers, ts)-shaped
    Kafka sinks (the DLQ with the key too). ``store``: the store
    log, or with ``store_udf`` the direct writer's blackhole. ``control_source``: the raw control topic.
    ``actions``: the actions sink (rules), ``actions_prefix`` its topics' prefix. ``delivery_source``: the
    delivery receipts (attribution).
    """

    source: str
    dlq: str
    store: str
    store_udf: str | None = None
    identity_changes: str | None = None
    tag_changes: str | None = None
    control_source: str | None = None
    control_results: str | None = None
    actions: str | None = None
    actions_prefix: str | None = None
    actions_control: str | None = None
    actions_control_prefix: str | None = None
    delivery_source: str | None = None
    pricing: str | None = None


@dataclass(frozen=True)
class JobPlan:
    """What the job runs besides the core (identity, profiles, tags always run)."""

    ruleset: RuleSet | None = None
    attribution: bool = True
    experiments: bool = True
    redis_prefix: str | None = None
    naive_prefix: str | None = None


@dataclass
class Build:
    """What every stage gets: the table environment, the settings, the tables, the plan, the statement set
    and the views registered so far (by stage)."""

    t_env: StreamTableEnvironment
    settings: Settings
    tables: JobTables
    plan: JobPlan
    stmt_set: StatementSet
    produced: dict[str, str] = field(default_factory=dict)
    store_views: list[str] = field(default_factory=list)

    def has(self, view: str) -> bool:
        return view in self.produced


@dataclass(frozen=True)
class Stage:
    name: str
    reads: tuple[str, ...]
    run: Callable[[Build], None]
    when: Callable[[Build], bool] = lambda b: True


# ---------------------------------------------------------------------------------------------- stages


def _core(b: Build) -> None:
    from pipelines.events import (
        _VIEW_NAME,
        SHARED_VIEWS,
        dlq_insert,
        job_options,
        materialize,
        register_functions,
        view_statements,
    )

    register_functions(b.t_env)
    conf = b.t_env.get_config()
    for k, v in job_options(b.settings).items():
        conf.set(k, v)
    for stmt in view_statements(b.tables.source, b.settings):
        b.t_env.execute_sql(stmt)
        name = _VIEW_NAME.search(stmt)
        if name and name.group(1) in SHARED_VIEWS:
            materialize(b.t_env, name.group(1))
    b.stmt_set.add_insert_sql(dlq_insert(b.tables.dlq, b.settings.job.dlq_max_value_bytes))


def _control(b: Build) -> None:
    from pipelines.events import CONTROL_VIEW, materialize

    # one reader of the control topic for the identity graph, the tags, the rules and the experiments
    b.t_env.execute_sql(f"CREATE TEMPORARY VIEW {CONTROL_VIEW} AS SELECT * FROM {b.tables.control_source}")
    materialize(b.t_env, CONTROL_VIEW)


def _identity(b: Build) -> None:
    from pipelines.events import CONTROL_VIEW
    from pipelines.identity import attach, changes_insert, control_results_insert, control_view_statement

    control = None
    if b.has(CONTROL_VIEW):
        b.t_env.execute_sql(control_view_statement(CONTROL_VIEW))
        control = "zt_identity_control"
    attach(b.t_env, b.settings, control)
    if b.tables.identity_changes:
        b.stmt_set.add_insert_sql(changes_insert(b.tables.identity_changes))
    if b.tables.control_results and control:
        b.stmt_set.add_insert_sql(control_results_insert(b.tables.control_results))


def _people(b: Build) -> None:
    from pipelines.events import attach_person_events, materialize, person_minutes_statement

    b.t_env.execute_sql(person_minutes_statement())
    materialize(b.t_env, "zt_person_minutes", changelog=True)  # read by the person operator and by the store
    # a view over a DataStream (the JVM enrichment): planned once, however many stages read it
    attach_person_events(b.t_env, b.settings.job.dedup_ttl_ms)


def _person(b: Build) -> None:
    from pipelines.events import CONTROL_VIEW
    from pipelines.person import RULE_CONTROL_KINDS, attach_person

    rs = b.plan.ruleset
    control = None
    if b.has(CONTROL_VIEW):
        kinds = ", ".join(f"'{k}'" for k in ("tag", *(RULE_CONTROL_KINDS if rs is not None else ())))
        b.t_env.execute_sql(f"""
CREATE TEMPORARY VIEW zt_person_control AS
SELECT s AS payload FROM (SELECT CAST(payload AS STRING) AS s FROM {CONTROL_VIEW})
WHERE JSON_VALUE(s, '$.kind') IN ({kinds})""")
        control = "zt_person_control"
    attach_person(b.t_env, b.settings, ruleset=rs, control_view=control, props="props")
    if b.tables.tag_changes:
        b.stmt_set.add_insert_sql(f"""
INSERT INTO {b.tables.tag_changes}
SELECT ENCODE(payload, 'UTF-8'), MAP['zt.person', ENCODE(person, 'UTF-8')],
       CAST(NULL AS TIMESTAMP_LTZ(3))
FROM zt_tag_changes""")
    if b.tables.control_results and control:
        b.stmt_set.add_insert_sql(f"""
INSERT INTO {b.tables.control_results}
SELECT ENCODE(payload, 'UTF-8'), MAP['zt.kind', ENCODE('tag', 'UTF-8')],
       CAST(NULL AS TIMESTAMP_LTZ(3))
FROM zt_control_results_tags""")


def _store(b: Build) -> None:
    from pipelines.events import store_rows_statement
    from pipelines.person import TRAIT_VALUES_VIEW

    b.t_env.execute_sql(store_rows_statement(TRAIT_VALUES_VIEW if b.settings.event_schema.traits else None))
    b.store_views.append("zt_store_rows")


def _rules(b: Build) -> None:
    from pipelines.actions import actions_insert, rule_store_rows
    from pipelines.events import CONTROL_VIEW

    t = b.tables
    if t.actions is None or t.actions_prefix is None:
        raise CatalogError("a job with a rule set needs JobTables.actions and actions_prefix (the actions sink)")
    b.stmt_set.add_insert_sql(actions_insert(t.actions, t.actions_prefix))
    if t.actions_control is not None and t.actions_control_prefix is not None:
        b.stmt_set.add_insert_sql(actions_insert(t.actions_control, t.actions_control_prefix))
    # the person stage reads the control view whenever there is one (zt_person_control, not a catalog view: a
    # check for it here was always false, so the job's answers to rule control messages were never written)
    if t.control_results and b.has(CONTROL_VIEW):
        b.stmt_set.add_insert_sql(f"""
INSERT INTO {t.control_results}
SELECT ENCODE(payload, 'UTF-8'), MAP['zt.kind', ENCODE('rule', 'UTF-8')],
       CAST(NULL AS TIMESTAMP_LTZ(3))
FROM zt_rules_control_results""")
    for stmt in rule_store_rows():
        b.t_env.execute_sql(stmt)
    b.store_views.append("zt_rule_rows")


def _attribution(b: Build) -> None:
    from pipelines.attribution import attach_attribution

    if b.tables.delivery_source is None:
        raise CatalogError("attribution needs JobTables.delivery_source (the delivery receipts topic)")
    attach_attribution(b.t_env, b.settings, receipts=b.tables.delivery_source)
    b.store_views.append("zt_attribution_rows")


def _recs(b: Build) -> None:
    from pipelines.recs import attach_recs

    attach_recs(b.t_env, b.settings)
    b.store_views.append("zt_recs_rows")


def _pricing(b: Build) -> None:
    from pipelines.events import CONTROL_VIEW
    from pipelines.pricing import attach_pricing, control_results_insert, topic_insert

    control = CONTROL_VIEW if b.has(CONTROL_VIEW) else None
    attach_pricing(b.t_env, b.settings, actions_view="zt_actions" if b.has("zt_actions") else None,
                   control_view=control)
    b.store_views.append("zt_pricing_rows")
    if b.tables.pricing:
        b.stmt_set.add_insert_sql(topic_insert(b.tables.pricing))
    if b.tables.control_results and control:
        b.stmt_set.add_insert_sql(control_results_insert(b.tables.control_results))


def _archive(b: Build) -> None:
    from pipelines.archive import attach_archive

    attach_archive(b.t_env, b.stmt_set, b.settings, rules=_rules_on(b), conversions=b.has("zt_conversions"),
                   receipts=b.tables.delivery_source if b.has("zt_conversions") else None)


def _store_insert(b: Build) -> None:
    from pipelines.events import Sinks, store_insert

    b.stmt_set.add_insert_sql(store_insert(Sinks(dlq=b.tables.dlq, store=b.tables.store,
                                                 store_udf=b.tables.store_udf), *b.store_views))


def _experiments(b: Build) -> None:
    from pipelines.experiments import add_experiments

    add_experiments(b.t_env, b.stmt_set, b.settings, redis_prefix=b.plan.redis_prefix)


def _naive(b: Build) -> None:
    from pipelines.naive_sink import add_naive_sink

    add_naive_sink(b.t_env, b.stmt_set, b.settings, prefix=b.plan.naive_prefix or "")


def _rules_on(b: Build) -> bool:
    return b.plan.ruleset is not None


STAGES: tuple[Stage, ...] = (
    Stage("core", (), _core),
    Stage("control", (), _control, lambda b: b.tables.control_source is not None),
    Stage("identity", ("zt_combos",), _identity),
    Stage("people", ("zt_anchor_minutes", "zt_unique", "zt_id_map"), _people),
    Stage("person", ("zt_person_minutes",), _person),
    Stage("store", ("zt_counters", "zt_person_minutes", "zt_id_map", "zt_identity_edges", "zt_tag_changes",
                    "zt_totals"), _store),
    Stage("rules", ("zt_actions", "zt_suppressed"), _rules, _rules_on),
    Stage("attribution", ("zt_person_events",), _attribution, lambda b: _rules_on(b) and b.plan.attribution),
    Stage("recs", ("zt_person_events",), _recs, lambda b: b.settings.recs.enabled),
    Stage("pricing", ("zt_person_events",), _pricing, lambda b: b.settings.pricing.enabled),
    Stage("archive", ("zt_unique", "zt_decoded", "zt_person_events"), _archive, lambda b: b.settings.archive.enabled),
    Stage("store_insert", ("zt_store_rows",), _store_insert),
    Stage("experiments", ("zt_person_events", "zt_unique"), _experiments, lambda b: b.plan.experiments),
    Stage("naive", ("zt_unique",), _naive, lambda b: b.plan.naive_prefix is not None),
)


def _views(t_env: StreamTableEnvironment) -> set[str]:
    return {v for v in t_env.list_temporary_views() if v.startswith("zt_")}


def build_job(t_env: StreamTableEnvironment, settings: Settings, tables: JobTables, plan: JobPlan) -> StatementSet:
    """The whole event job over ``tables`` (see the module docstring); returns the statement set to run
    (``stmt_set.attach_as_datastream(); env.execute_async(...)``: the job mixes SQL and DataStream
    operators). Raises :class:`pipelines.catalog.CatalogError` when a stage reads a view no earlier stage
    produced or registers a shared view the catalog does not give it."""
    b = Build(t_env, settings, tables, plan, t_env.create_statement_set())
    for stage in STAGES:
        if not stage.when(b):
            continue
        missing = [v for v in stage.reads if v not in b.produced]
        if missing:
            raise CatalogError(f"stage {stage.name!r} reads {missing}, which no earlier stage produced "
                               f"(produced so far: {sorted(b.produced)})")
        before = _views(t_env)
        stage.run(b)
        for v in sorted(_views(t_env) - before):
            owner = CATALOG[v].producer if v in CATALOG else None
            if owner == stage.name:
                b.produced[v] = stage.name
            elif owner is None and is_private(stage.name, v):
                continue
            elif owner is None and stage.name in ("experiments", "naive"):
                continue  # their views are their own and read by nothing else
            else:
                raise CatalogError(f"stage {stage.name!r} registered view {v!r}, which the catalog gives to "
                                   f"{owner or 'no stage'} (pipelines/catalog.py)")
        logger.debug("stage %s: %s", stage.name, [v for v, s in b.produced.items() if s == stage.name])
    absent = [v for v in CATALOG if CATALOG[v].producer in {s.name for s in STAGES if s.when(b)}
              and v not in b.produced and not _optional(v, b)]
    if absent:
        raise CatalogError(f"the catalog's views {absent} were not produced by their stages")
    return b.stmt_set


def _optional(view: str, b: Build) -> bool:
    """Views a stage registers only in some configurations."""
    rules_only = {"zt_actions", "zt_suppressed", "zt_rules_control_results"}
    control_only = {"zt_identity_control_results", "zt_control_results_tags", "zt_rules_control_results"}
    return (view in rules_only and b.plan.ruleset is None) or (view in control_only and not b.has("zt_control"))


def expected_views(plan: JobPlan, *, control: bool = True) -> list[str]:
    """The catalog's views a job with ``plan`` produces (for tests)."""
    stages = {"core", "identity", "people", "person", "store", *(("control",) if control else ())}
    if plan.ruleset is not None:
        stages |= {"rules", *(("attribution",) if plan.attribution else ())}
    out = [v for s in stages for v in produced_by(s)]
    if plan.ruleset is None:
        out = [v for v in out if v not in {"zt_actions", "zt_suppressed", "zt_rules_control_results"}]
    if not control:
        out = [v for v in out if v not in {"zt_control", "zt_identity_control_results", "zt_control_results_tags",
                                           "zt_rules_control_results"}]
    return sorted(out)
