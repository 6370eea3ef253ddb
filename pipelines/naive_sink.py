"""The NAIVE counter sink: a negative control for the fault-tolerance test. Never use it for real.

It does what many teams write first: for every deduplicated event (``zt_unique``) a blind
``HINCRBY`` of views / carts / purchases / events on the event's counter hashes
(``<prefix>:m:<campaign>|<channel>:<YYYYMMDDHHMM>`` and ``<prefix>:m:all:<YYYYMMDDHHMM>``, the same
key suffixes and field names as the real store). ``<prefix>:progress`` counts the rows handled
(replays included) and ``<prefix>:worker`` records which file and interpreter the worker ran.
Without failures its counts equal the truth.
After a failure Flink restores the last checkpoint and replays every event read since then; the
increments of those events already reached Redis, so they are applied twice: the counts exceed the
truth. The real store (``pipelines.store_sink``) writes absolute values from Flink state instead,
which a replay merely rewrites.

Wired as an extra INSERT of the event job when ``RunOptions.naive_control`` is set
(``zhongtai.jobs.runner.register_events_job``). Like the real writer it is a pandas UDF (whole Arrow
batches, one pipelined Redis round trip per batch), so it costs the job little.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from operators.scopes import scope_key

if TYPE_CHECKING:  # pragma: no cover
    from pyflink.table import StatementSet, TableEnvironment

    from config.settings import Settings

SINK_TABLE = "zt_naive_sink"
UDF_NAME = "zt_naive"

#: event_type → counter field it increments besides ``events``.
FIELD_OF_TYPE = {"page_view": "views", "add_to_cart": "carts", "purchase": "purchases"}


class NaiveIncrementWriter:
    """Blind per-event ``HINCRBY`` (pipelined per batch); returns the batch size per row."""

    def __init__(self, settings_json: str, prefix: str) -> None:
        self.__name__ = UDF_NAME
        self._settings_json = settings_json
        self._prefix = prefix
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    def _open(self) -> None:
        from config.settings import settings_from_json
        from connectors.redis_store import redis_client

        cfg = settings_from_json(self._settings_json).redis
        self._client = redis_client(cfg)
        # Where this worker's code came from (the tests check that the cluster ran the shipped copy).
        import sys

        self._client.hset(
            f"{self._prefix}:worker", mapping={"module_file": __file__, "python": sys.executable}
        )

    def __call__(self, event_type: Any, ts_ms: Any, campaign: Any, channel: Any) -> Any:
        import pandas as pd

        from connectors.redis_store import minute_label

        if self._client is None:
            self._open()
        n = len(event_type)
        pipe = self._client.pipeline(transaction=False)
        labels: dict[int, str] = {}
        for et, ts, camp, chan in zip(
            event_type.tolist(), ts_ms.tolist(), campaign.tolist(), channel.tolist(), strict=True
        ):
            minute = int(ts) // 60_000
            label = labels.get(minute) or labels.setdefault(minute, minute_label(minute))
            field = FIELD_OF_TYPE.get(et)
            for scope in (scope_key(camp, chan), "all"):
                key = f"{self._prefix}:m:{scope}:{label}"
                pipe.hincrby(key, "events", 1)
                if field is not None:
                    pipe.hincrby(key, field, 1)
        # Rows handled, replays included (the fault-tolerance test watches it advance between checkpoints).
        pipe.hincrby(f"{self._prefix}:progress", "rows", n)
        pipe.execute()
        return pd.Series([n] * n, dtype="int64")


def naive_udf(settings_json: str, prefix: str):  # a PyFlink UserDefinedFunctionWrapper
    from pyflink.table import DataTypes
    from pyflink.table.udf import udf

    return udf(
        NaiveIncrementWriter(settings_json, prefix),
        input_types=[DataTypes.STRING(), DataTypes.BIGINT(), DataTypes.STRING(), DataTypes.STRING()],
        result_type=DataTypes.BIGINT(),
        func_type="pandas",
        deterministic=False,
        name=UDF_NAME,
    )


def add_naive_sink(
    t_env: TableEnvironment, stmt_set: StatementSet, settings: Settings, *, prefix: str
) -> None:
    """Register the naive UDF and a blackhole table; add the INSERT reading ``zt_unique``."""
    from config.settings import settings_to_json

    t_env.execute_sql(
        f"CREATE TEMPORARY TABLE {SINK_TABLE} (written BIGINT) WITH ('connector' = 'blackhole')"
    )
    t_env.create_temporary_function(UDF_NAME, naive_udf(settings_to_json(settings), prefix))
    stmt_set.add_insert_sql(
        f"INSERT INTO {SINK_TABLE} SELECT {UDF_NAME}(event_type, ts_ms, campaign, channel) FROM zt_unique"
    )
