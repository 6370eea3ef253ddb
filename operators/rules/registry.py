"""The running rule set: versioned, indexed by trigger, changed only by control messages (pure).

A :class:`RuleSet` is immutable; :func:`apply_control` returns a new one (or the same one when the
message is rejected) plus a :class:`ControlResult` for ``zt.control.results``. The Flink job keeps
the rule set in broadcast state and calls :func:`apply_control` for every ``zt.control`` record.

Control message (JSON object)::

    {"kind": "rule"|"pattern"|"journey", "op": "upsert"|"pause"|"resume"|"delete",
     "id": "...", "version": n, "definition": {...}}   # definition only with upsert

A batch ``{"kind": "batch", "items": [message, ...]}`` applies its items in order and checks
references once at the end, all or nothing: a journey and the rules its steps send refer to each
other, so they are created together; :func:`batch_for_document` turns a whole file into one.

``{"kind": "policy", "op": "upsert", "definition": {...}}`` replaces the guard policy (caps,
consent modes, default time zone) as a whole.

Versions: every id has a version (from its definition). ``upsert`` needs a version above the
running one (and above the version it had when it was deleted); the same version with the same
definition is accepted as a no-op (a replayed control record), anything else at or below the
running version is rejected as stale. ``pause``/``resume``/``delete`` act on the running version:
``version`` may be left out, and if given must equal it. A broken definition, a stale version or a
change that leaves a dangling reference (a rule triggered by a missing pattern or journey, a
journey step sending a missing rule) is rejected with its reason; the running set is unchanged.

Indexes: only rules whose trigger matches are looked at: :meth:`RuleSet.rules_for_event` is a dict
lookup by event type, likewise by tag (added/removed), pattern id and journey id. Paused rules and
patterns are kept (they can be resumed) but are not in the indexes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from operators.rules.model import Journey, Pattern, Policy, Rule
from operators.rules.schema import DefinitionError, Definitions, parse_definition, policy_from, references

__all__ = ["Cleanup", "ControlResult", "RuleSet", "apply_control", "batch_for_document"]

_KINDS = ("rule", "pattern", "journey")
_OPS = ("upsert", "pause", "resume", "delete")


def _order(rules: Iterable[Rule]) -> tuple[Rule, ...]:
    # Evaluation order = mutual-exclusion order: priority high → low, then id (deterministic ties).
    return tuple(sorted(rules, key=lambda r: (-r.priority, r.id)))


def _index(items: Iterable[tuple[str, Any]]) -> dict[str, tuple[Any, ...]]:
    out: dict[str, list[Any]] = {}
    for key, item in items:
        out.setdefault(key, []).append(item)
    return {k: tuple(v) for k, v in out.items()}


@dataclass(frozen=True)
class RuleSet:
    """Rules, patterns, journeys and the guard policy at one ``version`` (bumped by every change).

    ``raw`` keeps each definition's canonical JSON (to recognise replayed control records);
    ``deleted`` the last version of every deleted id (stale upserts after a delete are refused).
    The ``_by_*`` indexes are derived in :meth:`build`.
    """

    version: int
    policy: Policy
    rules: Mapping[str, Rule]
    patterns: Mapping[str, Pattern]
    journeys: Mapping[str, Journey]
    raw: Mapping[tuple[str, str], str] = field(default_factory=dict)
    deleted: Mapping[tuple[str, str], int] = field(default_factory=dict)
    _by_event: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict, repr=False)
    _by_tag: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict, repr=False)
    _by_pattern: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict, repr=False)
    _patterns_by_event: Mapping[str, tuple[Pattern, ...]] = field(default_factory=dict, repr=False)
    _journeys_by_event: Mapping[str, tuple[Journey, ...]] = field(default_factory=dict, repr=False)
    _journeys_by_tag: Mapping[str, tuple[Journey, ...]] = field(default_factory=dict, repr=False)
    max_window_ms: int = 0

    @classmethod
    def build(cls, policy: Policy, rules: Iterable[Rule] = (), patterns: Iterable[Pattern] = (),
              journeys: Iterable[Journey] = (), *, version: int = 0,
              raw: Mapping[tuple[str, str], str] | None = None,
              deleted: Mapping[tuple[str, str], int] | None = None) -> RuleSet:
        rmap = {r.id: r for r in rules}
        pmap = {p.id: p for p in patterns}
        jmap = {j.id: j for j in journeys}
        active = _order(r for r in rmap.values() if not r.paused)
        by_event = _index((t, r) for r in active if r.trigger.kind == "event" for t in r.trigger.values)
        by_tag = _index((("+" if r.trigger.kind == "tag_added" else "-") + r.trigger.values[0], r)
                        for r in active if r.trigger.kind in ("tag_added", "tag_removed"))
        by_pattern = _index((r.trigger.values[0], r) for r in active if r.trigger.kind == "pattern")
        pats = sorted(pmap.values(), key=lambda p: p.id)
        pby = _index((t, p) for p in pats if not p.paused for t in sorted(p.event_types))
        js = sorted(jmap.values(), key=lambda j: j.id)
        jby = _index((t, j) for j in js for t in sorted(j.event_types))
        jtag = _index((j.entry.values[0], j) for j in js if j.entry.kind == "tag_added")
        windows = [c.window_ms for c in policy.frequency]
        windows += [c.window_ms for r in rmap.values() for c in r.constraints.frequency]
        return cls(version, policy, rmap, pmap, jmap, dict(raw or {}), dict(deleted or {}),
                   by_event, by_tag, by_pattern, pby, jby, jtag, max(windows, default=0))

    @classmethod
    def from_definitions(cls, defs: Definitions, *, version: int = 1) -> RuleSet:
        """The rule set of a validated file (what ``zhongtai rules publish`` starts from)."""
        return cls.build(defs.policy, defs.rules, defs.patterns, defs.journeys, version=version)

    @property
    def event_types(self) -> frozenset[str]:
        """Every event type the engine does anything with (rules, patterns, journeys, consent).

        The job may drop all other events before they reach Python: ``evaluate`` would return
        nothing for them and leave the state as it is.
        """
        return frozenset(self._by_event) | frozenset(self._patterns_by_event) | frozenset(
            self._journeys_by_event) | {"consent", "unsubscribe"}

    def routed_event_types(self, extra: Iterable[str] = ()) -> frozenset[str]:
        """What a job started from this rule set routes to the engine: :attr:`event_types` plus ``extra``
        (``job.rules_event_types``); the job's SQL drops every other type."""
        return self.event_types | frozenset(extra)

    def rules_for_event(self, event_type: str) -> tuple[Rule, ...]:
        """Active rules triggered by ``event_type``, in priority order (high first, then id)."""
        return self._by_event.get(event_type, ())

    def rules_for_tag(self, tag: str, added: bool) -> tuple[Rule, ...]:
        return self._by_tag.get(("+" if added else "-") + tag, ())

    def rules_for_pattern(self, pattern_id: str) -> tuple[Rule, ...]:
        return self._by_pattern.get(pattern_id, ())

    def patterns_for_event(self, event_type: str) -> tuple[Pattern, ...]:
        """Active patterns that consume ``event_type`` (as start, cancel, counted event or step)."""
        return self._patterns_by_event.get(event_type, ())

    def journeys_for_event(self, event_type: str) -> tuple[Journey, ...]:
        """Journeys (paused too: persons inside keep moving) that enter, wait for or exit on it."""
        return self._journeys_by_event.get(event_type, ())

    def journeys_for_tag(self, tag: str) -> tuple[Journey, ...]:
        return self._journeys_by_tag.get(tag, ())

    def apply_control(self, msg: Any) -> tuple[RuleSet, ControlResult]:
        """``apply_control(self, msg)``: the rule set after one control message, and the result."""
        return apply_control(self, msg)

    def get(self, kind: str, oid: str) -> Rule | Pattern | Journey | None:
        objects: Mapping[str, Rule | Pattern | Journey] = {
            "rule": self.rules, "pattern": self.patterns, "journey": self.journeys}[kind]  # type: ignore[assignment]
        return objects.get(oid)

    def _replace(self, kind: str, oid: str, obj: Any | None, raw: str | None, deleted_version: int | None) -> RuleSet:
        maps: dict[str, dict[str, Any]] = {"rule": dict(self.rules), "pattern": dict(self.patterns),
                                           "journey": dict(self.journeys)}
        rawm, dele = dict(self.raw), dict(self.deleted)
        if obj is None:
            maps[kind].pop(oid, None)
            rawm.pop((kind, oid), None)
            dele[(kind, oid)] = deleted_version or 0
        else:
            maps[kind][oid] = obj
            if raw is not None:
                rawm[(kind, oid)] = raw
            dele.pop((kind, oid), None)
        return RuleSet.build(self.policy, maps["rule"].values(), maps["pattern"].values(),
                             maps["journey"].values(), version=self.version + 1, raw=rawm, deleted=dele)


@dataclass(frozen=True, slots=True)
class Cleanup:
    """What a delete leaves behind in keyed state, for the job to clear.

    ``state`` names the per-person state entries (see :class:`operators.rules.engine.PersonState`):
    ``held:<rule>`` held actions of a rule, ``pattern:<id>`` a pattern's buffer and partial matches,
    ``journey:<id>`` persons' positions. ``timers`` says which timers were registered for it; a
    timer that fires after the delete finds nothing due and registers nothing new, and
    :func:`operators.rules.engine.prune_state` drops the entries on the person's next event.
    """

    state: tuple[str, ...]
    timers: str

    def to_json(self) -> dict[str, Any]:
        return {"state": list(self.state), "timers": self.timers}


@dataclass(frozen=True, slots=True)
class ControlResult:
    """The answer to one control message (JSON for ``zt.control.results``)."""

    ok: bool
    kind: str | None
    op: str | None
    id: str | None
    version: int | None
    ruleset_version: int
    reason: str | None = None
    cleanup: Cleanup | None = None
    items: tuple[ControlResult, ...] = ()  # a batch: the result of each item

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "kind": self.kind, "op": self.op, "id": self.id, "version": self.version,
               "ruleset_version": self.ruleset_version, "reason": self.reason,
               "cleanup": self.cleanup.to_json() if self.cleanup else None}
        if self.items:
            out["items"] = [i.to_json() for i in self.items]
        return out


_CLEANUP = {
    "rule": ("held:{id}", "held-action releases of the rule"),
    "pattern": ("pattern:{id}", "the pattern's event and deadline timers"),
    "journey": ("journey:{id}", "the journey's wait timers"),
}


def _canonical(definition: Any) -> str:
    return json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def apply_control(ruleset: RuleSet, msg: Any) -> tuple[RuleSet, ControlResult]:
    """Apply one ``zt.control`` message; on rejection the SAME rule set comes back with the reason.

    Never raises for a bad message: every problem becomes ``ok=False`` with a reason that says
    what to do. ``{"kind": "batch", "items": [msg, ...]}`` applies several messages atomically
    (references are checked once, after the last item): the way to create a journey together with
    the rules its steps send, or to publish a whole file (:func:`batch_for_document`).
    """
    if isinstance(msg, Mapping) and msg.get("kind") == "batch":
        return _apply_batch(ruleset, msg)
    return _apply(ruleset, msg, True)


def batch_for_document(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The batch control message that upserts every pattern, journey and rule of a definitions
    document (the parsed YAML/JSON of a file; its ``policy`` is file-level and not sent)."""
    items = []
    for section, kind in (("patterns", "pattern"), ("journeys", "journey"), ("rules", "rule")):
        defs = doc.get(section) if isinstance(doc, Mapping) else None
        for d in defs if isinstance(defs, list) else ():
            oid, version = (d.get("id"), d.get("version")) if isinstance(d, Mapping) else (None, None)
            items.append({"kind": kind, "op": "upsert", "id": oid, "version": version, "definition": d})
    return {"kind": "batch", "op": "apply", "items": items}


def _apply_batch(ruleset: RuleSet, msg: Mapping[str, Any]) -> tuple[RuleSet, ControlResult]:
    def reject(reason: str) -> tuple[RuleSet, ControlResult]:
        return ruleset, ControlResult(False, "batch", "apply", None, None, ruleset.version,
                                      reason + "; nothing of the batch was applied")

    items = msg.get("items")
    if not isinstance(items, list) or not items:
        return reject("a batch needs a non-empty list of control messages under 'items'")
    rs, results = ruleset, []
    for i, item in enumerate(items):
        if isinstance(item, Mapping) and item.get("kind") == "batch":
            return reject(f"item {i} is a batch; batches do not nest")
        rs, res = _apply(rs, item, False)
        if not res.ok:
            return reject(f"item {i} ({res.kind} {res.id!r}): {res.reason}")
        results.append(res)
    broken = references(rs.rules, rs.patterns, rs.journeys)
    if broken:
        kind, oid, message = broken[0]
        return reject(f"{kind} {oid!r}: {message}")
    if rs is not ruleset:
        rs = replace(rs, version=ruleset.version + 1)
    return rs, ControlResult(True, "batch", "apply", None, None, rs.version, items=tuple(results))


def _apply(ruleset: RuleSet, msg: Any, check_refs: bool) -> tuple[RuleSet, ControlResult]:
    if not isinstance(msg, Mapping):
        return ruleset, ControlResult(False, None, None, None, None, ruleset.version,
                                      f"control message is a {type(msg).__name__}, not a JSON object; "
                                      "send {kind, op, id, version, definition}")
    kind, op, oid, version = msg.get("kind"), msg.get("op"), msg.get("id"), msg.get("version")

    def reject(reason: str) -> tuple[RuleSet, ControlResult]:
        return ruleset, ControlResult(False, kind if isinstance(kind, str) else None,
                                      op if isinstance(op, str) else None, oid if isinstance(oid, str) else None,
                                      version if isinstance(version, int) else None, ruleset.version, reason)

    if kind == "policy":
        return _replace_policy(ruleset, msg, reject)
    if kind not in _KINDS:
        return reject(f"kind {kind!r} is not one of {', '.join(_KINDS)}, policy, batch")
    if op not in _OPS:
        return reject(f"op {op!r} is not one of {', '.join(_OPS)}")
    if not isinstance(oid, str) or not oid:
        return reject("id is missing or not a string; give the id of the " + kind)
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
        return reject(f"version {version!r} is not a positive integer")
    current = ruleset.get(kind, oid)
    if op == "upsert":
        return _upsert(ruleset, msg, kind, oid, version, current, reject, check_refs)
    if current is None:
        gone = ruleset.deleted.get((kind, oid))
        return reject(f"{kind} {oid!r} does not exist" + (f" (deleted at version {gone})" if gone else "")
                      + "; check the id with `zhongtai rules list`")
    if version is not None and version != current.version:
        word = "stale" if version < current.version else "unknown"
        return reject(f"{word} version {version}: {kind} {oid!r} runs version {current.version}; "
                      f"{op} names the running version (or leave version out)")
    if op in ("pause", "resume"):
        paused = op == "pause"
        if current.paused == paused:
            return ruleset, ControlResult(True, kind, op, oid, current.version, ruleset.version,
                                          f"already {'paused' if paused else 'running'}")
        new = ruleset._replace(kind, oid, _with_paused(current, paused), None, None)
        return new, ControlResult(True, kind, op, oid, current.version, new.version)
    candidate = ruleset._replace(kind, oid, None, None, current.version)
    broken = [m for k, i, m in references(candidate.rules, candidate.patterns, candidate.journeys)] if check_refs else []
    if broken:
        return reject(f"cannot delete {kind} {oid!r}: {broken[0]} (delete or change the dependants first)")
    state_key, timers = _CLEANUP[kind]
    return candidate, ControlResult(True, kind, op, oid, current.version, candidate.version,
                                    cleanup=Cleanup((state_key.format(id=oid),), timers))


def _replace_policy(ruleset: RuleSet, msg: Mapping[str, Any], reject: Any) -> tuple[RuleSet, ControlResult]:
    """``{"kind": "policy", "op": "upsert", "definition": {...}}``: the whole guard policy, replaced."""
    if msg.get("op") != "upsert":
        return reject("a policy is replaced as a whole: send op upsert with the complete policy as definition")
    try:
        policy = policy_from(msg.get("definition"))
    except DefinitionError as e:
        return reject(f"broken policy, the running one stays: {e}")
    if policy == ruleset.policy:
        return ruleset, ControlResult(True, "policy", "upsert", None, None, ruleset.version, "unchanged")
    new = RuleSet.build(policy, ruleset.rules.values(), ruleset.patterns.values(), ruleset.journeys.values(),
                        version=ruleset.version + 1, raw=ruleset.raw, deleted=ruleset.deleted)
    return new, ControlResult(True, "policy", "upsert", None, None, new.version)


def _with_paused(obj: Rule | Pattern | Journey, paused: bool) -> Rule | Pattern | Journey:
    return replace(obj, paused=paused)


def _upsert(ruleset: RuleSet, msg: Mapping[str, Any], kind: str, oid: str, version: int | None,
            current: Any, reject: Any, check_refs: bool) -> tuple[RuleSet, ControlResult]:
    definition = msg.get("definition")
    if not isinstance(definition, Mapping):
        return reject("upsert needs a definition object")
    if definition.get("id") != oid:
        return reject(f"definition.id {definition.get('id')!r} differs from the message id {oid!r}; make them equal")
    dver = definition.get("version")
    if version is not None and dver != version:
        return reject(f"definition.version {dver!r} differs from the message version {version}; make them equal")
    raw = _canonical(definition)
    running = current.version if current is not None else ruleset.deleted.get((kind, oid), 0)
    if isinstance(dver, int) and dver <= running:
        if current is not None and dver == current.version and ruleset.raw.get((kind, oid)) == raw:
            return ruleset, ControlResult(True, kind, "upsert", oid, dver, ruleset.version,
                                          f"already at version {dver} (replayed message)")
        what = "runs" if current is not None else "was deleted at"
        return reject(f"stale version {dver}: {kind} {oid!r} {what} version {running}; "
                      f"publish with version {running + 1} or higher")
    try:
        obj = parse_definition(kind, definition, source=f"<control {kind} {oid} v{dver}>")
    except DefinitionError as e:
        return reject(f"broken definition, version {current.version if current else 'none'} keeps running: {e}")
    candidate = ruleset._replace(kind, oid, obj, raw, None)
    broken = [m for k, i, m in references(candidate.rules, candidate.patterns, candidate.journeys)] if check_refs else []
    if broken:
        return reject(f"{kind} {oid!r}: {broken[0]}")
    return candidate, ControlResult(True, kind, "upsert", oid, obj.version, candidate.version)
