"""Rule, pattern, journey and policy definitions: JSON Schema (Draft 2020-12), checks, parsing.

A definitions file (YAML or JSON; JSON is read by the YAML parser, so both get line numbers) has
the top-level keys ``policy``, ``patterns``, ``journeys`` and ``rules`` (see docs/rules.md and
config/rules.yaml). :func:`load_file` / :func:`load_text` validate it in three passes and raise
:class:`DefinitionError` listing EVERY problem found:

1. the JSON Schema :data:`SCHEMA` (structure, types, enums, id and duration formats);
2. checks a schema cannot express (one trigger kind, journey step kinds and links, time zones,
   quiet hours, duplicate ids and YAML keys, references between rules, patterns and journeys);
3. compiling every expression with ``operators.expr.compile_expr`` at its YAML line/column.

Each :class:`Problem` names the file, line and column, the object (``rule 'x'``), the JSON path
and what to do. :func:`parse_definition` does the same for one definition of a ``zt.control``
message (no file: the source is ``<control rule x>``).

The schema is kept as a Python dict (``pyproject`` ships no ``*.json`` package data);
``python -m operators.rules.schema`` prints it as JSON.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from jsonschema import Draft202012Validator

from config.yaml_source import Path_, YamlSource
from operators.rules.model import (
    CHANNELS,
    CONSENT_MODES,
    PATTERN_KINDS,
    TRIGGER_KINDS,
    ActionSpec,
    Branch,
    Budget,
    Constraints,
    EventMatcher,
    FrequencyCap,
    Journey,
    Pattern,
    Policy,
    QuietHours,
    Rule,
    Step,
    Trigger,
)
from operators.rules.prefilter import required_tags

__all__ = [
    "SCHEMA",
    "DefinitionError",
    "Definitions",
    "Problem",
    "load_file",
    "load_text",
    "parse_definition",
    "parse_duration",
    "policy_from",
]

_ID = {"type": "string", "pattern": "^[a-z][a-z0-9_.-]{0,63}$"}
_EVENT_TYPE = {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"}
_DURATION = {"oneOf": [{"type": "integer", "minimum": 1},
                       {"type": "string", "pattern": "^[1-9][0-9]*(ms|s|m|h|d|w)$"}]}
_TIME = {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"}
_EXPR = {"type": "string", "minLength": 1}
_MATCHER = {
    "type": "object", "additionalProperties": False, "required": ["event"],
    "properties": {"event": _EVENT_TYPE, "where": _EXPR},
}
_COMMON = {"id": _ID, "version": {"type": "integer", "minimum": 1}, "name": {"type": "string"},
           "paused": {"type": "boolean"}, "description": {"type": "string"}}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://zhongtai.dev/schemas/rules.schema.json",
    "title": "zhongtai strategy definitions",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "policy": {"$ref": "#/$defs/policy"},
        "patterns": {"type": "array", "items": {"$ref": "#/$defs/pattern"}},
        "journeys": {"type": "array", "items": {"$ref": "#/$defs/journey"}},
        "rules": {"type": "array", "items": {"$ref": "#/$defs/rule"}},
    },
    "$defs": {
        "duration": _DURATION,
        "frequency_cap": {
            "type": "object", "additionalProperties": False, "required": ["max", "window"],
            "properties": {"max": {"type": "integer", "minimum": 1}, "window": {"$ref": "#/$defs/duration"},
                           "name": {"type": "string"},
                           "channels": {"type": "array", "minItems": 1, "uniqueItems": True,
                                        "items": {"enum": list(CHANNELS)}}},
        },
        "policy": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "default_timezone": {"type": "string"},
                "frequency": {"type": "array", "items": {"$ref": "#/$defs/frequency_cap"}},
                "consent": {"type": "object", "additionalProperties": False,
                            "properties": {c: {"enum": list(CONSENT_MODES)} for c in CHANNELS}},
            },
        },
        "action": {
            "type": "object", "additionalProperties": False, "required": ["channel", "template"],
            "properties": {"channel": {"enum": list(CHANNELS)}, "template": {"type": "string", "minLength": 1},
                           "params": {"type": "object"}},
        },
        "trigger": {
            "type": "object", "additionalProperties": False, "minProperties": 1,
            "properties": {
                "event": {"type": "array", "minItems": 1, "uniqueItems": True, "items": _EVENT_TYPE},
                "tag_added": {"type": "string", "minLength": 1},
                "tag_removed": {"type": "string", "minLength": 1},
                "pattern": _ID,
                "journey": _ID,
            },
        },
        "constraints": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "frequency": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False, "required": ["max", "window"],
                    "properties": {"max": {"type": "integer", "minimum": 1},
                                   "window": {"$ref": "#/$defs/duration"}}}},
                "quiet_hours": {
                    "type": "object", "additionalProperties": False, "required": ["start", "end"],
                    "properties": {"start": _TIME, "end": _TIME, "timezone": {"type": "string"},
                                   "mode": {"enum": ["hold", "drop"]}},
                },
                "consent_required": {"type": "boolean"},
                "consent_channel": {"enum": list(CHANNELS)},
                "budget": {
                    "type": "object", "additionalProperties": False, "required": ["max"],
                    "properties": {"campaign": _ID, "max": {"type": "integer", "minimum": 0}},
                },
            },
        },
        "rule": {
            "type": "object", "additionalProperties": False, "required": ["id", "version", "trigger", "actions"],
            "properties": {
                **_COMMON,
                "priority": {"type": "integer"},
                "group": _ID,
                "campaign": _ID,
                "trigger": {"$ref": "#/$defs/trigger"},
                "condition": _EXPR,
                "actions": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/action"}},
                "constraints": {"$ref": "#/$defs/constraints"},
            },
        },
        "pattern": {
            "type": "object", "additionalProperties": False, "required": ["id", "version", "type", "within"],
            "properties": {
                **_COMMON,
                "type": {"enum": list(PATTERN_KINDS)},
                "start": _MATCHER, "cancel": _MATCHER, "event": _MATCHER,
                "steps": {"type": "array", "minItems": 2, "items": _MATCHER},
                "count": {"type": "integer", "minimum": 2},
                "within": {"$ref": "#/$defs/duration"},
                "by": {"type": "string", "pattern": "^[a-z_][a-z0-9_]*(\\.[a-z_][a-z0-9_]*)*$"},
                "lateness": {"oneOf": [{"const": 0}, {"$ref": "#/$defs/duration"}]},
            },
        },
        "step": {
            "type": "object", "additionalProperties": False, "required": ["id"],
            "properties": {
                "id": _ID, "send": _ID, "next": _ID, "wait": {"$ref": "#/$defs/duration"},
                "wait_for": {"type": "object", "additionalProperties": False, "required": ["event", "within"],
                             "properties": {"event": _EVENT_TYPE, "where": _EXPR,
                                            "within": {"$ref": "#/$defs/duration"}}},
                "on_event": _ID, "on_timeout": _ID,
                "branch": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["if", "next"],
                    "properties": {"if": _EXPR, "next": _ID}}},
                "else": _ID,
                "end": {"const": True},
            },
        },
        "journey": {
            "type": "object", "additionalProperties": False, "required": ["id", "version", "entry", "steps"],
            "properties": {
                **_COMMON,
                "entry": {"type": "object", "additionalProperties": False, "minProperties": 1,
                          "properties": {"event": _EVENT_TYPE, "tag_added": {"type": "string", "minLength": 1},
                                         "where": _EXPR}},
                "exit": {"type": "array", "items": _MATCHER},
                "reentry": {"type": "boolean"},
                "steps": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/step"}},
            },
        },
    },
}

#: The names an expression may read (docs/rules.md, "Expression environment"); a typo such as
#: ``tag`` for ``tags`` is a compile error with a suggestion instead of a silent null.
EXPR_NAMES = frozenset({"event", "profile", "tags", "person", "match", "journey"})

_VALIDATOR = Draft202012Validator(SCHEMA)
_KIND_VALIDATORS = {k: Draft202012Validator({"$ref": f"#/$defs/{k}", "$defs": SCHEMA["$defs"]})
                    for k in ("rule", "pattern", "journey", "policy")}
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION_RE = re.compile(r"^([1-9][0-9]*)(ms|s|m|h|d|w)$")
_SECTION_KIND = {"rules": "rule", "patterns": "pattern", "journeys": "journey"}


def parse_duration(value: int | str) -> int:
    """``30m`` → 1_800_000; an int is already ms. Raises ValueError naming the value."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _DURATION_RE.match(str(value))
    if not m:
        raise ValueError(f"bad duration {value!r}: write e.g. 500ms, 30s, 30m, 1h, 7d, 2w or whole ms")
    return int(m.group(1)) * _UNITS_MS[m.group(2)]


@dataclass(frozen=True, slots=True)
class Problem:
    """One error in a definition: where, in which object, at which JSON path, what to do."""

    file: str
    line: int | None
    column: int | None
    obj: str  # "rule 'welcome'" or "" for the document
    path: str  # JSON path, "$.rules[0].trigger"
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}:{self.column}"
        obj = f" {self.obj}" if self.obj else ""
        return f"{where}:{obj} at {self.path}: {self.message}"


class DefinitionError(ValueError):
    """Raised with every :class:`Problem` of a file or definition; ``str()`` lists them, one a line."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True, slots=True)
class Definitions:
    """A validated file: everything in it, in file order."""

    policy: Policy
    patterns: tuple[Pattern, ...]
    journeys: tuple[Journey, ...]
    rules: tuple[Rule, ...]


# ---------------------------------------------------------------------------------------- positions

def _json_path(path: Sequence[str | int]) -> str:
    out = "$"
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _object_name(doc: Any, path: Path_) -> str:
    if len(path) >= 2 and path[0] in _SECTION_KIND and isinstance(path[1], int):
        items = doc.get(path[0]) if isinstance(doc, Mapping) else None
        item = items[path[1]] if isinstance(items, list) and path[1] < len(items) else None
        oid = item.get("id") if isinstance(item, Mapping) else None
        kind = _SECTION_KIND[str(path[0])]
        return f"{kind} {oid!r}" if oid is not None else f"{kind} #{path[1]}"
    if path and path[0] == "policy":
        return "policy"
    return ""


_REQUIRED = re.compile(r"^(.+) is a required property$")


def _schema_message(err: Any) -> str:
    v, inst = err.validator, err.instance
    key = err.path[-1] if err.path else None
    if v == "required":
        # jsonschema reports each missing key as its own error ("'version' is a required property")
        named = _REQUIRED.match(err.message)
        missing = [r for r in err.validator_value if isinstance(inst, Mapping) and r not in inst]
        return f"missing required key {named.group(1) if named else repr(missing[0])}; add it"
    if v == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(k for k in inst if k not in err.schema.get("properties", {}))
        return f"unknown key {extra[0]!r}; remove it or fix its spelling (allowed: {', '.join(allowed)})"
    if v == "enum":
        return f"{inst!r} is not allowed; use one of {', '.join(map(str, err.validator_value))}"
    if v == "const":
        return f"{inst!r} is not allowed; write {err.validator_value!r}"
    if v == "type" and isinstance(inst, bool) and err.validator_value == "string":
        return f"YAML reads this value as the boolean {str(inst).lower()} (yes/no/on/off do that); quote it"
    if v == "type":
        return f"{inst!r} is a {type(inst).__name__}; write a {err.validator_value}"
    if v == "pattern":
        if "ms|s|m|h|d|w" in err.validator_value:
            return f"bad duration {inst!r}; write e.g. 30m, 1h, 7d or whole milliseconds"
        if "[01][0-9]" in err.validator_value:
            return f"bad time {inst!r}; write HH:MM (24 h), e.g. 22:00"
        what = "event type" if key == "event" or (len(err.path) > 1 and err.path[-2] == "event") else "id"
        return (f"bad {what} {inst!r}; start with a lower-case letter, then lower-case letters, digits"
                f"{', _ . -' if what == 'id' else ' or _'} (at most 64)")
    if v == "oneOf" and "ms|s|m|h|d|w" in str(err.schema):
        return f"bad duration {inst!r}; write e.g. 30m, 1h, 7d or whole milliseconds"
    if v == "minProperties":
        return "empty object; give one of " + ", ".join(sorted(err.schema.get("properties", {})))
    if v == "minimum":
        return f"{inst!r} is below the minimum {err.validator_value}; use {err.validator_value} or more"
    if v == "minItems":
        return f"needs at least {err.validator_value} item(s); add them"
    if v == "minLength":
        return "empty text; write a value"
    if v == "uniqueItems":
        return f"{inst!r} repeats an item; remove the repeat"
    return f"{err.message}; fix the value"


def _error_path(err: Any) -> Path_:
    """The JSON path of a schema error; an unknown key points at that key itself."""
    path = tuple(err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, Mapping):
        extra = sorted(k for k in err.instance if k not in err.schema.get("properties", {}))
        if extra:
            path += (extra[0],)
    return path


# ----------------------------------------------------------------------------------------- checking


class _Checker:
    def __init__(self, src: YamlSource, doc: Any):
        self.src = src
        self.doc = doc
        self.problems: list[Problem] = []

    def add(self, path: Path_, message: str, obj: str | None = None) -> None:
        line, col = self.src.at(path)
        self.problems.append(Problem(self.src.file, line, col,
                                     _object_name(self.doc, path) if obj is None else obj,
                                     _json_path(path), message))

    def expr(self, text: str | None, path: Path_, obj: str, skip: int = 0) -> Any:
        """``text`` compiled, or None with a problem at the exact token; ``skip``: characters of the YAML value
        before the expression (``${`` of a computed param)."""
        if text is None:
            return None
        from operators.expr import ExprError, compile_expr  # the expression language of the tags stage

        line, col = self.src.expr_start(path)
        col += skip
        try:
            return compile_expr(text, source=self.src.file, line=line, column=col, names=EXPR_NAMES)
        except ExprError as e:
            eline, ecol = self.src.expr_position(path, text, e.offset) if self.src.marks else (e.line, e.column)
            if self.src.marks and "\n" not in text[: e.offset]:
                ecol += skip
            self.problems.append(Problem(self.src.file, eline, ecol, obj, _json_path(path),
                                         f"expression error: {e.message}; fix the expression"))
            return None


def _zone_ok(c: _Checker, tz: str | None, path: Path_) -> None:
    if tz is None:
        return
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        c.add(path, f"unknown time zone {tz!r}; use an IANA name such as Asia/Shanghai or America/New_York")


def _hhmm(text: str) -> int:
    h, m = text.split(":")
    return int(h) * 60 + int(m)


def _matcher(c: _Checker, d: Mapping[str, Any], path: Path_, obj: str) -> EventMatcher:
    return EventMatcher(d["event"], d.get("where"), c.expr(d.get("where"), path + ("where",), obj))


def _rule(c: _Checker, d: Mapping[str, Any], path: Path_, obj: str) -> Rule:
    trig = d["trigger"]
    kinds = [k for k in TRIGGER_KINDS if k in trig]
    if len(kinds) != 1:
        c.add(path + ("trigger",), f"give exactly one trigger kind, found {', '.join(kinds)}; "
              "split the rule into one rule per trigger", obj)
    kind = kinds[0]
    values = tuple(trig[kind]) if kind == "event" else (trig[kind],)
    cons = d.get("constraints", {})
    caps = tuple(FrequencyCap(f"rule:{f['window']}", f["max"], parse_duration(f["window"]))
                 for f in cons.get("frequency", ()))
    qh = None
    if "quiet_hours" in cons:
        q = cons["quiet_hours"]
        qpath = path + ("constraints", "quiet_hours")
        if q["start"] == q["end"]:
            c.add(qpath, f"start and end are both {q['start']}; give a non-empty window or remove quiet_hours", obj)
        _zone_ok(c, q.get("timezone"), qpath + ("timezone",))
        qh = QuietHours(_hhmm(q["start"]), _hhmm(q["end"]), q.get("timezone"), q.get("mode", "hold"))
    budget = None
    if "budget" in cons:
        campaign = cons["budget"].get("campaign", d.get("campaign"))
        if campaign is None:
            c.add(path + ("constraints", "budget"), "a budget needs a campaign; set budget.campaign or the rule's campaign", obj)
        budget = Budget(campaign or "", cons["budget"]["max"])
    return Rule(
        id=d["id"], version=d["version"], name=d.get("name", d["id"]), paused=d.get("paused", False),
        priority=d.get("priority", 0), group=d.get("group"), campaign=d.get("campaign", budget.campaign if budget else None),
        trigger=Trigger(kind, values), condition_text=d.get("condition"),
        condition=c.expr(d.get("condition"), path + ("condition",), obj),
        actions=tuple(_action(c, a, path + ("actions", i), obj) for i, a in enumerate(d["actions"])),
        constraints=Constraints(caps, qh, cons.get("consent_required", False), cons.get("consent_channel"), budget),
        source=f"{c.src.file}:{c.src.at(path)[0]}" if c.src.at(path)[0] else c.src.file,
        required_tags=required_tags(d.get("condition")),
    )


#: A param computed when the action is built: the whole string is ``${<expression>}``.
_COMPUTED_PARAM = re.compile(r"\$\{(.*)\}", re.DOTALL)


def _action(c: _Checker, a: Mapping[str, Any], path: Path_, obj: str) -> ActionSpec:
    params = dict(a.get("params", {}))
    exprs = {}
    for k, v in params.items():
        m = _COMPUTED_PARAM.fullmatch(v) if isinstance(v, str) else None
        if m is not None:
            exprs[k] = c.expr(m.group(1), path + ("params", k), obj, skip=2)
    return ActionSpec(a["channel"], a["template"], params, {k: e for k, e in exprs.items() if e is not None})


_PATTERN_KEYS = {"absence": ("start", "cancel"), "count": ("event",), "sequence": ("steps",)}


def _pattern(c: _Checker, d: Mapping[str, Any], path: Path_, obj: str) -> Pattern:
    kind = d["type"]
    needed = _PATTERN_KEYS[kind]
    before = len(c.problems)
    for other in {"start", "cancel", "event", "steps", "count"} - set(needed) - ({"count"} if kind == "count" else set()):
        if other in d:
            c.add(path + (other,), f"{other!r} does not belong to a {kind} pattern; remove it "
                  f"(a {kind} pattern takes {', '.join(needed + (('count',) if kind == 'count' else ()))})", obj)
    for k in needed + (("count",) if kind == "count" else ()):
        if k not in d:
            c.add(path, f"missing required key {k!r} for a {kind} pattern; add it", obj)
    if len(c.problems) > before:
        return None  # type: ignore[return-value]
    if kind == "sequence":
        matchers = tuple(_matcher(c, s, path + ("steps", i), obj) for i, s in enumerate(d["steps"]))
    else:
        matchers = tuple(_matcher(c, d[k], path + (k,), obj) for k in needed)
    return Pattern(
        id=d["id"], version=d["version"], name=d.get("name", d["id"]), paused=d.get("paused", False),
        kind=kind, matchers=matchers, within_ms=parse_duration(d["within"]), count=d.get("count", 0),
        by=tuple(d["by"].split(".")) if "by" in d else None,
        lateness_ms=parse_duration(d.get("lateness", 0)) if d.get("lateness", 0) else 0,
        source=f"{c.src.file}:{c.src.at(path)[0]}" if c.src.at(path)[0] else c.src.file,
    )


_STEP_KINDS = ("send", "wait", "wait_for", "branch", "end")
_STEP_LINKS = {"send": ("next",), "wait": ("next",), "wait_for": ("on_event", "on_timeout"),
               "branch": ("else",), "end": ()}


def _journey(c: _Checker, d: Mapping[str, Any], path: Path_, obj: str) -> Journey:
    entry = d["entry"]
    ekinds = [k for k in ("event", "tag_added") if k in entry]
    if len(ekinds) != 1:
        c.add(path + ("entry",), "give exactly one of entry.event or entry.tag_added", obj)
        return None  # type: ignore[return-value]
    steps: dict[str, Step] = {}
    for i, s in enumerate(d["steps"]):
        spath = path + ("steps", i)
        kinds = [k for k in _STEP_KINDS if k in s]
        if len(kinds) != 1:
            c.add(spath, f"step {s['id']!r} must have exactly one of {', '.join(_STEP_KINDS)}"
                  f" (found {', '.join(kinds) or 'none'})", obj)
            continue
        kind = kinds[0]
        allowed = set(_STEP_LINKS[kind]) | {"id", kind}
        for k in s:
            if k not in allowed:
                c.add(spath + (k,), f"{k!r} does not belong to a {kind} step; remove it "
                      f"(a {kind} step takes {', '.join(sorted(allowed - {'id'}))})", obj)
        for k in _STEP_LINKS[kind]:
            if k not in s:
                c.add(spath, f"step {s['id']!r} ({kind}) needs {k!r}; add it", obj)
        if s["id"] in steps:
            c.add(spath + ("id",), f"duplicate step id {s['id']!r}; rename one", obj)
        wf = s.get("wait_for")
        steps[s["id"]] = Step(
            id=s["id"], kind=kind, rule=s.get("send"), next=s.get("next"),
            duration_ms=parse_duration(s["wait"]) if "wait" in s else parse_duration(wf["within"]) if wf else 0,
            matcher=_matcher(c, wf, spath + ("wait_for",), obj) if wf else None,
            on_event=s.get("on_event"), on_timeout=s.get("on_timeout"),
            branches=tuple(Branch(b["if"], c.expr(b["if"], spath + ("branch", j, "if"), obj), b["next"])
                           for j, b in enumerate(s.get("branch", ()))),
            otherwise=s.get("else"),
        )
    for i, s in enumerate(d["steps"]):
        links = [(k, s[k]) for k in ("next", "on_event", "on_timeout", "else") if k in s]
        links += [(f"branch[{j}].next", b["next"]) for j, b in enumerate(s.get("branch", ()))]
        for k, target in links:
            if target not in steps:
                c.add(path + ("steps", i), f"{k} names step {target!r}, which this journey does not have; "
                      f"use one of {', '.join(steps)}", obj)
    return Journey(
        id=d["id"], version=d["version"], name=d.get("name", d["id"]), paused=d.get("paused", False),
        entry=Trigger(ekinds[0], (entry[ekinds[0]],)), entry_where_text=entry.get("where"),
        entry_where=c.expr(entry.get("where"), path + ("entry", "where"), obj),
        exits=tuple(_matcher(c, m, path + ("exit", i), obj) for i, m in enumerate(d.get("exit", ()))),
        steps=steps, first_step=d["steps"][0]["id"], reentry=d.get("reentry", False),
        source=f"{c.src.file}:{c.src.at(path)[0]}" if c.src.at(path)[0] else c.src.file,
    )


def _policy(c: _Checker, d: Mapping[str, Any]) -> Policy:
    tz = d.get("default_timezone", "Asia/Shanghai")
    _zone_ok(c, tz, ("policy", "default_timezone"))
    caps = []
    for f in d.get("frequency", ()):
        chans = tuple(f.get("channels", CHANNELS))
        name = f.get("name") or (f"channel:{chans[0]}" if len(chans) == 1 else "all") + f":{f['window']}"
        caps.append(FrequencyCap(name, f["max"], parse_duration(f["window"]), chans))
    consent = dict(Policy().consent)
    consent.update(d.get("consent", {}))
    return Policy(tz, tuple(caps), consent)


_BUILDERS: dict[str, Callable[[_Checker, Any, Path_, str], Any]] = {
    "rule": _rule, "pattern": _pattern, "journey": _journey}


def references(rules: Mapping[str, Rule], patterns: Mapping[str, Pattern],
               journeys: Mapping[str, Journey]) -> list[tuple[str, str, str]]:
    """Broken links as (kind, id, message): a rule's pattern/journey trigger, a journey's send step."""
    out = []
    for r in rules.values():
        if r.trigger.kind == "pattern" and r.trigger.values[0] not in patterns:
            out.append(("rule", r.id, (f"triggers on pattern {r.trigger.values[0]!r}, which does not exist; "
                        "define the pattern first or fix the id")))
        if r.trigger.kind == "journey" and r.trigger.values[0] not in journeys:
            out.append(("rule", r.id, (f"triggers on journey {r.trigger.values[0]!r}, which does not exist; "
                        "define the journey first or fix the id")))
    for j in journeys.values():
        for s in j.steps.values():
            if s.kind != "send":
                continue
            sent = rules.get(s.rule or "")
            if sent is None:
                out.append(("journey", j.id, f"step {s.id!r} sends rule {s.rule!r}, which does not exist; "
                            "define the rule (trigger: {journey: " + j.id + "}) first"))
            elif sent.trigger != _journey_trigger(j.id):
                out.append(("journey", j.id, (f"step {s.id!r} sends rule {s.rule!r}, whose trigger is not "
                            f"{{journey: {j.id}}}; set that rule's trigger to this journey")))
    return out


def _journey_trigger(jid: str) -> Trigger:
    return Trigger("journey", (jid,))


def load_text(text: str, file: str = "<rules>") -> Definitions:
    """Validate and parse a definitions document; raises :class:`DefinitionError` with every problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise DefinitionError([Problem(file, line, col, "", "$", f"not valid YAML/JSON: "
                                       f"{getattr(e, 'problem', e)}; fix the syntax")]) from None
    src = YamlSource(file, root, text=text)
    c = _Checker(src, doc if doc is not None else {})
    for path, key in src.duplicates:
        c.add(path, f"key {key!r} appears twice in one mapping; keep one")
    for path, key, kind in src.non_text_keys:
        c.add(path, f"YAML reads the key {key!r} as {kind}, not as text (yes/no/on/off, numbers, dates and ~ do that); "
              f"quote it: '{key}'")
    for err in sorted(_VALIDATOR.iter_errors(c.doc), key=lambda e: [str(p) for p in e.absolute_path]):
        c.add(_error_path(err), _schema_message(err))
    if c.problems:
        raise DefinitionError(c.problems)
    built: dict[str, dict[str, Any]] = {"rule": {}, "pattern": {}, "journey": {}}
    for section, kind in _SECTION_KIND.items():
        for i, d in enumerate(c.doc.get(section, ())):
            path = (section, i)
            obj = f"{kind} {d['id']!r}"
            if d["id"] in built[kind]:
                c.add(path + ("id",), f"duplicate {kind} id {d['id']!r}; ids must be unique, rename one", obj)
                continue
            built[kind][d["id"]] = _BUILDERS[kind](c, d, path, obj)
    policy = _policy(c, c.doc.get("policy", {}))
    if not c.problems:
        for kind, oid, message in references(built["rule"], built["pattern"], built["journey"]):
            section = {"rule": "rules", "journey": "journeys"}[kind]
            idx = [d["id"] for d in c.doc[section]].index(oid)
            c.add((section, idx), message, f"{kind} {oid!r}")
    if c.problems:
        raise DefinitionError(c.problems)
    return Definitions(policy, tuple(built["pattern"].values()), tuple(built["journey"].values()),
                       tuple(built["rule"].values()))


def load_file(path: str | Path) -> Definitions:
    """:func:`load_text` of a file; problems name the file as given."""
    p = Path(path)
    return load_text(p.read_text(encoding="utf-8"), str(path))


def parse_definition(kind: str, definition: Any, *, source: str | None = None) -> Rule | Pattern | Journey:
    """One definition from a control message (kind rule|pattern|journey), validated and compiled.

    References to other definitions are checked by the registry against the running set.
    """
    if kind not in _BUILDERS:
        raise DefinitionError([Problem(source or "<control>", None, None, "", "$.kind",
                                       f"unknown kind {kind!r}; use rule, pattern or journey")])
    oid = definition.get("id") if isinstance(definition, Mapping) else None
    src = YamlSource(source or f"<control {kind} {oid}>", None)
    obj = f"{kind} {oid!r}" if oid is not None else kind
    c = _Checker(src, definition)
    for err in sorted(_KIND_VALIDATORS[kind].iter_errors(definition), key=lambda e: [str(p) for p in e.absolute_path]):
        c.add(_error_path(err), _schema_message(err), obj)
    if c.problems:
        raise DefinitionError(c.problems)
    out: Rule | Pattern | Journey = _BUILDERS[kind](c, definition, (), obj)
    if c.problems:
        raise DefinitionError(c.problems)
    return out


def policy_from(definition: Any) -> Policy:
    """A policy section on its own (validated)."""
    src = YamlSource("<control policy>", None)
    c = _Checker(src, {"policy": definition})
    for err in _KIND_VALIDATORS["policy"].iter_errors(definition):
        c.add(("policy",) + tuple(err.absolute_path), _schema_message(err))
    policy = _policy(c, definition) if not c.problems else Policy()
    if c.problems:
        raise DefinitionError(c.problems)
    return policy


if __name__ == "__main__":  # pragma: no cover
    json.dump(SCHEMA, sys.stdout, indent=2)
    sys.stdout.write("\n")
