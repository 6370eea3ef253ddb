"""The Redis + HBase writer of the event job, as a vectorised (pandas) Python UDF.

Flink hands the function whole Arrow batches of store rows (``python.fn-execution.arrow.batch.size``
rows, or whatever arrived within ``python.fn-execution.bundle.time``), so Python works per batch:
one pipelined Redis round trip and one happybase batch per call. Before a checkpoint completes,
Flink finishes the Python bundle in flight, so every row before the barrier has been written:
replays after a failure write the same absolute values again (idempotent, DESIGN.md).

Clients are created in ``open()`` on the worker, never at import time, and never pickled.
"""

from __future__ import annotations

import logging
from typing import Any

from pyflink.table import DataTypes
from pyflink.table.udf import udf

from pipelines.events import STORE_COLUMNS

logger = logging.getLogger(__name__)

_TYPES = {
    "kind": DataTypes.STRING(), "k": DataTypes.STRING(), "bucket": DataTypes.BIGINT(),
    "n1": DataTypes.BIGINT(), "n2": DataTypes.BIGINT(), "n3": DataTypes.BIGINT(), "n4": DataTypes.BIGINT(),
    "n5": DataTypes.BIGINT(), "amount": DataTypes.DECIMAL(38, 2),
    "t1": DataTypes.BIGINT(), "t2": DataTypes.BIGINT(), "t3": DataTypes.BIGINT(), "s1": DataTypes.STRING(),
}


class StoreWriter:
    """Writes each Arrow batch to Redis (live) and HBase (durable); returns the batch size per row.

    A plain callable (PyFlink runs class-based ``ScalarFunction`` instances row by row here, so
    the vectorised path takes a function): the clients are created lazily on the first batch in
    the worker process, never at import time and never pickled.
    """

    def __init__(self, settings_json: str, redis_prefix: str | None = None, hbase_prefix: str | None = None,
                 hbase: bool = True) -> None:
        self.__name__ = "zt_store"
        self._settings_json = settings_json
        self._redis_prefix = redis_prefix
        self._hbase_prefix = hbase_prefix
        self._hbase_enabled = hbase
        self._redis: Any = None
        self._hbase: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_redis": None, "_hbase": None}

    def _open(self) -> None:
        from config.settings import settings_from_json
        from connectors.hbase_store import HBaseStore
        from connectors.redis_store import RedisStore
        from pipelines.runtime import share_interpreter

        share_interpreter()

        settings = settings_from_json(self._settings_json)
        self._redis = RedisStore(settings.redis, prefix=self._redis_prefix)
        if self._hbase_enabled:
            self._hbase = HBaseStore(settings.hbase, prefix=self._hbase_prefix)
            self._hbase.ensure_tables()

    def __call__(self, *cols: Any) -> Any:
        import pandas as pd

        from connectors.redis_store import StoreRow

        if self._redis is None:
            self._open()
        # Constant arguments (the planner inlines literals such as the row kind) arrive as scalars.
        n = next(len(c) for c in cols if isinstance(c, pd.Series))
        lists = [c.tolist() if isinstance(c, pd.Series) else [c] * n for c in cols]
        lists[0], lists[1] = lists[1], lists[0]  # STORE_COLUMNS starts (k, kind); StoreRow (kind, key)
        rows = [StoreRow(*vals) for vals in zip(*lists, strict=True)]
        self._redis.write(rows)
        if self._hbase is not None:
            self._hbase.write(rows)
        return pd.Series([len(rows)] * len(rows), dtype="int64")


def store_udf(settings_json: str, *, redis_prefix: str | None = None, hbase_prefix: str | None = None,
              hbase: bool = True):  # noqa: ANN201 - a PyFlink UserDefinedFunctionWrapper
    """The vectorised store writer; non-deterministic so the planner never folds or drops it."""
    return udf(
        StoreWriter(settings_json, redis_prefix, hbase_prefix, hbase),
        input_types=[_TYPES[c] for c in STORE_COLUMNS],
        result_type=DataTypes.BIGINT(),
        func_type="pandas",
        deterministic=False,
        name="zt_store",
    )
