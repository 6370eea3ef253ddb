"""The archive's tables: where they live, their Flink sink DDL, the jars that write them, and DuckDB over them.

The archive (docs/warehouse.md) is a folder of Parquet files, one sub-folder per table, partitioned by day
(``<warehouse>/<table>/dt=YYYY-MM-DD/part-…``), written by the job's ``archive`` stage
(``pipelines.archive``) through Flink's filesystem connector. A part file becomes visible (renamed from its
hidden ``.part-…inprogress…`` name) only when the checkpoint that covers its rows completes, so a reader that
globs ``part-*`` sees exactly the rows of completed checkpoints, each once: after a failure the job restarts
from the last checkpoint and the files in progress are discarded, not committed twice.

Why Parquet through the filesystem connector and not Apache Iceberg or Paimon (measured 2026-12-07,
docs/warehouse.md): Maven Central has no Iceberg Flink runtime for Flink 2.2/2.3 (the newest is
``iceberg-flink-runtime-2.1``) and no ``paimon-flink-2.x`` module that we found; and the embedded SQL engine
(DuckDB's Python wheel) reads Parquet natively but needs a downloaded extension for Iceberg. Files committed
on checkpoint are what every engine reads (DuckDB, Spark, Trino, Hive: the day folders are Hive partitions).

DuckDB (the embedded SQL engine of ``zhongtai sql`` and ``zhongtai replay``) is imported here and nowhere
else: it is a client library like redis or happybase.
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import Settings

logger = logging.getLogger(__name__)

POM = Path(__file__).resolve().parent / "archive-pom.xml"
#: The partition column of every table: the UTC day of its time column, ``YYYY-MM-DD``.
PARTITION = "dt"


@dataclass(frozen=True)
class ArchiveTable:
    """One table of the archive: its folder name, the column its day comes from, and what a row is."""

    name: str
    time_column: str
    doc: str


TABLES: tuple[ArchiveTable, ...] = (
    ArchiveTable("events", "ts_ms", "the valid events, each event_id once (the job's dedup), with every prop; "
                 "anchor = the event's strongest identifier (the live counters' person)"),
    ArchiveTable("event_persons", "ts_ms", "each unique event's person (the identity graph's person id when the "
                 "event met it)"),
    ArchiveTable("records", "ts_ms", "every valid record as it arrived (the original bytes and source "
                 "coordinates, duplicates included): the input of zhongtai replay"),
    ArchiveTable("dlq", "kts", "every rejected record: reason, source coordinates, size, the bytes (cut at "
                 "job.dlq_max_value_bytes): the DLQ topic's headers as columns"),
    ArchiveTable("identity_changes", "ts_ms", "merge / split / attach / detach records"),
    ArchiveTable("tag_changes", "ts_ms", "tags added and removed, with the cause and the tag set's version"),
    ArchiveTable("actions", "ts_ms", "the strategy engine's decisions: status 'sent' (to the actions topics) or "
                 "'suppressed' with the guard rail's reason (rules on)"),
    ArchiveTable("receipts", "kts", "the channel workers' delivery receipts as the job read them (rules and "
                 "attribution on)"),
    ArchiveTable("conversions", "purchase_ts", "purchases attributed to the delivered action before them "
                 "(rules and attribution on)"),
)
TABLE_NAMES = tuple(t.name for t in TABLES)

#: DuckDB columns of the tables a job without rules or attribution never writes: an empty view stands in for
#: them, so that the shipped queries run on any archive (``connect``).
EMPTY_SCHEMAS: dict[str, str] = {
    "actions": "status VARCHAR, action_id VARCHAR, channel VARCHAR, person VARCHAR, rule_id VARCHAR, "
               "reason VARCHAR, ts_ms BIGINT, payload VARCHAR, dt DATE",
    "receipts": "action_id VARCHAR, person_id VARCHAR, channel VARCHAR, status VARCHAR, rule_id VARCHAR, "
                "campaign VARCHAR, ts_ms BIGINT, payload VARCHAR, kts TIMESTAMP, dt DATE",
    "conversions": "purchase_event_id VARCHAR, person VARCHAR, action_id VARCHAR, rule_id VARCHAR, "
                   "campaign VARCHAR, channel VARCHAR, delivered_ts BIGINT, purchase_ts BIGINT, "
                   "amount DECIMAL(18, 2), payload VARCHAR, dt DATE",
}


def warehouse_url(settings: Settings) -> str:
    """The warehouse's URL: ``archive.path``, or ``<stack.home>/warehouse/<namespace or 'default'>``."""
    if settings.archive.path:
        return settings.archive.path.rstrip("/")
    return (settings.home / "warehouse" / (settings.namespace or "default")).as_uri()


def local_root(url: str) -> Path:
    """The local folder of a ``file://`` warehouse URL; other schemes are read by Spark/Trino/Hive."""
    parsed = urlparse(url)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"the warehouse {url} is not a local folder: the embedded engine (DuckDB) reads file:// "
                         "warehouses only; query HDFS/S3 from Spark, Trino or Hive (docs/warehouse.md)")
    return Path(parsed.path if parsed.scheme else url)


def day_sql(column: str, kind: str) -> str:
    """Flink SQL for the UTC day (``YYYY-MM-DD``) of ``column``: ``kind`` ``ms`` (epoch milliseconds) or
    ``ltz`` (a TIMESTAMP_LTZ). The job runs with ``table.local-time-zone`` UTC (``pipelines.events``)."""
    ts = f"TO_TIMESTAMP_LTZ({column}, 3)" if kind == "ms" else column
    return f"DATE_FORMAT({ts}, 'yyyy-MM-dd')"


def sink_ddl(name: str, table: str, columns: list[tuple[str, str]], settings: Settings,
             url: str | None = None) -> str:
    """A filesystem sink for ``table`` of the archive at ``<url>/<table>``: Parquet (Snappy), partitioned by
    ``dt`` (which must be the last of ``columns``: (name, Flink type) pairs), committed on checkpoint."""
    a = settings.archive
    cols = ",\n  ".join(f"`{c}` {t}" for c, t in columns)
    return f"""
CREATE TEMPORARY TABLE {name} (
  {cols}
) PARTITIONED BY ({PARTITION}) WITH (
  'connector' = 'filesystem',
  'path' = '{url or warehouse_url(settings)}/{table}',
  'format' = 'parquet',
  'parquet.compression' = 'SNAPPY',
  'sink.rolling-policy.file-size' = '{a.rolling_file_size}',
  'sink.rolling-policy.rollover-interval' = '{a.rollover_interval}',
  'sink.partition-commit.policy.kind' = 'success-file'
)"""


def source_ddl(name: str, table: str, columns: list[tuple[str, str]], url: str) -> str:
    """The archive's ``table`` at ``<url>/<table>`` as a bounded Flink source (``zhongtai replay``)."""
    cols = ",\n  ".join(f"`{c}` {t}" for c, t in columns)
    return f"""
CREATE TEMPORARY TABLE {name} (
  {cols}
) PARTITIONED BY ({PARTITION}) WITH (
  'connector' = 'filesystem',
  'path' = '{url}/{table}',
  'format' = 'parquet'
)"""


def archive_jars(settings: Settings) -> list[Path]:
    """Flink's Parquet format (the version of the installed PyFlink) and the shaded Hadoop client it writes
    through, fetched from Maven Central into ``<home>/lib/archive`` (``connectors.jars``)."""
    from connectors.jars import DEP_PLUGIN, fetch_jars

    flink = importlib.metadata.version("apache-flink")
    hadoop = settings.archive.hadoop_version
    lib = fetch_jars(settings, "archive", f"flink-sql-parquet:{flink} hadoop-client:{hadoop}", [
        "-f", str(POM), f"{DEP_PLUGIN}:copy-dependencies", f"-Dflink.version={flink}",
        f"-Dhadoop.version={hadoop}", "-DincludeScope=runtime",
        # Flink brings its own slf4j 2; a second API jar on the job's class path only warns and confuses
        "-DexcludeArtifactIds=slf4j-api",
    ])
    return sorted(lib.glob("*.jar"))


# ---------------------------------------------------------------------------------------------- DuckDB


def table_glob(root: Path, table: str) -> str:
    """The committed part files of ``table`` (in-progress files are hidden: ``.part-…``)."""
    return str(root / table / f"{PARTITION}=*" / "part-*")


def present_tables(root: Path) -> list[str]:
    """The archive's tables that have at least one committed part file under ``root``."""
    return [t for t in TABLE_NAMES if any((root / t).glob(f"{PARTITION}=*/part-*"))]


def connect(root: Path, *, threads: int | None = None) -> Any:
    """An in-memory DuckDB connection with one view per archive table present under ``root`` (``dt`` a DATE
    column from the folder names). Of the tables with no committed file yet, those of ``EMPTY_SCHEMAS`` get an
    empty view, the others none."""
    import duckdb

    con = duckdb.connect(":memory:")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    present = present_tables(root)
    for t in present:
        glob = table_glob(root, t).replace("'", "''")
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true, "
                    "union_by_name = true)")
    for t, cols in EMPTY_SCHEMAS.items():
        if t not in present:
            con.execute(f"CREATE TABLE {t} ({cols})")
    return con


def duckdb_version() -> str:
    return importlib.metadata.version("duckdb")
