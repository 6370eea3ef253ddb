"""Pricing policies changed while the job runs: control messages of kind ``pricing`` (docs/pricing.md).

A message (JSON on the control topic, ``kafka.topics.control``)::

    {"kind": "pricing", "op": "put", "version": 2, "effective_ms": 1767225600000,
     "default": "standard", "policies": [{"name": "standard", ...}], "experiment": null, "variants": {}}

installs a whole new set of policies, in force from the first tick at or after ``effective_ms`` (event time,
so a replay prices the same; default: 0, at once). ``version`` must grow: an older or equal version is
refused (a replayed control topic installs nothing twice). A malformed message, or one that would make the
list price personal (``operators.pricing.policy.PERSONAL_KEYS``), is refused with its reason and changes
nothing. :func:`apply_control` is pure; the job keeps the versions in broadcast state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from operators.pricing.policy import Policies, PricingPolicyError, policies_from_mapping

KIND = "pricing"
#: Versions kept (the oldest still in force by event time stays: it prices ticks before the next one).
MAX_VERSIONS = 16


@dataclass(frozen=True)
class Versions:
    """The installed policy sets, oldest first: (control version, effective ms, policies)."""

    entries: tuple[tuple[int, int, Policies], ...]

    @property
    def version(self) -> int:
        return self.entries[-1][0]

    def by_time(self) -> tuple[tuple[int, Policies], ...]:
        return tuple(sorted(((eff, p) for _, eff, p in self.entries), key=lambda e: e[0]))


@dataclass(frozen=True)
class ControlResult:
    ok: bool
    version: int | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": KIND, "ok": self.ok, "version": self.version, "reason": self.reason}


def parse_put(msg: Mapping[str, Any]) -> tuple[int, int, Policies]:
    """The (version, effective ms, policies) of a ``put``; raises :class:`PricingPolicyError`."""
    if msg.get("op") != "put":
        raise PricingPolicyError(f"pricing control: op must be 'put', got {msg.get('op')!r}")
    version, eff = msg.get("version"), msg.get("effective_ms", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PricingPolicyError("pricing control: version must be an integer ≥ 1")
    if not isinstance(eff, int) or isinstance(eff, bool) or eff < 0:
        raise PricingPolicyError("pricing control: effective_ms must be an integer ≥ 0 (epoch ms)")
    raw = msg.get("policies")
    if not isinstance(raw, list) or not raw:
        raise PricingPolicyError("pricing control: policies must be a non-empty list")
    unknown = sorted(set(msg) - {"kind", "op", "version", "effective_ms", "default", "policies", "experiment",
                                 "variants"})
    if unknown:
        raise PricingPolicyError(f"pricing control: unknown keys {unknown} (a policy's keys go inside policies[])")
    return version, eff, policies_from_mapping(raw, str(msg.get("default") or raw[0].get("name")),
                                               msg.get("experiment"), msg.get("variants") or {}, version)


def apply_control(current: Versions, msg: Mapping[str, Any]) -> tuple[Versions, ControlResult]:
    try:
        version, eff, pols = parse_put(msg)
    except PricingPolicyError as e:
        return current, ControlResult(False, msg.get("version") if isinstance(msg, Mapping) else None, str(e))
    if version <= current.version:
        return current, ControlResult(False, version, f"pricing control: version {version} is not newer than the "
                                                      f"installed {current.version}; send version "
                                                      f"{current.version + 1}")
    entries = (*current.entries, (version, eff, pols))
    return Versions(entries[-MAX_VERSIONS:]), ControlResult(True, version, "installed")
