"""Kafka administration the job and the services need: create topics, list the topics a pattern matches.

The one place (with the connectors of the job's tables) where the job, the API and the workers talk to
the Kafka admin API; the local stack uses the same functions (zhongtai/devtools/stack).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from connectors.kafka_security import client_config

if TYPE_CHECKING:  # pragma: no cover
    from config import Settings


class KafkaAdminError(RuntimeError):
    """A topic could not be created or listed; the message names the topic and the broker."""


class _AuthWatch:
    """The ``error_cb`` of an admin client: remembers whether the broker refused our credentials (librdkafka
    reports a failed SASL login there, and the request itself then fails as a mere transport failure)."""

    def __init__(self) -> None:
        self.refused = False

    def __call__(self, err: object) -> None:
        from confluent_kafka import KafkaError

        if getattr(err, "code", lambda: None)() == KafkaError._AUTHENTICATION:
            self.refused = True


def _admin(settings: Settings) -> tuple[object, _AuthWatch]:
    from confluent_kafka.admin import AdminClient

    watch = _AuthWatch()
    conf: dict[str, Any] = {**client_config(settings.kafka), "error_cb": watch}
    return AdminClient(conf), watch


def refused_credentials(settings: Settings) -> str:
    """What to say when the broker refused the configured SCRAM login (the password itself is never said)."""
    sec = settings.kafka.security
    return (f"Kafka at {settings.kafka.bootstrap} refused the credentials of user {sec.username!r} "
            f"({sec.sasl_mechanism}): check kafka.security.username and kafka.security.password (env "
            "ZT__KAFKA__SECURITY__PASSWORD), or this component's security.components.<component>.kafka")


def list_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """The topics on ``settings.kafka.bootstrap`` (internal ``__*`` topics left out), sorted."""
    from confluent_kafka import KafkaException

    admin, watch = _admin(settings)
    try:
        names = admin.list_topics(timeout=timeout_s).topics  # type: ignore[attr-defined]
    except KafkaException as e:
        admin.poll(0)  # type: ignore[attr-defined]  # serves the error callbacks
        if watch.refused:
            raise KafkaAdminError(refused_credentials(settings)) from e
        raise KafkaAdminError(f"listing the topics of {settings.kafka.bootstrap} failed: {e}; is Kafka running "
                              "(zhongtai stack status) and kafka.bootstrap right?") from e
    return sorted(t for t in names if not t.startswith("__"))


def matching_topics(settings: Settings, pattern: str) -> list[str]:
    """The topics whose whole name matches the regular expression ``pattern`` (as Kafka's pattern
    subscription and Flink's ``topic-pattern`` match them)."""
    rx = re.compile(pattern)
    return [t for t in list_topics(settings) if rx.fullmatch(t)]


def create_topics(
    settings: Settings, names: Iterable[str], partitions: int | None = None, timeout_s: float = 30.0
) -> list[str]:
    """Create the topics in ``names`` that do not exist yet (replication 1).

    ``partitions`` defaults to ``settings.kafka.partitions``. Returns the names actually created;
    existing topics are left as they are (their partition count is not changed).
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    admin = AdminClient(client_config(settings.kafka))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [n for n in wanted if n not in existing]
    if not missing:
        return []
    n = partitions or settings.kafka.partitions
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=n, replication_factor=1) for t in missing],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    created = []
    for topic, fut in futures.items():
        try:
            fut.result()
            created.append(topic)
        except KafkaException as e:
            err = e.args[0]
            if err.name() == "TOPIC_ALREADY_EXISTS":
                continue
            raise KafkaAdminError(
                f"creating topic {topic!r} on {settings.kafka.bootstrap} failed: {err.str()}"
            ) from e
    return created


def records_in(settings: Settings, topics: list[str], timeout_s: float = 10.0) -> int:
    """The records the topics hold now (sum over their partitions of high − low watermark)."""
    from confluent_kafka import Consumer

    c = Consumer({**client_config(settings.kafka), "group.id": "zt-admin-watermarks",
                  "enable.auto.commit": False})
    try:
        meta = c.list_topics(timeout=timeout_s)
        total = 0
        from confluent_kafka import TopicPartition

        for t in topics:
            for p in meta.topics[t].partitions:
                lo, hi = c.get_watermark_offsets(TopicPartition(t, p), timeout=timeout_s)
                total += max(hi - lo, 0)
        return total
    finally:
        c.close()


#: ``(resource type, name, pattern type, operations)`` of one ACL grant: ``TOPIC`` / ``GROUP`` /
#: ``TRANSACTIONAL_ID``, ``LITERAL`` or ``PREFIXED``, Kafka operation names (``READ``, ``WRITE``...).
Grant = tuple[str, str, str, tuple[str, ...]]

_PRODUCE = ("WRITE", "DESCRIBE", "CREATE")
_CONSUME = ("READ", "DESCRIBE")


def component_acls(settings: Settings) -> dict[str, list[Grant]]:
    """The grants each component's principal needs (``security.components.<component>.kafka``), least privilege
    within its tenant: every shared name of a namespace starts with ``<namespace>.`` (config/namespace.py), so
    a prefixed grant on one tenant's names reaches nothing of another's. docs/security.md lists them.

    * ``job``: the event job and the applier ``zhongtai run`` starts with it: reads and writes its topics,
      reads as its consumer groups, writes with its transactional ids (both derived from the group / job name);
    * ``applier``: reads the store log as ``<group>-store``;
    * ``worker``: reads ``<actions_prefix><channel>``, writes their ``.dlq`` and the delivery receipts;
    * ``api``: publishes control messages and reads the job's answers, writes the audit log (``zt.audit``);
    * ``collector``: writes its one topic."""
    t, ns = settings.kafka.topics, settings.in_namespace
    group, job = settings.kafka.consumer_group, settings.flink.job_name
    return {
        "job": [("TOPIC", ns("zt."), "PREFIXED", _PRODUCE + ("READ",)), ("GROUP", group, "PREFIXED", ("READ",)),
                ("TRANSACTIONAL_ID", job, "PREFIXED", ("WRITE", "DESCRIBE"))],
        "applier": [("TOPIC", t.store_log_prefix, "PREFIXED", _CONSUME), ("GROUP", group, "PREFIXED", ("READ",))],
        "worker": [("TOPIC", t.actions_prefix, "PREFIXED", _PRODUCE + ("READ",)),
                   ("TOPIC", t.delivery, "LITERAL", _PRODUCE), ("GROUP", settings.worker.group, "PREFIXED", ("READ",)),
                   ("TRANSACTIONAL_ID", settings.redis.prefix + "-", "PREFIXED", ("WRITE", "DESCRIBE"))],
        "api": [("TOPIC", t.control, "LITERAL", _PRODUCE + ("READ",)), ("TOPIC", t.control_results, "LITERAL", _CONSUME),
                ("TOPIC", t.audit, "LITERAL", _PRODUCE + ("READ",)), ("GROUP", "zt-read-", "PREFIXED", ("READ",))],
        "collector": [("TOPIC", settings.collector.topic, "LITERAL", _PRODUCE)],
    }


def apply_acls(settings: Settings, grants: dict[str, list[Grant]], timeout_s: float = 30.0) -> int:
    """Create the ALLOW bindings of ``grants`` for the principal of each component that has its own
    (``security.components.<component>.kafka``), as ``settings``' (super) user; returns how many bindings.
    Creating a binding that exists changes nothing, so this can run on every start."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    bindings = []
    for component, rows in grants.items():
        creds = settings.security.components.get(component)  # type: ignore[call-overload]
        if creds is None or creds.kafka is None:
            continue
        principal = f"User:{creds.kafka.username}"
        bindings += [AclBinding(ResourceType[rtype], name, ResourcePatternType[pattern], principal, "*",
                                AclOperation[op], AclPermissionType.ALLOW)
                     for rtype, name, pattern, ops in rows for op in ops]
    if not bindings:
        return 0
    admin = AdminClient(client_config(settings.kafka))
    for binding, fut in admin.create_acls(bindings, request_timeout=timeout_s).items():
        try:
            fut.result()
        except KafkaException as e:
            raise KafkaAdminError(f"creating the ACL {binding} on {settings.kafka.bootstrap} failed: "
                                  f"{e.args[0].str()}; is kafka.security.username a super user?") from e
    return len(bindings)
