"""Namespaces: one name that puts every shared name of a run apart from every other run's (docs/deploy.md).

A run on a shared Kafka, Redis, HBase and Flink meets other runs through names: topics, consumer groups,
Kafka transactional ids, the Redis key prefix, the HBase table prefix, the Flink job name (which names the
job's checkpoint folder and its transactional ids). ``namespace: NAME`` (``zhongtai --namespace NAME``,
``ZT__NAMESPACE``) qualifies each of those configured names as ``NAME.<name>``:

========================  ==========================  =============================
key                       no namespace                namespace ``a``
========================  ==========================  =============================
kafka.topics.events       ``zt\\.events\\..*``          ``a\\.(?:zt\\.events\\..*)``
kafka.topics.dlq (etc.)   ``zt.dlq``                  ``a.zt.dlq``
kafka.consumer_group      ``zt-job``                  ``a.zt-job``
worker.group              ``zt-workers``              ``a.zt-workers``
redis.prefix              ``zt`` (keys ``zt:...``)    ``a.zt`` (keys ``a.zt:...``)
hbase.namespace           ``zt`` (``zt_profile``)     ``a.zt`` (``a.zt_profile``)
flink.job_name            ``zhongtai-events``         ``a.zhongtai-events``
collector.topic           ``zt.events.collector``     ``a.zt.events.collector``
========================  ==========================  =============================

Everything derived from these follows (store log ``a.zt.store.a.zt-job``, action topics, the job's and the
workers' transactional ids, the checkpoint folder ``<checkpoint dir>/a.zhongtai-events``, savepoints).

The namespace applies to a value you set yourself too (in your YAML or a ``ZT__`` variable): it is the
*base* that the namespace qualifies (``redis.prefix: legacy`` + namespace ``a`` = ``a.legacy``), so one
configuration file serves every namespace and ``--namespace`` isolates whatever the file says. For an
exact name, run without a namespace.

Why a prefix and these characters: the namespace ends at the first ``.`` (topics, groups, job names), ``.``
before ``:`` (Redis) or ``_`` (HBase), none of which a namespace may hold, so no name of one namespace can
be a name, a key-scan prefix or a topic-pattern match of another's. Kafka's topic characters are
``[a-zA-Z0-9._-]`` and Kafka confuses ``.`` with ``_`` in metric names; HBase table names allow
``[a-zA-Z0-9_.-]`` and may not start with ``-`` or ``.``; lower case keeps two namespaces apart on file
systems that ignore case (checkpoint folders).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

NAMESPACE_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")

#: The configuration keys that hold shared names: ``(section path, key)``; every ``kafka.topics`` key but
#: ``events`` (a pattern) is a topic name or a topic name prefix.
NAMED_KEYS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("kafka", "topics"), "dlq"),
    (("kafka", "topics"), "identity_changes"),
    (("kafka", "topics"), "tag_changes"),
    (("kafka", "topics"), "actions_prefix"),
    (("kafka", "topics"), "control"),
    (("kafka", "topics"), "control_results"),
    (("kafka", "topics"), "delivery"),
    (("kafka", "topics"), "audit"),
    (("kafka", "topics"), "pricing"),
    (("kafka", "topics"), "store_log_prefix"),
    (("kafka",), "consumer_group"),
    (("redis",), "prefix"),
    (("hbase",), "namespace"),
    (("worker",), "group"),
    (("flink",), "job_name"),
    (("collector",), "topic"),
)
PATTERN_KEYS: tuple[tuple[tuple[str, ...], str], ...] = ((("kafka", "topics"), "events"),)


def check_namespace(name: str) -> str:
    """``name`` if it is a valid namespace ("" is none), else ``ValueError`` saying what is allowed and why."""
    if name == "" or NAMESPACE_RE.fullmatch(name):
        return name
    raise ValueError(
        f"namespace {name!r} is not allowed: use 1-32 lower-case letters, digits and '-', starting and ending "
        "with a letter or digit (it becomes part of Kafka topic and group names, HBase table names, Redis keys "
        "and checkpoint folders; '.', ':' and '_' separate it from the rest of those names, so it cannot hold "
        "them)"
    )


def qualify(namespace: str, name: str) -> str:
    """``name`` in ``namespace``: ``<namespace>.<name>``; unchanged without a namespace."""
    return f"{namespace}.{name}" if namespace else name


def qualify_pattern(namespace: str, pattern: str) -> str:
    """A topic regular expression (matched against the whole topic name) that matches exactly the topics
    ``qualify(namespace, t)`` for the topics ``t`` that ``pattern`` matches."""
    if not namespace:
        return pattern
    inner = pattern.removeprefix("^")
    if inner.endswith("$") and not inner.endswith("\\$"):
        inner = inner[:-1]
    return f"{check_namespace(namespace)}\\.(?:{inner})"  # its characters stand for themselves in a regex


def apply_namespace(data: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration tree ``data`` (every key present: ``Settings.model_dump()``) with every shared name
    qualified by its ``namespace`` key; ``load_settings`` calls this once, on the merged and validated tree."""
    namespace = check_namespace(data.get("namespace") or "")
    out = _copy_tree(data)
    if not namespace:
        return out
    for keys, fn in ((NAMED_KEYS, qualify), (PATTERN_KEYS, qualify_pattern)):
        for path, key in keys:
            node = out
            for part in path:
                node = node[part]
            node[key] = fn(namespace, node[key])
    return out


def _copy_tree(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy_tree(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def zhongtai_command(settings: Any) -> str:
    """``zhongtai`` as a hint should spell it for these settings: with their ``--namespace``."""
    return f"zhongtai --namespace {settings.namespace}" if settings.namespace else "zhongtai"
