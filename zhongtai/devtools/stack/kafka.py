"""A single combined broker + controller Kafka (KRaft) from the Maven Central jars.

Data lives in ``<run_dir>/data/kafka`` (formatted once, then reused), configuration in
``<run_dir>/conf/kafka/``, output in ``<run_dir>/logs/kafka.log``.

Secured (``kafka.security.protocol: SASL_PLAINTEXT``): the client listener takes SCRAM only, the
authorizer (``StandardAuthorizer``) denies whatever no ACL allows, ``kafka.security.username`` is the super
user (the broker's own inter-broker login), and every principal of ``security.components`` is created at
format time (``StorageTool format --add-scram``) and given the ACLs of its component
(``connectors.kafka_admin.component_acls``) once the broker answers. The controller listener stays
PLAINTEXT on 127.0.0.1 (its principal, ANONYMOUS, is a super user: it is the broker talking to itself); a
production cluster protects it too (docs/security.md). TLS is for real clusters: the local stack refuses
``SASL_SSL`` / ``SSL``.
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from connectors.kafka_admin import apply_acls, component_acls
from connectors.kafka_security import client_config, jaas_config

from ._proc import Log, Paths, StackError, java, run_checked, spawn
from .jars import HERE, lib_dir

if TYPE_CHECKING:
    from config import Settings

NAME = "kafka"
MARKER = "kafka.Kafka"


def host_port(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host or "127.0.0.1", int(port)


def ports(settings: Settings) -> list[int]:
    return [host_port(settings.kafka.bootstrap)[1], settings.stack.kafka_controller_port]


def _cluster_id() -> str:
    while True:  # Kafka's own Uuid.randomUuid: URL-safe base64, never starting with '-'
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def server_properties(settings: Settings, data_dir: Path) -> str:
    host, port = host_port(settings.kafka.bootstrap)
    cport = settings.stack.kafka_controller_port
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{host}:{cport}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": str(settings.kafka.partitions),
        "auto.create.topics.enable": "true",
        "default.replication.factor": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Flink's exactly-once sink asks for long transactions; the broker caps them here.
        "transaction.max.timeout.ms": str(max(900_000, settings.kafka.transaction_timeout_ms)),
        # No deletion by age: retention by time compares the RECORD timestamps with the wall clock, and
        # the generator's streams carry fixed event times (zhongtai.devtools.generator.model.DEFAULT_START_MS), so
        # a week after that date the broker deleted test and bench data minutes after it was produced
        # (a job then waited for ever for records that were gone). The local stack is bounded by size.
        "log.retention.ms": "-1",
        "log.retention.bytes": str(1 << 30),
        "num.network.threads": "2",
        "num.io.threads": "4",
    }
    props |= _sasl_properties(settings, host, port, cport)
    return "# written by zhongtai.devtools.stack on every start; edit settings instead\n" + "".join(
        f"{k}={v}\n" for k, v in props.items()
    )


def _sasl_properties(settings: Settings, host: str, port: int, cport: int) -> dict[str, str]:
    sec = settings.kafka.security
    if sec.protocol == "PLAINTEXT":
        return {}
    if not sec.sasl or sec.protocol != "SASL_PLAINTEXT":
        raise StackError(f"kafka.security.protocol {sec.protocol}: the local stack serves PLAINTEXT or SASL_PLAINTEXT "
                         "(TLS needs certificates of a real deployment: docs/security.md)")
    assert sec.password is not None
    mech = sec.sasl_mechanism
    return {
        "listeners": f"SASL_PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
        "advertised.listeners": f"SASL_PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": mech,
        "sasl.mechanism.inter.broker.protocol": mech,
        f"listener.name.sasl_plaintext.{mech.lower()}.sasl.jaas.config": jaas_config(
            sec.username, sec.password.get_secret_value(), shaded=False),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{sec.username};User:ANONYMOUS",
    }


def scram_users(settings: Settings) -> dict[str, str]:
    """``username -> password`` of every SCRAM principal the secured broker knows: the super user
    (``kafka.security``) and each component's (``security.components.*.kafka``)."""
    sec = settings.kafka.security
    users = {sec.username: sec.password.get_secret_value()} if sec.sasl and sec.password else {}
    for creds in settings.security.components.values():
        if creds.kafka is not None:
            users[creds.kafka.username] = creds.kafka.password.get_secret_value()
    return users


def start(settings: Settings, paths: Paths, log: Log) -> int:
    lib = lib_dir(settings, "kafka")
    conf = paths.conf / "kafka"
    data = paths.data / "kafka"
    conf.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    props = conf / "server.properties"
    props.touch(mode=0o600)  # with SASL it holds the broker's own password
    props.write_text(server_properties(settings, data))
    jvm = [
        java(),
        f"-Xmx{settings.stack.kafka_heap}",
        "-Xms128m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={HERE / 'kafka-log4j2.properties'}",
        f"-Dkafka.logs.dir={paths.logs}",
        "-cp",
        f"{lib}/*",
    ]
    if not (data / "meta.properties").exists():
        cid_file = conf / "cluster.id"
        if not cid_file.exists():
            cid_file.write_text(_cluster_id())
        log(f"kafka: formatting storage in {data}")
        users = scram_users(settings)
        scram = [a for u, pw in users.items()
                 for a in ("--add-scram", f"{settings.kafka.security.sasl_mechanism}=[name={u},password={pw}]")]
        run_checked(
            NAME,
            [
                *jvm,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                cid_file.read_text().strip(),
                "-c",
                str(props),
                "--ignore-formatted",
                *scram,
            ],
            paths,
            secrets=list(users.values()),
        )
    return spawn(NAME, [*jvm, MARKER, str(props)], paths)


def probe(settings: Settings) -> bool:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(
        {**client_config(settings.kafka), "socket.timeout.ms": 2000, "log_level": 0}
    )
    md = admin.list_topics(timeout=2)
    if md.brokers and settings.kafka.security.sasl:
        apply_acls(settings, component_acls(settings))  # idempotent: the same bindings again are no change
    return bool(md.brokers)
