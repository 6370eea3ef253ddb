"""SQL over the archive (docs/warehouse.md): ``zhongtai sql`` and the reports of ``zhongtai replay``.

The archive's tables (``connectors.archive``) are Parquet files partitioned by day; DuckDB, embedded, reads
them in place (one view per table). Nothing here runs a server or writes the archive.
"""

from __future__ import annotations

from .queries import EXAMPLES, LIVE_COUNTERS, Result, live_counters, run_sql

__all__ = ["EXAMPLES", "LIVE_COUNTERS", "Result", "live_counters", "run_sql"]
