"""The experiments stage of the event job: definitions (YAML + control messages) wired to the statistics.

Definitions: the YAML file ``experiments.definitions_file`` is the initial set (``zt_exp_file_rows``,
SQL constants, in place as soon as the job starts); control messages of kind ``experiment`` on the
control topic create, update, stop and delete experiments while the job runs: a small keyed Python
operator (:func:`_control_function`, one key, so it sees every message in order) folds them over an
``ExperimentRegistry`` kept in keyed state, emits one definition row per accepted message
(``zt_exp_control_rows``) and one result per message (``zt_control_results_experiments``, JSON:
``operators.experiments.control.result_record``). Only control messages reach Python.

Statistics (``pipelines.experiment_stats``): one generic set of views per unit type over all running
experiments: ``person`` experiments read ``zt_person_events``, ``device`` experiments the unique
events that carry a device id. Targeting reads the person's tags from Redis (``{prefix}:tags:{pid}``, which the job writes from ``zt_tag_changes``) when the unit is assigned.
Both write to Redis through the writer function; the definition rows go to the meta hashes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from pyflink.table import StatementSet, StreamTableEnvironment

    from config.settings import Settings

logger = logging.getLogger(__name__)

_SOURCES = {
    "person": "SELECT event_type, ts_ms, person AS unit, amount, exp_key, variation FROM zt_person_events",
    "device": "SELECT event_type, ts_ms, id_device_id AS unit, amount, exp_key, variation FROM zt_unique "
              "WHERE id_device_id IS NOT NULL",
}
#: Items (a pricing experiment's unit: docs/pricing.md), in a job with ``pricing.enabled`` only.
_ITEM_SOURCE = ("SELECT event_type, ts_ms, item_id AS unit, amount, exp_key, variation FROM zt_person_events "
                "WHERE item_id IS NOT NULL AND item_id <> ''")
#: Tables the event job registers for the raw control topic (the shared view first) and its results.
_CONTROL_SOURCES = ("zt_control", "zt_control_source")
_CONTROL_RESULTS = "zt_control_results"


def definitions(settings: Settings) -> tuple[Any, ...]:
    """The configured definitions; a relative path is taken from the working directory, else from the
    project root (so a job started elsewhere, e.g. on a cluster, finds the shipped file)."""
    from operators.experiments.definitions import load_definitions

    path = Path(settings.experiments.definitions_file)
    if not path.is_absolute() and not path.exists():
        path = Path(__file__).resolve().parent.parent / path
    if not path.exists():
        logger.warning("experiments: %s not found; the job starts without experiments", path)
        return ()
    return load_definitions(path)


def control_view_statement(source: str, view: str = "zt_exp_control") -> str:
    """The experiment messages of the raw control topic table ``source`` (payload BYTES, kts), with
    ``ts_ms``: the message's ``ts_ms`` field, else its Kafka timestamp (the time of a ``stop`` without
    ``stop_ms``, the same on every replay)."""
    return f"""
CREATE TEMPORARY VIEW {view} AS
SELECT s AS payload, COALESCE(TRY_CAST(JSON_VALUE(s, '$.ts_ms') AS BIGINT),
                              UNIX_TIMESTAMP(DATE_FORMAT(kts, 'yyyy-MM-dd HH:mm:ss')) * 1000) AS ts_ms
FROM (SELECT CAST(payload AS STRING) AS s, kts FROM {source})
WHERE JSON_VALUE(s, '$.kind') = 'experiment'"""


def _control_function(initial_json: str, result_tag: Any) -> Any:
    import json

    from pyflink.common import Row
    from pyflink.datastream.functions import KeyedProcessFunction

    from operators.experiments.control import control_step
    from operators.experiments.definitions import ExperimentRegistry, control_message, definition_from_mapping
    from state.experiments import decode_registry, encode_registry, registry_state

    class ExperimentControl(KeyedProcessFunction):
        """State ``experiments-registry-v2`` (``state.experiments``; no TTL: the definitions live as long as
        the job): the registry after the last message. Without state it starts from the YAML
        set; after a restore, YAML definitions of a higher version than the state's are applied."""

        def open(self, ctx: Any) -> None:
            self.state = ctx.get_state(registry_state())
            self.initial = [definition_from_mapping(d, "definitions file") for d in json.loads(initial_json)]
            self.registry: ExperimentRegistry | None = None

        def _registry(self) -> ExperimentRegistry:
            if self.registry is None:
                raw = self.state.value()
                if raw is None:
                    self.registry = ExperimentRegistry.of(self.initial)
                else:
                    reg = decode_registry(raw)
                    for d in self.initial:
                        if d.version > reg.versions.get(d.key, -1):
                            reg, _ = reg.apply(control_message("upsert", d.key, d.version, d), 0)
                    self.registry = reg
            return self.registry

        def process_element(self, value: Any, ctx: Any):
            registry = self._registry()
            new, result, row = control_step(registry, value[0], value[1] or 0)
            if new is not registry:
                self.registry = new
                self.state.update(encode_registry(new))
            if result is not None:
                if result["status"] == "rejected":
                    logger.warning("experiments: control message rejected: %s", result["reason"])
                yield result_tag, Row(json.dumps(result, ensure_ascii=False))
            if row is not None:
                yield Row(*row)

    return ExperimentControl()


def _attach_control(t_env: StreamTableEnvironment, control_source: str, defs: tuple[Any, ...]) -> None:
    """Register ``zt_exp_control_rows`` (exp_key, packed) and ``zt_control_results_experiments`` (payload)."""
    import json

    from pyflink.common import Duration, Types, WatermarkStrategy
    from pyflink.common.watermark_strategy import TimestampAssigner
    from pyflink.datastream import OutputTag

    class ZeroTime(TimestampAssigner):
        def extract_timestamp(self, value: Any, record_timestamp: int) -> int:
            return 0

    t_env.execute_sql(control_view_statement(control_source))
    # The control messages carry no event time. Without watermarks this input would hold the watermark
    # of every join and aggregate downstream (and so every mini-batch flush) at its start for ever;
    # with their Kafka time (now) it could push the watermark past the events' time while the events
    # idle, and later events could not advance it again. So: time 0, and idle 1 s after a message.
    stream = t_env.to_data_stream(t_env.sql_query("SELECT payload, ts_ms FROM zt_exp_control")) \
        .assign_timestamps_and_watermarks(
            WatermarkStrategy.for_monotonous_timestamps().with_idleness(Duration.of_millis(1_000))
            .with_timestamp_assigner(ZeroTime())) \
        .name("experiments-control-time").uid("zt-experiments-control-time-v1")
    result_tag = OutputTag("experiments-control-results", Types.ROW_NAMED(["payload"], [Types.STRING()]))
    fn = _control_function(json.dumps([d.to_dict() for d in defs]), result_tag)
    rows = (stream.key_by(lambda _row: 0, key_type=Types.INT())
            .process(fn, output_type=Types.ROW_NAMED(["exp_key", "packed"], [Types.STRING(), Types.STRING()]))
            .name("experiments-control").uid("zt-experiments-control-v1"))
    t_env.create_temporary_view("zt_exp_control_rows", t_env.from_data_stream(rows))
    t_env.create_temporary_view("zt_control_results_experiments",
                                t_env.from_data_stream(rows.get_side_output(result_tag)))


def add_experiments(t_env: StreamTableEnvironment, stmt_set: StatementSet, settings: Settings,
                    redis_prefix: str | None = None, control_source: str | None = None,
                    control_results: str | None = None) -> list[str]:
    """Register the experiment views and add their Redis writers (and control results) to ``stmt_set``.

    ``control_source`` / ``control_results``: the raw control topic table (payload BYTES, kts) and the
    results sink (DLQ-shaped); by default the event job's (``zt_control``, else ``zt_control_source``;
    ``zt_control_results``) when they are registered. Returns the keys of the
    initial (YAML) set.
    """
    from config.settings import settings_to_json
    from connectors.redis_experiments import RedisExperiments
    from operators.experiments.control import packed_row
    from pipelines.experiment_stats import (
        EXPERIMENT_STORE_COLUMNS,
        assign_udf,
        definition_rows_statement,
        definitions_statements,
        experiment_meta_udf,
        experiment_statements,
        experiment_store_udf,
    )

    tables = set(t_env.list_temporary_tables()) | set(t_env.list_temporary_views())
    if control_source is None:
        control_source = next((t for t in _CONTROL_SOURCES if t in tables), None)
    if control_results is None and control_source is not None and _CONTROL_RESULTS in tables:
        control_results = _CONTROL_RESULTS
    defs = definitions(settings)
    t_env.execute_sql(definition_rows_statement(defs, "zt_exp_file_rows"))
    rows_view = "zt_exp_file_rows"
    if control_source is not None:
        _attach_control(t_env, control_source, defs)
        t_env.execute_sql("CREATE TEMPORARY VIEW zt_exp_def_rows AS SELECT exp_key, packed FROM zt_exp_file_rows "
                          "UNION ALL SELECT exp_key, packed FROM zt_exp_control_rows")  # fmt: skip
        rows_view = "zt_exp_def_rows"
        if control_results is not None:
            stmt_set.add_insert_sql(f"""
INSERT INTO {control_results}
SELECT ENCODE(payload, 'UTF-8'), MAP['zt.kind', ENCODE('experiment', 'UTF-8')], CAST(NULL AS TIMESTAMP_LTZ(3))
FROM zt_control_results_experiments""")
    for stmt in definitions_statements(rows_view, prefix="zt_exp"):
        t_env.execute_sql(stmt)
    settings_json = settings_to_json(settings)
    t_env.execute_sql("CREATE TEMPORARY TABLE zt_exp_sink (written BIGINT) WITH ('connector' = 'blackhole')")
    t_env.create_temporary_function("zt_exp_assign", assign_udf(settings_json, redis_prefix=redis_prefix))
    t_env.create_temporary_function("zt_exp_meta", experiment_meta_udf(settings_json, redis_prefix=redis_prefix))
    # The YAML set's meta hashes now (version-guarded); the control rows' through the job (a pandas
    # UDF over the YAML constants would get literal columns, which its Arrow batches cannot carry).
    store = RedisExperiments(settings.redis, prefix=redis_prefix)
    try:
        store.write_definition_rows([packed_row(d.key, d.version, d) for d in defs])
    finally:
        store.close()
    if control_source is not None:
        stmt_set.add_insert_sql("INSERT INTO zt_exp_sink SELECT zt_exp_meta(exp_key, packed) FROM zt_exp_control_rows")
    cols = ", ".join(EXPERIMENT_STORE_COLUMNS)
    sources = {**_SOURCES, "item": _ITEM_SOURCE} if settings.pricing.enabled else _SOURCES
    for unit, source in sources.items():
        prefix = f"zt_exp_{unit}"
        t_env.execute_sql(f"CREATE TEMPORARY VIEW {prefix}_source AS {source}")
        t_env.create_temporary_function(f"{prefix}_store",
                                        experiment_store_udf(settings_json, redis_prefix=redis_prefix))
        for stmt in experiment_statements(f"{prefix}_source", unit=unit, prefix=prefix):
            t_env.execute_sql(stmt)
        stmt_set.add_insert_sql(f"INSERT INTO zt_exp_sink SELECT {prefix}_store({cols}) FROM {prefix}_store_rows")
    return [d.key for d in defs]
