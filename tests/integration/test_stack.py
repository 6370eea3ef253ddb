"""Integration tests of the local stack (``zhongtai.devtools.stack``): they start what is missing and leave
everything running. Each test uses a fresh topic / key / row so runs never see each other's data.

    .venv/bin/python -m pytest -m stack tests/integration/test_stack.py          # Kafka, Redis, HBase
    .venv/bin/python -m pytest -m flink tests/integration/test_stack.py          # + the Flink cluster / connector
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
import urllib.request
import uuid

import pytest

from config import load_settings
from zhongtai.devtools.stack import (
    create_topics,
    ensure_tables,
    flink_cli,
    flink_cluster_up,
    kafka_connector_jars,
    status,
    up,
)

CORE = ("redis", "kafka", "hbase", "hbase-thrift")


@pytest.fixture(scope="module")
def settings():
    s = load_settings()
    up(s, services=("redis", "kafka", "hbase"), log=lambda _m: None)
    return s


def _fresh(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.mark.stack
def test_status_lists_every_service_and_core_ones_run(settings):
    st = {d["name"]: d for d in status(settings)}
    assert set(st) == {"redis", "kafka", "hbase", "hbase-thrift", "flink-jobmanager", "flink-taskmanager",
                       "redis-cluster-1", "redis-cluster-2", "redis-cluster-3"}
    for name in CORE:
        assert st[name]["state"] == "running", st[name]
        assert isinstance(st[name]["pid"], int)
        assert st[name]["log"].endswith(f"/logs/{name}.log")
    assert st["redis"]["ports"] == [settings.redis.port]
    assert st["kafka"]["ports"] == [
        int(settings.kafka.bootstrap.rsplit(":", 1)[1]),
        settings.stack.kafka_controller_port,
    ]
    assert st["hbase-thrift"]["ports"] == [settings.hbase.port]


@pytest.mark.stack
def test_up_is_idempotent_quick_and_keeps_pids(settings):
    before = {d["name"]: d["pid"] for d in status(settings) if d["name"] in CORE}
    messages: list[str] = []
    t0 = time.monotonic()
    up(settings, services=("redis", "kafka", "hbase"), log=messages.append)
    elapsed = time.monotonic() - t0
    after = {d["name"]: d["pid"] for d in status(settings) if d["name"] in CORE}
    assert after == before
    assert elapsed < 10.0, f"second up() took {elapsed:.1f}s"
    assert [m for m in messages if "already running" in m] == [
        f"{n}: already running (pid {before[n]})" for n in CORE
    ]
    assert ensure_tables(settings) == []


@pytest.mark.stack
def test_create_topics_is_idempotent(settings):
    topic = _fresh("zt.test.topics.")
    assert create_topics(settings, [topic], partitions=3) == [topic]
    assert create_topics(settings, [topic, topic]) == []
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": settings.kafka.bootstrap}).list_topics(topic, timeout=10)
    assert len(md.topics[topic].partitions) == 3


@pytest.mark.stack
def test_kafka_produce_consume_round_trip(settings):
    from confluent_kafka import Consumer, Producer

    topic = _fresh("zt.test.rt.")
    create_topics(settings, [topic])
    sent = {f"k{i}".encode(): f"v{i}".encode() for i in range(5)}
    p = Producer({"bootstrap.servers": settings.kafka.bootstrap, "enable.idempotence": True})
    for k, v in sent.items():
        p.produce(topic, key=k, value=v)
    assert p.flush(15) == 0
    c = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": _fresh("g-"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    got: dict[bytes, bytes] = {}
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(got) < len(sent) and time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is not None and m.error() is None:
                got[m.key()] = m.value()
    finally:
        c.close()
    assert got == sent


@pytest.mark.stack
def test_broker_never_deletes_records_by_age(settings):
    """Generated streams carry fixed event times as record timestamps (weeks old by now): a broker that
    deletes by age (Kafka's default, 7 days) would drop them minutes after they are produced."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    res = ConfigResource(ConfigResource.Type.BROKER, "1")
    configs = admin.describe_configs([res])[res].result(timeout=30)
    assert configs["log.retention.ms"].value == "-1"
    assert configs["log.retention.bytes"].value == str(1 << 30)


@pytest.mark.stack
def test_redis_set_get(settings):
    from connectors.redis_clients import redis_client

    r = redis_client(settings.redis)
    key = _fresh(f"{settings.redis.prefix}:test:")
    try:
        assert r.set(key, "值-1", ex=60) is True
        assert r.get(key) == "值-1"
        assert r.config_get("save") == {"save": ""}
    finally:
        r.delete(key)
        r.close()


@pytest.mark.stack
def test_hbase_put_get_on_prefixed_profile_table(settings):
    import happybase

    conn = happybase.Connection(
        settings.hbase.host,
        settings.hbase.port,
        table_prefix=settings.hbase.namespace,
        table_prefix_separator="_",
    )
    try:
        assert {b"profile", b"identity", b"actions"} <= set(conn.tables())
        table = conn.table("profile")
        assert set(table.families()) == {b"b", b"m", b"t", b"i"}  # b: the per-minute buckets the store writes
        row = _fresh("p-").encode()
        table.put(row, {b"m:orders_7d": b"3", b"t:vip": b"1", b"i:user_id": b"u42"})
        assert table.row(row) == {b"m:orders_7d": b"3", b"t:vip": b"1", b"i:user_id": b"u42"}
        table.delete(row)
        assert table.row(row) == {}
        assert set(conn.table("identity").families()) == {b"p", b"e"}
        assert set(conn.table("actions").families()) == {b"a"}
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------------
# Flink: the standalone cluster and the Kafka connector


def _rest(settings, path: str) -> dict:
    with urllib.request.urlopen(settings.flink.rest_url.rstrip("/") + path, timeout=10) as r:
        return json.loads(r.read())


@pytest.mark.flink
def test_flink_cluster_runs_a_python_job_to_finished(settings, tmp_path):
    flink_cluster_up(settings, log=lambda _m: None)
    assert _rest(settings, "/overview")["taskmanagers"] >= 1
    name = _fresh("zt-stack-smoke-")
    job = tmp_path / "job.py"
    job.write_text(
        textwrap.dedent(f"""
        from pyflink.common import Types
        from pyflink.datastream import StreamExecutionEnvironment
        env = StreamExecutionEnvironment.get_execution_environment()
        env.set_parallelism(2)
        ds = env.from_collection([("a", 1), ("b", 2), ("a", 3)],
                                 type_info=Types.TUPLE([Types.STRING(), Types.INT()]))
        ds.key_by(lambda t: t[0]).reduce(lambda x, y: (x[0], x[1] + y[1])).print()
        env.execute("{name}")
    """)
    )
    host_port = settings.flink.rest_url.split("://", 1)[1].rstrip("/")
    proc = subprocess.run(
        [*flink_cli(settings), "run", "-m", host_port, "-py", str(job)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    jobs = [j for j in _rest(settings, "/jobs/overview")["jobs"] if j["name"] == name]
    assert [j["state"] for j in jobs] == ["FINISHED"]


@pytest.mark.stack
@pytest.mark.flink
def test_flink_kafka_sql_connector_writes_and_reads_back(settings):
    """flink-sql-connector-kafka 5.0.0-2.2 on Flink 2.3.0 (embedded mini-cluster), raw format."""
    from pyflink.table import EnvironmentSettings, TableEnvironment

    topic = _fresh("zt.test.conn.")
    create_topics(settings, [topic], partitions=1)
    jars = kafka_connector_jars(settings)
    assert [p.name for p in jars] == [
        f"flink-sql-connector-kafka-{settings.stack.flink_kafka_connector.rsplit(':', 1)[1]}.jar"
    ]
    t = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t.get_config().set("pipeline.jars", ";".join(p.as_uri() for p in jars))
    t.get_config().set("parallelism.default", "1")
    common = f"'connector'='kafka','topic'='{topic}','properties.bootstrap.servers'='{settings.kafka.bootstrap}','format'='raw'"
    t.execute_sql(f"CREATE TABLE sink_t (v STRING) WITH ({common})")
    t.execute_sql("INSERT INTO sink_t VALUES ('r1'), ('r2'), ('r3')").wait()
    t.execute_sql(
        f"CREATE TABLE src_t (v STRING) WITH ({common}, 'properties.group.id'='{_fresh('g-')}',"
        "'scan.startup.mode'='earliest-offset','scan.bounded.mode'='latest-offset')"
    )
    with t.execute_sql("SELECT v FROM src_t").collect() as res:
        rows = sorted(r[0] for r in res)
    assert rows == ["r1", "r2", "r3"]


@pytest.mark.stack
@pytest.mark.flink
def test_flink_kafka_sink_exactly_once_commits_on_the_local_broker(settings):
    """KafkaSink EXACTLY_ONCE (transactions) against our broker's transaction.max.timeout.ms."""
    import sys

    from confluent_kafka import Consumer
    from pyflink.common import Configuration, SimpleStringSchema, Types
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.datastream.connectors.base import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink

    topic = _fresh("zt.test.eos.")
    create_topics(settings, [topic], partitions=1)
    env = StreamExecutionEnvironment.get_execution_environment(
        Configuration().set_string("python.executable", sys.executable)  # else `python` from PATH
    )
    env.add_jars(*[p.as_uri() for p in kafka_connector_jars(settings)])
    env.enable_checkpointing(1000)
    env.set_parallelism(1)
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(settings.kafka.bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
        .set_transactional_id_prefix(f"zt-test-{topic}")
        .set_property("transaction.timeout.ms", str(settings.kafka.transaction_timeout_ms))
        .build()
    )
    env.from_collection(["a", "b", "c"], type_info=Types.STRING()).map(
        lambda x: x.upper(), output_type=Types.STRING()
    ).sink_to(sink)
    env.execute(_fresh("zt-eos-"))
    c = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": _fresh("g-"),
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    got: list[str] = []
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(got) < 3 and time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is not None and m.error() is None:
                got.append(m.value().decode())
    finally:
        c.close()
    assert sorted(got) == ["A", "B", "C"]
