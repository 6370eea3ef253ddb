"""The archive's layout and the SQL over it, on hand-made Parquet files (no Flink, no stack).

The live-counter query against hand-computed values (escaped scope keys, a NULL campaign counted only in
``all``, distinct anchors, 2-decimal revenue); the empty stand-in tables; the settings' URL check; the
CLI's time parsing. The same query against the real job's Redis counters: tests/integration/test_warehouse.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from config import load_settings
from config.settings import ConfigError
from connectors.archive import EMPTY_SCHEMAS, connect, present_tables, sink_ddl, warehouse_url
from zhongtai.cli_warehouse import parse_time
from zhongtai.services.warehouse import EXAMPLES, live_counters, run_sql

MIN = 60_000
T0 = 1_795_132_800_000  # 2026-11-20T00:00Z


def _write_events(root: Path, rows: list[tuple]) -> None:
    import duckdb

    folder = root / "events" / "dt=2026-11-20"
    folder.mkdir(parents=True)
    con = duckdb.connect()
    con.execute("CREATE TABLE e (event_id VARCHAR, event_type VARCHAR, ts_ms BIGINT, anchor VARCHAR, "
                "campaign VARCHAR, channel VARCHAR, amount DECIMAL(18, 2))")
    con.executemany("INSERT INTO e VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    con.execute(f"COPY e TO '{folder / 'part-0-0'}' (FORMAT parquet)")
    # a file still in progress (hidden) is not part of the table
    con.execute(f"COPY e TO '{folder / '.part-1-0.inprogress.x'}' (FORMAT parquet)")


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    _write_events(tmp_path, [
        ("e1", "page_view", T0 + 5, "device_id:a", "c|x", "web", None),
        ("e2", "purchase", T0 + 10, "device_id:a", "c|x", "web", "10.5"),
        ("e3", "add_to_cart", T0 + 20, "device_id:b", "c|x", "web", None),
        ("e4", "page_view", T0 + MIN, "device_id:a", None, "app", None),
        ("e5", "purchase", T0 + MIN + 1, "device_id:b", "c", "x|web", "2"),
    ])
    return tmp_path


def test_live_counters_match_the_documented_semantics(warehouse: Path) -> None:
    got = live_counters(load_settings(), warehouse=warehouse.as_uri())
    z = {"views": "0", "carts": "0", "purchases": "0"}
    assert got == {
        "all:202611200000": {"views": "1", "carts": "1", "purchases": "1", "events": "3", "persons": "2",
                             "revenue": "10.50"},
        "all:202611200001": {**z, "views": "1", "purchases": "1", "events": "2", "persons": "2", "revenue": "2.00"},
        "c\\|x|web:202611200000": {"views": "1", "carts": "1", "purchases": "1", "events": "3", "persons": "2",
                                    "revenue": "10.50"},
        "c|x\\|web:202611200001": {**z, "purchases": "1", "events": "1", "persons": "1", "revenue": "2.00"},
    }


def test_tables_without_files_are_empty_and_others_absent(warehouse: Path) -> None:
    assert present_tables(warehouse) == ["events"]
    con = connect(warehouse)
    try:
        for t in EMPTY_SCHEMAS:
            assert con.execute(f"SELECT count(*) FROM {t}").fetchone() == (0,)
        with pytest.raises(Exception, match="dlq"):
            con.execute("SELECT * FROM dlq")
    finally:
        con.close()
    assert run_sql(load_settings(), EXAMPLES["roi"][1], warehouse=str(warehouse)).rows == []


def test_an_empty_warehouse_says_how_to_fill_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="archive.enabled"):
        run_sql(load_settings(), "SELECT 1", warehouse=tmp_path.as_uri())
    with pytest.raises(ValueError, match="Spark, Trino or Hive"):
        run_sql(load_settings(), "SELECT 1", warehouse="s3://bucket/wh")


def test_settings_place_the_warehouse() -> None:
    s = load_settings()
    assert warehouse_url(s) == (s.home / "warehouse" / "default").as_uri()
    assert warehouse_url(load_settings(overrides={"namespace": "ns1"})).endswith("/warehouse/ns1")
    s3 = load_settings(overrides={"archive": {"path": "s3://bucket/wh/"}})
    assert warehouse_url(s3) == "s3://bucket/wh"
    ddl = sink_ddl("t", "events", [("a", "BIGINT"), ("dt", "STRING")], s3)
    assert "'path' = 's3://bucket/wh/events'" in ddl and "PARTITIONED BY (dt)" in ddl and "'format' = 'parquet'" in ddl
    with pytest.raises(ConfigError, match="archive.path must be a URL"):
        load_settings(overrides={"archive": {"path": "/tmp/wh"}})


def test_times_are_ms_or_iso() -> None:
    assert parse_time("1795132800000") == T0
    assert parse_time("2026-11-20") == T0
    assert parse_time("2026-11-20T08:00:00+08:00") == T0
    assert parse_time("2026-11-20T00:01:00Z") == T0 + MIN
    with pytest.raises(argparse.ArgumentTypeError, match="ISO-8601"):
        parse_time("yesterday")


def test_sql_side_loads_without_pyflink(warehouse: Path) -> None:
    """``zhongtai sql`` never starts a JVM: its modules import, and a query runs, with ``pyflink`` unimportable."""
    import subprocess
    import sys

    from tests.helpers import ROOT

    code = ("import sys; sys.modules['pyflink'] = None\n"
            "import connectors.archive, zhongtai.cli_warehouse, zhongtai.services.warehouse as w\n"
            "from config import load_settings\n"
            f"print(w.run_sql(load_settings(), 'SELECT count(*) FROM events', warehouse={str(warehouse)!r}).rows)\n"
            "assert not any(k.startswith('pyflink.') for k in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert (out.returncode, out.stdout.strip()) == (0, "[(5,)]"), out.stderr
