"""Experiment definitions at run time: control messages -> definition rows for the SQL, results, targeting.

Pure (no pyflink, no clients, no clock: ``now_ms`` is an argument).

The job folds control messages of kind ``experiment`` (``zt.control``) over an
:class:`~.definitions.ExperimentRegistry` (:func:`control_step`). Every accepted message yields one
*definition row* ``(exp_key, packed)`` for the statistics SQL (``pipelines/experiment_stats.py``), every
message one result record for ``zt.control.results``:

``{"kind": "experiment", "key": k, "op": "upsert"|"stop"|"delete", "version": n,
"status": "applied"|"rejected", "reason": text|null}``

``packed`` = ``{version:019d}|{1 active, 0 deleted}|{record JSON}``: the SQL keeps, per key, the row
with the largest ``packed`` (``MAX``), i.e. the highest version, whatever order rows arrive in, so
replaying the topic from its start (or the YAML initial rows arriving again after a restore) gives
the same table. :func:`definition_record` is the JSON the SQL reads (flat fields + the full
definition for the assignment function).

Targeting (:func:`eligible`): ``targeting`` is a tag expression (``operators.expr``) over ``tags``,
the unit's set of tags at assignment time (``'vip' in tags``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from .definitions import ControlResult, ExperimentDefinition, ExperimentRegistry, definition_from_mapping

__all__ = [
    "NO_WINDOW_MS",
    "TIME_MAX",
    "TIME_MIN",
    "control_step",
    "definition_from_record",
    "definition_record",
    "eligible",
    "packed_row",
    "registry_from_bytes",
    "registry_to_bytes",
    "result_record",
    "unpack_row",
]

#: "No window": ~31,700 years in ms (keeps ``first_ts + window`` within BIGINT).
NO_WINDOW_MS = 10**15
#: Open start / stop as event times.
TIME_MIN = -(10**15)
TIME_MAX = 4 * 10**15
_VERSION_DIGITS = 19
#: Tag names in the SQL's tag list are separated by this (``LISTAGG``).
TAG_SEPARATOR = ","
_STATE_VERSION = 1


def definition_record(defn: ExperimentDefinition) -> dict[str, Any]:
    """The flat fields the SQL reads with ``JSON_VALUE`` plus ``definition`` (``to_dict``) for assignment."""
    e = defn.experiment
    return {
        "key": defn.key,
        "version": defn.version,
        "unit": e.unit,
        "n_var": len(e.variations),
        "variants": ",".join(e.variations),
        "start_ms": TIME_MIN if e.start_ms is None else e.start_ms,
        "stop_ms": TIME_MAX if e.stop_ms is None else e.stop_ms,
        "assign_on": list(defn.assign_on),
        "conv_type": defn.conversion.event_type,
        "conv_window": defn.conversion.window_ms or NO_WINDOW_MS,
        "rev_type": defn.revenue.event_type,
        "rev_window": defn.revenue.window_ms or NO_WINDOW_MS,
        "cov_ms": defn.covariate_ms,
        "targeting": defn.targeting,
        "definition": defn.to_dict(),
    }


def packed_row(key: str, version: int, defn: ExperimentDefinition | None) -> tuple[str, str]:
    """The definition row of ``key`` at ``version``: active with ``defn``, deleted when ``defn`` is None."""
    body = "{}" if defn is None else json.dumps(definition_record(defn), sort_keys=True, ensure_ascii=False,
                                               separators=(",", ":"))  # fmt: skip
    return key, f"{version:0{_VERSION_DIGITS}d}|{0 if defn is None else 1}|{body}"


def unpack_row(packed: str) -> tuple[int, dict[str, Any] | None]:
    """``(version, definition record or None when deleted)`` of a :func:`packed_row` value."""
    version, active, body = packed.split("|", 2)
    return int(version), json.loads(body) if active == "1" else None


def result_record(result: ControlResult) -> dict[str, Any]:
    return {"kind": "experiment", "key": result.key, "op": result.op, "version": result.version,
            "status": "applied" if result.accepted else "rejected", "reason": result.reason}  # fmt: skip


def control_step(registry: ExperimentRegistry, payload: str | bytes, now_ms: int
                 ) -> tuple[ExperimentRegistry, dict[str, Any] | None, tuple[str, str] | None]:  # fmt: skip
    """One control message: ``(registry, result record | None, definition row | None)``.

    A message of another kind gives ``(registry, None, None)`` (not ours). ``now_ms`` is the stop
    time of a ``stop`` without ``stop_ms`` (the job passes the message's Kafka timestamp, so that a
    replay stops at the same time).
    """
    try:
        msg = json.loads(payload)
    except (ValueError, TypeError) as e:
        return registry, result_record(ControlResult("?", "?", None, False,
                                                     f"control message is not JSON ({e}); send a JSON object")), None
    if not isinstance(msg, Mapping) or msg.get("kind") != "experiment":
        return registry, None, None
    new, result = registry.apply(msg, now_ms)
    if not result.accepted:
        return registry, result_record(result), None
    return new, result_record(result), packed_row(result.key, result.version or 0, new.definitions.get(result.key))


def registry_to_bytes(registry: ExperimentRegistry) -> bytes:
    """Versioned state codec: a version byte + JSON of the definitions and the versions."""
    doc = {"definitions": [d.to_dict() for d in registry.running()], "versions": dict(registry.versions)}
    return bytes([_STATE_VERSION]) + json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()


def registry_from_bytes(raw: bytes) -> ExperimentRegistry:
    if not raw or raw[0] != _STATE_VERSION:
        raise ValueError(f"experiment registry state: unknown codec version {raw[:1]!r}; expected {_STATE_VERSION}")
    doc = json.loads(raw[1:])
    defs = {d["key"]: definition_from_mapping(d, "registry state") for d in doc["definitions"]}
    return ExperimentRegistry(defs, {k: int(v) for k, v in doc["versions"].items()})


@lru_cache(maxsize=256)
def definition_from_record(record_json: str) -> ExperimentDefinition:
    """The definition inside a :func:`definition_record` JSON (cached: the SQL passes it per unit)."""
    return definition_from_mapping(json.loads(record_json)["definition"], "definition row")


@lru_cache(maxsize=256)
def _compiled(text: str) -> Any:
    from operators.expr import compile_expr

    return compile_expr(text, source="targeting")


def eligible(defn: ExperimentDefinition, tags: str | frozenset[str] | None, now_ms: int = 0) -> bool:
    """Whether a unit with ``tags`` (a set, or the SQL's ``TAG_SEPARATOR``-joined list) is targeted."""
    if defn.targeting is None:
        return True
    if tags is None:
        tags = frozenset()
    elif isinstance(tags, str):
        tags = frozenset(t for t in tags.split(TAG_SEPARATOR) if t)
    return _compiled(defn.targeting).evaluate({"tags": tags}, now_ms) is True
