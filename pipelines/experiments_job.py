"""The experiment statistics inside the event job (``pipelines.experiments`` wired to the job's views).

Units: ``person`` experiments read ``zt_person_events`` (each unique event once, with its person id),
``device`` experiments read the unique events that carry a device id. Each unit type gets its own
views (``zt_exp_person_*`` / ``zt_exp_device_*``) and the Redis writer of ``pipelines.experiments``.
The definitions come from ``experiments.definitions_file`` when the job is built (docs/experiments.md:
a changed definition takes effect at the next start; live re-planning is not built).
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


def definitions(settings: Settings) -> tuple[Any, ...]:
    """The configured definitions; a relative path is taken from the working directory, else from the
    project root (so a job started elsewhere, e.g. on a cluster, finds the shipped file)."""
    from operators.experiments.definitions import load_definitions

    path = Path(settings.experiments.definitions_file)
    if not path.is_absolute() and not path.exists():
        path = Path(__file__).resolve().parent.parent / path
    if not path.exists():
        logger.warning("experiments: %s not found; the job measures no experiment", path)
        return ()
    return load_definitions(path)


def add_experiments(t_env: StreamTableEnvironment, stmt_set: StatementSet, settings: Settings,
                    redis_prefix: str | None = None) -> list[str]:
    """Register the experiment views and add their Redis writers to ``stmt_set``; returns the keys."""
    from config.settings import settings_to_json
    from connectors.redis_experiments import RedisExperiments
    from pipelines.experiments import (
        EXPERIMENT_STORE_COLUMNS,
        assign_udf,
        experiment_statements,
        experiment_store_udf,
    )

    defs = definitions(settings)
    if not defs:
        return []
    store = RedisExperiments(settings.redis, prefix=redis_prefix)
    try:
        store.write_meta(defs)
    finally:
        store.client.close()
    t_env.execute_sql("CREATE TEMPORARY TABLE zt_exp_sink (written BIGINT) WITH ('connector' = 'blackhole')")
    cols = ", ".join(EXPERIMENT_STORE_COLUMNS)
    for unit, source in _SOURCES.items():
        group = [d for d in defs if d.unit == unit]
        if not group:
            continue
        prefix = f"zt_exp_{unit}"
        t_env.execute_sql(f"CREATE TEMPORARY VIEW {prefix}_source AS {source}")
        t_env.create_temporary_function(f"{prefix}_assign", assign_udf(group))
        t_env.create_temporary_function(
            f"{prefix}_store", experiment_store_udf(settings_to_json(settings), group, redis_prefix=redis_prefix)
        )
        for stmt in experiment_statements(group, f"{prefix}_source", prefix=prefix, assign_function=f"{prefix}_assign"):
            t_env.execute_sql(stmt)
        stmt_set.add_insert_sql(f"INSERT INTO zt_exp_sink SELECT {prefix}_store({cols}) FROM {prefix}_store_rows")
    return [d.key for d in defs]
