"""Control of the identity graph: the ``split`` / ``block`` / ``unblock`` messages, validated, and
their reversible re-resolution of the component that holds the identifier."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .engine import _resolve
from .graph import _changed_edges, _diff
from .model import _NOOP, Component, StepResult
from .rules import IdentityRules, split_identifier


class ControlError(ValueError):
    """A control message that cannot be applied; the message says what is wrong and what to send."""


@dataclass(frozen=True, slots=True)
class ControlCommand:
    """``{"kind": "identity", "op": "split"|"block"|"unblock", "identifier": "type:value", "version": n}``
    (optional: ``ts_ms`` when it was decided, ``cause`` free text recorded on the changes)."""

    op: str
    identifier: str
    version: int


CONTROL_OPS = ("split", "block", "unblock")


def apply_control(message: Mapping[str, Any], rules: IdentityRules | None = None) -> ControlCommand:
    """Parse and validate one control message; raise :class:`ControlError` naming the bad field.

    With ``rules``, the identifier's type must be one of ``rules.priority``.
    """
    if not isinstance(message, Mapping):
        raise ControlError(f"identity control message must be a JSON object, got {type(message).__name__}")
    if message.get("kind") != "identity":
        raise ControlError(
            f"identity control message: 'kind' must be 'identity', got {message.get('kind')!r}"
        )
    unknown = set(message) - {"kind", "op", "identifier", "version", "ts_ms", "cause"}
    if unknown:
        raise ControlError(
            f"identity control message: unknown fields {sorted(unknown)}; "
            "allowed: kind, op, identifier, version, ts_ms, cause"
        )
    op = message.get("op")
    if op not in CONTROL_OPS:
        raise ControlError(f"identity control message: 'op' must be one of {list(CONTROL_OPS)}, got {op!r}")
    ident = message.get("identifier")
    if not isinstance(ident, str):
        raise ControlError("identity control message: 'identifier' must be a string like 'device_id:abc'")
    try:
        id_type, value = split_identifier(ident)
    except ValueError as e:
        raise ControlError(f"identity control message: {e}") from None
    if not value:
        raise ControlError(f"identity control message: identifier {ident!r} has an empty value")
    if rules is not None and id_type not in rules.rank:
        raise ControlError(
            f"identity control message: identifier type {id_type!r} is not configured (identity.priority: {list(rules.priority)})"
        )
    version = message.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ControlError(f"identity control message: 'version' must be a whole number ≥ 0, got {version!r}")
    return ControlCommand(op, ident, version)


def control(
    components: Mapping[str, Component],
    command: ControlCommand,
    rules: IdentityRules,
    ts_ms: int,
    cause: str = "",
) -> tuple[IdentityRules, StepResult]:
    """Apply ``command``: the new rules (overlay changed) and the re-resolution of the component that
    holds the identifier (``components`` must contain it if it exists; none: rules change only).

    ``split`` isolates the identifier (it keeps a person of its own, never linked again); ``block``
    ignores it entirely (its mapping becomes None); ``unblock`` lifts either. Each is reversible:
    the result equals ``resolve_batch`` of all observations under the new rules.
    """
    ident = command.identifier
    if command.op == "split":
        new_rules = rules.without([ident]).with_isolated([ident])
    elif command.op == "block":
        new_rules = rules.without([ident]).with_blocked([ident])
    else:
        new_rules = rules.without([ident])
    holder = next((c for c in components.values() if ident in c.idents), None)
    if holder is None:
        return new_rules, _NOOP
    resolved, eng = _resolve(holder.combos, new_rules)
    comp = Component(holder.cid, resolved, eng.persons(), frozenset(eng.detached))
    why = f"control:{command.op}:{cause}" if cause else f"control:{command.op}"
    mappings, changes = _diff(
        holder.person_of, comp.person_of, comp.idents, comp.person_by_id.keys(), ts_ms, why
    )
    edges = tuple(_changed_edges([holder], comp, None))
    result = StepResult(
        upserts={comp.cid: comp}, mappings=mappings, changes=changes, edges=edges, path="replay"
    )
    return new_rules, result


def split(
    components: Mapping[str, Component], ident: str, rules: IdentityRules, ts_ms: int, cause: str = ""
) -> tuple[IdentityRules, StepResult]:
    """Cut ``ident`` out of its person (isolate it); see :func:`control`."""
    return control(components, ControlCommand("split", ident, 0), rules, ts_ms, cause)


def block(
    components: Mapping[str, Component], ident: str, rules: IdentityRules, ts_ms: int, cause: str = ""
) -> tuple[IdentityRules, StepResult]:
    """Blocklist ``ident`` from now on and retroactively; see :func:`control`."""
    return control(components, ControlCommand("block", ident, 0), rules, ts_ms, cause)


def unblock(
    components: Mapping[str, Component], ident: str, rules: IdentityRules, ts_ms: int, cause: str = ""
) -> tuple[IdentityRules, StepResult]:
    """Undo ``split``/``block`` of ``ident``; see :func:`control`."""
    return control(components, ControlCommand("unblock", ident, 0), rules, ts_ms, cause)
