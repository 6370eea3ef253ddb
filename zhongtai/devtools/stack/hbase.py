"""Standalone HBase (ZooKeeper + master + region server in one JVM) and its Thrift1 server.

Data lives in ``<run_dir>/data/hbase`` (``file://`` root dir), configuration in
``<run_dir>/conf/hbase/hbase-site.xml``, output in ``<run_dir>/logs/hbase.log`` and
``hbase-thrift.log``.

Tables: the Thrift1 API that happybase speaks cannot create HBase namespaces, so the documented
layout is *prefixed* tables in the default namespace: ``{namespace}_profile`` etc., opened with
``happybase.Connection(..., table_prefix=namespace, table_prefix_separator="_")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from connectors.hbase_store import TABLES as STORE_TABLES
from connectors.hbase_store import missing_families, schema_advice

from ._proc import Log, Paths, java, port_open, spawn
from .jars import HERE, lib_dir

if TYPE_CHECKING:
    from config import Settings

#: Table -> column families (names without the prefix): the store's own layout (one definition,
#: ``connectors.hbase_store.TABLES``; a second copy here once lacked the bucket family ``b``, and the
#: demo's writes to the stack-created table failed). See DESIGN.md "Storage layout".
TABLES: dict[str, tuple[str, ...]] = {t: tuple(f) for t, f in STORE_TABLES.items()}
PREFIX_SEPARATOR = "_"
#: RPC ports of the master and the region server inside the standalone JVM.
MASTER_PORT = 16000
REGIONSERVER_PORT = 16020

# From HBase's bin/hbase (add_jdk11_jvm_flags), needed on JDK 17.
JDK17_FLAGS = [
    "-Dorg.apache.hbase.thirdparty.io.netty.tryReflectionSetAccessible=true",
    "--add-modules",
    "jdk.unsupported",
    *[
        f"--add-opens=java.base/{p}=ALL-UNNAMED"
        for p in (
            "java.io",
            "java.nio",
            "sun.nio.ch",
            "java.lang",
            "jdk.internal.ref",
            "java.lang.reflect",
            "java.util",
            "java.util.concurrent",
        )
    ],
    *[
        f"--add-exports=java.base/{p}=ALL-UNNAMED"
        for p in ("jdk.internal.misc", "sun.net.dns", "sun.net.util")
    ],
    "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
]


def site_xml(settings: Settings, data: Path) -> str:
    props = {
        "hbase.cluster.distributed": "false",
        "hbase.rootdir": (data / "root").as_uri(),
        "hbase.tmp.dir": str(data / "tmp"),
        "hbase.zookeeper.property.dataDir": str(data / "zookeeper"),
        "hbase.zookeeper.quorum": "127.0.0.1",
        "hbase.zookeeper.property.clientPort": str(settings.stack.zookeeper_port),
        "hbase.unsafe.stream.capability.enforce": "false",
        "hbase.master.info.port": "-1",
        "hbase.regionserver.info.port": "-1",
        "hbase.master.port": str(MASTER_PORT),
        "hbase.regionserver.port": str(REGIONSERVER_PORT),
        "hbase.master.ipc.address": "127.0.0.1",
        "hbase.regionserver.ipc.address": "127.0.0.1",
        "hbase.master.hostname": "127.0.0.1",
        "hbase.regionserver.hostname": "127.0.0.1",
        "hbase.thrift.info.port": "-1",
        "hbase.regionserver.handler.count": "10",
        "hbase.thrift.minWorkerThreads": "4",
    }
    body = "".join(
        f"  <property><name>{escape(k)}</name><value>{escape(v)}</value></property>\n"
        for k, v in props.items()
    )
    return (
        '<?xml version="1.0"?>\n<!-- written by zhongtai.devtools.stack on every start; edit settings instead -->\n'
        f"<configuration>\n{body}</configuration>\n"
    )


def _jvm(settings: Settings, paths: Paths, heap: str) -> list[str]:
    conf = paths.conf / "hbase"
    return [
        java(),
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-Djava.net.preferIPv4Stack=true",
        "-Djava.awt.headless=true",
        "-Dzookeeper.admin.enableServer=false",
        f"-Dlog4j2.configurationFile={HERE / 'hbase-log4j2.properties'}",
        f"-Dhbase.log.dir={paths.logs}",
        *JDK17_FLAGS,
        "-cp",
        f"{conf}:{lib_dir(settings, 'hbase')}/*",
    ]


@dataclass(frozen=True)
class _Proc:
    name: str
    marker: str
    grace_s: float

    def ports(self, settings: Settings) -> list[int]:
        if self.name == "hbase":
            return [settings.stack.zookeeper_port, MASTER_PORT, REGIONSERVER_PORT]
        return [settings.hbase.port]

    def start(self, settings: Settings, paths: Paths, log: Log) -> int:
        if self.name == "hbase":
            data = paths.data / "hbase"
            conf = paths.conf / "hbase"
            for d in (data / "tmp", data / "zookeeper", conf):
                d.mkdir(parents=True, exist_ok=True)
            (conf / "hbase-site.xml").write_text(site_xml(settings, data))
            argv = [*_jvm(settings, paths, settings.stack.hbase_heap), self.marker, "start"]
        else:
            # a Thrift server alone (a private one of the fault tests, against the shared master) needs
            # the site file only for ZooKeeper's address
            site = paths.conf / "hbase" / "hbase-site.xml"
            if not site.exists():
                site.parent.mkdir(parents=True, exist_ok=True)
                site.write_text(site_xml(settings, paths.data / "hbase"))
            argv = [
                *_jvm(settings, paths, settings.stack.thrift_heap),
                self.marker,
                "-b",
                "127.0.0.1",
                "-p",
                str(settings.hbase.port),
                "--infoport",
                "-1",
                "start",
            ]
        return spawn(self.name, argv, paths)

    def probe(self, settings: Settings) -> bool:
        if self.name == "hbase":
            # ZooKeeper answers first; the Thrift probe (tables()) then proves the master is initialised.
            return port_open(settings.stack.zookeeper_port)
        return bool(_connection(settings, prefixed=False).tables() is not None)


PROCS = [
    _Proc("hbase", "org.apache.hadoop.hbase.master.HMaster", grace_s=40.0),
    _Proc("hbase-thrift", "org.apache.hadoop.hbase.thrift.ThriftServer", grace_s=15.0),
]


def _connection(settings: Settings, prefixed: bool = True):
    import happybase

    kw = (
        {"table_prefix": settings.hbase.namespace, "table_prefix_separator": PREFIX_SEPARATOR}
        if prefixed
        else {}
    )
    return happybase.Connection(
        host=settings.hbase.host, port=settings.hbase.port, timeout=settings.hbase.timeout_ms, **kw
    )


def ensure_tables(settings: Settings) -> list[str]:
    """Create the zhongtai tables that are missing; returns the full names created (idempotent).

    A table of the local stack that lacks a column family (made by an older zhongtai) is re-created when
    it is empty; with rows in it, this raises and says how to add the family (Thrift1 cannot alter a table).
    """
    conn = _connection(settings)
    try:
        existing = {t.decode() for t in conn.tables()}  # names without the prefix
        stale = missing_families(conn)
        created = []
        for table, families in TABLES.items():
            if table in stale and next(iter(conn.table(table).scan(limit=1)), None) is None:
                conn.delete_table(table, disable=True)
                existing.discard(table)
                stale.pop(table)
            if table not in existing:
                conn.create_table(table, {f: {"max_versions": 1} for f in families})
                created.append(f"{settings.hbase.namespace}{PREFIX_SEPARATOR}{table}")
        if stale:
            raise RuntimeError(schema_advice(settings.hbase.namespace, stale))
        return created
    finally:
        conn.close()


def wait_tables_serving(settings: Settings, timeout_s: float) -> float:
    """Block until a get on every zhongtai table answers (regions assigned); returns seconds waited.

    The Thrift server answers ``tables()`` while the master is still assigning regions; a row read
    proves that puts and gets will work.
    """
    import time

    t0 = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - t0 < timeout_s:
        try:
            conn = _connection(settings)
            try:
                for table in TABLES:
                    conn.table(table).row(b"__zt_probe__")
                return time.monotonic() - t0
            finally:
                conn.close()
        except Exception as e:  # noqa: BLE001 - region not online yet / transport error
            last = e
            time.sleep(1.0)
    raise TimeoutError(f"HBase tables not serving within {timeout_s:.0f}s: {last!r}")
