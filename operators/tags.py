"""Tag definitions: load, validate, evaluate, hot-update, diff (pure).

A tag is a named boolean expression (operators/expr/) over a person's profile, i.e. the output of
``operators.profile_windows.evaluate`` (``PROFILE_FIELDS``; money fields arrive as 2-decimal strings
and are turned into exact ``Decimal`` values). Fields are available bare (``gmv_90d``) and under
``profile.`` (``profile.gmv_90d``); a missing field (``last_purchase`` of a person who never bought)
is null. Tags cannot read other tags or the event: rules do that (issue 4).

File format (``config/tags.yaml``)::

    version: 1                # optional: the tag set version (default 1)
    tags:
      - name: churn_risk      # ^[a-z][a-z0-9_]{0,63}$, unique
        description: ...      # required text
        expression: purchases >= 2 and days_since(last_purchase) >= 30
        enabled: true         # optional (default true); false = paused
        version: 1            # optional per-tag version (default 1)

Loading rejects unknown keys, duplicates, wrong types and broken expressions with
``file:line:column`` pointing into the YAML file (block scalars and quoted strings included).

Run-time changes come as control messages (``apply_control``), each with a per-tag version that must
be greater than the tag's current (or deleted) version; anything else is rejected with a reason and
the old ``TagSet`` keeps running. Every applied message gives a new ``TagSet`` whose ``version`` is
one higher, so all parallel instances that apply the same messages in the same order agree.

Semantics of the states of a tag for a person (``tag_step``):

* enabled: evaluated at every step; added / removed as the expression says;
* paused: memberships are frozen (neither added nor removed) until it is resumed or deleted;
* deleted: removed at the person's next step. The Flink wrapper should run ``tag_step`` for every
  key when the tag set changes (``applyToKeyedState``) so that removals and new tags do not wait for
  the person's next event.

Time: ``TagSet.next_flip_ms`` is the earliest event time after ``now_ms`` at which a tag can change
with the profile unchanged (``days_since(...)``...). Rolling window fields (``views_7d``...) are
computed by the profile as of ``last_seen`` and do not age by themselves; a wrapper that re-evaluates
the profile at timer time gets the aged windows, but only time functions schedule timers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from operators import profile_windows
from operators.expr import Expr, ExprError, compile_expr

_KIND_WORDS = {"num": "a number", "str": "a string", "list": "a list", "map": "a mapping", "null": "null"}

__all__ = [
    "MONEY_FIELDS",
    "PROFILE_FIELDS",
    "TAG_NAMES",
    "ControlResult",
    "TagChange",
    "TagConfigError",
    "TagDefinition",
    "TagMemo",
    "TagSet",
    "TagState",
    "diff_tags",
    "profile_env",
    "tag_step",
    "tag_step_memo",
]

TAG_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
TAGS_FILE = Path(__file__).resolve().parent.parent / "config" / "tags.yaml"


def _profile_fields() -> tuple[frozenset[str], frozenset[str]]:
    """The fields profile_windows.evaluate really returns (all of them, and the money ones)."""
    sample = profile_windows.evaluate({"first_seen": "1", "last_seen": "1", "last_purchase": "1"})
    return frozenset(sample), frozenset(k for k, v in sample.items() if isinstance(v, str))


#: Profile fields an expression may read (bare or as ``profile.<field>``).
PROFILE_FIELDS, MONEY_FIELDS = _profile_fields()
#: The names (with kinds) a tag expression is compiled against.
TAG_NAMES: Mapping[str, str] = {**{f: "num" for f in PROFILE_FIELDS}, **{f"profile.{f}": "num" for f in PROFILE_FIELDS}}

_TAG_KEYS = {"name": "str", "description": "str", "expression": "str", "enabled": "bool", "version": "int"}
_REQUIRED = ("name", "description", "expression")
_FILE_KEYS = {"version": "int", "tags": "seq"}
_OPS = ("upsert", "delete", "pause", "resume")
_MSG_KEYS = frozenset({"kind", "op", "name", "version", "definition"})
_DEF_KEYS = frozenset({"description", "expression", "enabled"})
_YAML_TAGS = {"str": "tag:yaml.org,2002:str", "bool": "tag:yaml.org,2002:bool", "int": "tag:yaml.org,2002:int"}


def profile_env(profile: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluation environment of a profile: its fields, money as ``Decimal``, and ``profile``.

    A money value that does not parse becomes null (so comparisons with it are false).
    """
    env = dict(profile)
    for f in MONEY_FIELDS:
        v = env.get(f)
        if isinstance(v, str):
            try:
                env[f] = Decimal(v)
            except InvalidOperation:
                env[f] = None
    env["profile"] = dict(env)
    return env


# ---------------------------------------------------------------------------------------------- records


class TagConfigError(ExprError):
    """A tag file or definition is invalid; ``source:line:column`` points at the offending place."""


@dataclass(frozen=True)
class TagDefinition:
    """One tag: ``expr`` is true for the persons who carry it; ``enabled=False`` means paused."""

    name: str
    description: str
    expr: Expr
    version: int = 1
    enabled: bool = True

    def as_record(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "expression": self.expr.text,
                "version": self.version, "enabled": self.enabled}


@dataclass(frozen=True)
class ControlResult:
    """The answer to one control message, for ``zt.control.results``. ``reason`` is None when applied."""

    kind: str
    name: str
    version: int | None
    status: str  # "applied" | "rejected"
    reason: str | None = None
    tagset_version: int | None = None

    def as_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "version": self.version, "status": self.status,
                "reason": self.reason, "tagset_version": self.tagset_version}


@dataclass(frozen=True)
class TagChange:
    """A tag added to / removed from a person, for ``zt.tags.changes``."""

    person: str
    tag: str
    op: str  # "add" | "remove"
    ts_ms: int
    cause: str
    tagset_version: int

    def as_record(self) -> dict[str, Any]:
        return {"person": self.person, "tag": self.tag, "op": self.op, "ts": self.ts_ms, "cause": self.cause,
                "tagset_version": self.tagset_version}


@dataclass(frozen=True)
class TagState:
    """Keyed state of one person: the tags they carry and the tag set version that computed them."""

    tags: frozenset[str]
    tagset_version: int


# ---------------------------------------------------------------------------------------------- YAML positions


def _position(text: str, index: int) -> tuple[int, int, str]:
    """1-based line and column of ``index`` in ``text``, and that line's text."""
    start = text.rfind("\n", 0, index) + 1
    end = text.find("\n", index)
    return text.count("\n", 0, index) + 1, index - start + 1, text[start : end if end >= 0 else len(text)]


def _error_at(text: str, source: str, index: int, message: str) -> TagConfigError:
    line, column, snippet = _position(text, index)
    return TagConfigError(message, source=source, line=line, column=column, snippet=snippet.expandtabs(1), caret=column - 1)


def _node_error(text: str, source: str, node: yaml.Node, message: str) -> TagConfigError:
    return _error_at(text, source, node.start_mark.index, message)


def _value_offsets(text: str, node: yaml.ScalarNode) -> list[int]:
    """For each offset of the scalar's value (and its end), the index of that character in ``text``.

    YAML folding, indentation and quoting only change whitespace and escapes, so the value's
    non-blank characters appear in the source in order; they are aligned one by one.
    """
    start, end = node.start_mark.index, node.end_mark.index
    style = node.style
    if style in ("|", ">"):
        nl = text.find("\n", start)
        start = end if nl < 0 else nl + 1
    elif style in ("'", '"'):
        start += 1
    value: str = node.value
    out: list[int] = []
    r = start
    last = start
    for ch in value:
        if ch.isspace():
            out.append(r)
            continue
        while r < end and text[r] != ch:
            r += 1
        out.append(r if r < end else last)
        last = r + 1
        r += 1
        if style == "'" and ch == "'" and r < end and text[r] == "'":
            r += 1
    out.append(last)
    return out


def _compile_node(text: str, source: str, node: yaml.ScalarNode) -> Expr:
    try:
        return compile_expr(node.value, source=source, names=TAG_NAMES)
    except ExprError as e:
        index = _value_offsets(text, node)[min(e.offset, len(node.value))]
        raise _error_at(text, source, index, e.message) from None


# ---------------------------------------------------------------------------------------------- loading


def _scalar(text: str, source: str, node: yaml.Node, kind: str, where: str) -> Any:
    if not isinstance(node, yaml.ScalarNode) or node.tag != _YAML_TAGS[kind]:
        want = {"str": "text", "bool": "true or false", "int": "an integer"}[kind]
        raise _node_error(text, source, node, f"{where} must be {want}")
    if kind == "str":
        return node.value
    return yaml.SafeLoader(text).construct_object(node)  # the usual YAML 1.1 int / bool rules


def _mapping(text: str, source: str, node: yaml.Node, allowed: Mapping[str, str], where: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise _node_error(text, source, node, f"{where} must be a mapping with keys {', '.join(allowed)}")
    seen: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for k, v in node.value:
        if not isinstance(k, yaml.ScalarNode) or k.value not in allowed:
            key = k.value if isinstance(k, yaml.ScalarNode) else "?"
            raise _node_error(text, source, k, f"unknown key {key!r} in {where}; allowed: {', '.join(allowed)}")
        if k.value in seen:
            raise _node_error(text, source, k, f"duplicate key {k.value!r} in {where} (first at line {seen[k.value][0].start_mark.line + 1})")
        seen[k.value] = (k, v)
    return seen


def _parse_tags_yaml(text: str, source: str) -> tuple[int, list[TagDefinition]]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        index = mark.index if mark is not None else 0
        raise _error_at(text, source, index, f"invalid YAML: {e.problem or e.context}") from None
    if root is None:
        raise TagConfigError("empty tag file: expected 'tags:' with a list of tag definitions", source=source)
    top = _mapping(text, source, root, _FILE_KEYS, "the tag file")
    version = 1
    if "version" in top:
        version = _scalar(text, source, top["version"][1], "int", "'version'")
        if version < 1:
            raise _node_error(text, source, top["version"][1], "'version' must be at least 1")
    if "tags" not in top:
        raise _node_error(text, source, root, "missing key 'tags' (a list of tag definitions)")
    seq = top["tags"][1]
    if not isinstance(seq, yaml.SequenceNode):
        raise _node_error(text, source, seq, "'tags' must be a list of tag definitions ('- name: ...')")
    defs: list[TagDefinition] = []
    first_line: dict[str, int] = {}
    for item in seq.value:
        fields = _mapping(text, source, item, _TAG_KEYS, "a tag definition")
        for key in _REQUIRED:
            if key not in fields:
                raise _node_error(text, source, item, f"tag definition without {key!r}")
        name_node = fields["name"][1]
        name = _scalar(text, source, name_node, "str", "'name'")
        if not TAG_NAME_RE.match(name):
            raise _node_error(text, source, name_node, f"tag name {name!r} must match {TAG_NAME_RE.pattern} (lower case, digits, '_')")
        if name in first_line:
            raise _node_error(text, source, name_node, f"duplicate tag {name!r} (first defined at line {first_line[name]})")
        first_line[name] = name_node.start_mark.line + 1
        description = _scalar(text, source, fields["description"][1], "str", f"'description' of {name}")
        if not description.strip():
            raise _node_error(text, source, fields["description"][1], f"'description' of {name} is empty")
        expr_node = fields["expression"][1]
        _scalar(text, source, expr_node, "str", f"'expression' of {name}")
        expr = _compile_node(text, source, expr_node)
        if expr.kind not in ("bool", "any"):
            raise _node_error(text, source, expr_node, f"'expression' of {name} must be a condition (true/false), it gives {_KIND_WORDS.get(expr.kind, expr.kind)}")
        enabled = _scalar(text, source, fields["enabled"][1], "bool", f"'enabled' of {name}") if "enabled" in fields else True
        tag_version = 1
        if "version" in fields:
            tag_version = _scalar(text, source, fields["version"][1], "int", f"'version' of {name}")
            if tag_version < 1:
                raise _node_error(text, source, fields["version"][1], f"'version' of {name} must be at least 1")
        defs.append(TagDefinition(name, description, expr, tag_version, enabled))
    return version, defs


# ---------------------------------------------------------------------------------------------- the tag set


@dataclass(frozen=True)
class TagSet:
    """An immutable, versioned registry of tag definitions.

    ``definitions`` are sorted by name; ``tombstones`` keeps (name, version) of deleted tags so that a
    replayed older upsert cannot resurrect them. Build one with ``load``/``from_yaml_text``; change it
    with ``apply_control`` (which returns a new TagSet).
    """

    version: int
    definitions: tuple[TagDefinition, ...]
    tombstones: tuple[tuple[str, int], ...] = ()
    source: str = "<tags>"
    _by_name: dict[str, TagDefinition] = field(init=False, repr=False, compare=False)
    _active: tuple[TagDefinition, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        defs = tuple(sorted(self.definitions, key=lambda d: d.name))
        object.__setattr__(self, "definitions", defs)
        object.__setattr__(self, "_by_name", {d.name: d for d in defs})
        object.__setattr__(self, "_active", tuple(d for d in defs if d.enabled))
        if len(self._by_name) != len(defs):
            raise ValueError("duplicate tag names in a TagSet")

    # -- building

    @classmethod
    def load(cls, path: str | Path = TAGS_FILE) -> TagSet:
        """Load and validate a tag file; raise TagConfigError naming file, line and column."""
        p = Path(path)
        return cls.from_yaml_text(p.read_text(encoding="utf-8"), str(p))

    @classmethod
    def from_yaml_text(cls, text: str, source: str = "<tags>") -> TagSet:
        version, defs = _parse_tags_yaml(text, source)
        return cls(version, tuple(defs), (), source)

    def to_snapshot(self) -> dict[str, Any]:
        """A JSON-able copy (for broadcast state / checkpoints); ``from_snapshot`` restores it."""
        return {"version": self.version, "source": self.source, "tags": [d.as_record() for d in self.definitions],
                "tombstones": [list(t) for t in self.tombstones]}

    @classmethod
    def from_snapshot(cls, snap: Mapping[str, Any]) -> TagSet:
        source = snap["source"]
        defs = tuple(
            TagDefinition(t["name"], t["description"], compile_expr(t["expression"], source=f"{source}:{t['name']}", names=TAG_NAMES),
                          t["version"], t["enabled"])
            for t in snap["tags"]
        )
        return cls(snap["version"], defs, tuple((n, v) for n, v in snap["tombstones"]), source)

    # -- reading

    def get(self, name: str) -> TagDefinition | None:
        return self._by_name.get(name)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._by_name)

    @property
    def paused(self) -> frozenset[str]:
        return frozenset(d.name for d in self.definitions if not d.enabled)

    def evaluate(self, profile: Mapping[str, Any], now_ms: int) -> frozenset[str]:
        """The enabled tags whose expression is true for ``profile`` at event time ``now_ms``."""
        if not profile:
            return frozenset()
        return self._evaluate_env(profile_env(profile), now_ms)

    def _evaluate_env(self, env: Mapping[str, Any], now_ms: int) -> frozenset[str]:
        return frozenset(d.name for d in self._active if d.expr.evaluate(env, now_ms) is True)

    def next_flip_ms(self, profile: Mapping[str, Any], now_ms: int) -> int | None:
        """Earliest event time > ``now_ms`` at which an enabled tag can change with ``profile`` fixed."""
        if not profile:
            return None
        return self._next_flip_env(profile_env(profile), now_ms)

    def _next_flip_env(self, env: Mapping[str, Any], now_ms: int) -> int | None:
        best: int | None = None
        for d in self._active:
            if d.expr.uses_time:
                t = d.expr.next_change_ms(env, now_ms)
                if t is not None and (best is None or t < best):
                    best = t
        return best

    # -- control

    def apply_control(self, msg: Mapping[str, Any]) -> tuple[TagSet, ControlResult]:
        """Apply one control message; on rejection return ``self`` unchanged and the reason.

        ``{"kind": "tag", "op": "upsert"|"delete"|"pause"|"resume", "name": str, "version": int,
        "definition": {"description": str, "expression": str, "enabled": bool}}`` (definition only for
        upsert; ``enabled`` optional, default true; ``description`` optional when the tag exists).
        """
        name = msg.get("name") if isinstance(msg, Mapping) else None
        version = msg.get("version") if isinstance(msg, Mapping) else None
        shown_name = name if isinstance(name, str) else str(name)
        shown_version = version if type(version) is int else None

        def reject(reason: str) -> tuple[TagSet, ControlResult]:
            return self, ControlResult("tag", shown_name, shown_version, "rejected", reason, self.version)

        if not isinstance(msg, Mapping):
            return reject("a control message must be a JSON object")
        unknown = sorted(set(msg) - _MSG_KEYS)
        if unknown:
            return reject(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_MSG_KEYS))}")
        if msg.get("kind") != "tag":
            return reject(f"kind must be 'tag', got {msg.get('kind')!r}")
        op = msg.get("op")
        if op not in _OPS:
            return reject(f"op must be one of {', '.join(_OPS)}, got {op!r}")
        if not isinstance(name, str) or not TAG_NAME_RE.match(name):
            return reject(f"name must match {TAG_NAME_RE.pattern}, got {name!r}")
        if type(version) is not int or version < 1:
            return reject(f"version must be a positive integer, got {version!r}")
        current = self._by_name.get(name)
        tomb = dict(self.tombstones).get(name)
        floor = current.version if current is not None else (tomb or 0)
        if version <= floor:
            return reject(f"version {version} is not greater than the current version {floor} of tag {name!r}")
        if op != "upsert" and "definition" in msg:
            return reject(f"op {op!r} takes no definition")
        defs = dict(self._by_name)
        tombstones = dict(self.tombstones)
        if op == "upsert":
            d = msg.get("definition")
            if not isinstance(d, Mapping):
                return reject("upsert needs a 'definition' object with 'expression' (and 'description')")
            bad = sorted(set(d) - _DEF_KEYS)
            if bad:
                return reject(f"unknown definition field(s) {', '.join(bad)}; allowed: {', '.join(sorted(_DEF_KEYS))}")
            text = d.get("expression")
            if not isinstance(text, str):
                return reject("definition.expression must be a string")
            description = d.get("description", current.description if current is not None else None)
            if not isinstance(description, str) or not description.strip():
                return reject("definition.description must be a non-empty string")
            enabled = d.get("enabled", True)
            if type(enabled) is not bool:
                return reject("definition.enabled must be true or false")
            try:
                expr = compile_expr(text, source=f"control:tag:{name}@v{version}", names=TAG_NAMES)
            except ExprError as e:
                return reject(f"invalid expression: {e}")
            if expr.kind not in ("bool", "any"):
                return reject(f"the expression must be a condition (true/false), it gives {_KIND_WORDS.get(expr.kind, expr.kind)}")
            defs[name] = TagDefinition(name, description, expr, version, enabled)
            tombstones.pop(name, None)
        else:
            if current is None:
                return reject(f"unknown tag {name!r}" + (" (deleted)" if tomb else ""))
            if op == "delete":
                del defs[name]
                tombstones[name] = version
            else:
                defs[name] = replace(current, version=version, enabled=(op == "resume"))
        new = TagSet(self.version + 1, tuple(defs.values()), tuple(sorted(tombstones.items())), self.source)
        return new, ControlResult("tag", name, version, "applied", None, new.version)


# ---------------------------------------------------------------------------------------------- per person


def diff_tags(person: str, old: frozenset[str], new: frozenset[str], ts_ms: int, cause: str, *,
              tagset_version: int = 0) -> list[TagChange]:
    """The changes from ``old`` to ``new``: removals first, then additions, each sorted by tag."""
    return [TagChange(person, t, "remove", ts_ms, cause, tagset_version) for t in sorted(old - new)] + [
        TagChange(person, t, "add", ts_ms, cause, tagset_version) for t in sorted(new - old)
    ]


def tag_step(
    state: TagState | None,
    profile: Mapping[str, Any],
    now_ms: int,
    tagset: TagSet,
    *,
    person: str,
    cause: str = "profile",
) -> tuple[TagState | None, list[TagChange], int | None]:
    """One step for one person: ``(new state | None, changes, next timer ms | None)``.

    Call it when the person's profile changed (``cause="profile"``), when their timer fires
    (``cause="timer"``, ``now_ms`` = the timer's time) and when the tag set changed (``cause="tagset"``).
    Enabled tags are evaluated; paused tags keep their current members; deleted tags are removed.
    The state is None (clear the key) when the person carries no tag. ``next timer`` is the earliest
    event time at which a tag can flip with this profile (register it; an earlier timer can be
    replaced by it).
    """
    old = state.tags if state is not None else frozenset()
    if profile:
        env = profile_env(profile)
        new = tagset._evaluate_env(env, now_ms) | (old & tagset.paused)
        next_timer = tagset._next_flip_env(env, now_ms)
    else:
        new, next_timer = old & tagset.paused, None
    changes = diff_tags(person, old, new, now_ms, cause, tagset_version=tagset.version)
    return (TagState(new, tagset.version) if new else None), changes, next_timer


@dataclass(frozen=True)
class TagMemo:
    """What ``tag_step_memo`` remembers about one person between two steps (in memory, never in state).

    ``fields``: the profile of the last step. ``entries``: per enabled tag of ``tagset``,
    ``(member, until, timer_before, since)``: whether the expression was true at ``since`` (the time
    it was evaluated); the time up to which that value holds while the names it reads keep their
    values (``next_change_ms``; None = for ever, and always None without time functions); and the
    time before which ``until`` is also what ``next_change_ms`` answers (None = always;
    ``_UNCHECKED`` = not worked out yet, done on first reuse). That is ``until`` itself when the
    membership flips there; when the search of ``next_change_ms`` stopped after ``MAX_CHANGE_STEPS``
    steps without a flip, its answer moves with ``now`` once ``now`` passes the search's first step
    (the first candidate time after ``since``), so it is that first step.
    """

    tagset: TagSet
    fields: Mapping[str, Any]
    entries: Mapping[str, tuple[bool, int | None, int | None, int]]


_UNCHECKED = -1


def _fresh_entry(expr: Expr, env: Mapping[str, Any], now_ms: int, member: bool) -> tuple[bool, int | None, int | None, int]:
    """The memo entry of a tag whose value at ``now_ms`` is ``member`` (see ``TagMemo``)."""
    if not expr.uses_time:
        return member, None, None, now_ms
    t = expr.next_change_ms(env, now_ms)
    return member, t, (None if t is None else _UNCHECKED), now_ms


def _timer_before(expr: Expr, env: Mapping[str, Any], entry: tuple[bool, int | None, int | None, int]) -> int:
    """``timer_before`` of an entry with a time ``until`` (``TagMemo``); ``env`` has the same inputs."""
    member, until, _, since = entry
    assert until is not None  # only entries with a time are asked
    if (expr.evaluate(env, until) is True) != member:
        return until
    # The search stopped without a flip: ``next_change_ms`` steps to the candidate time, at least one
    # ms on; the candidate is not None (else the search had answered None).
    cand = expr._cand(env, since) if expr._cand is not None else None
    assert cand is not None
    return max(cand, since + 1)


def tag_step_memo(
    state: TagState | None,
    profile: Mapping[str, Any],
    now_ms: int,
    tagset: TagSet,
    memo: TagMemo | None,
    *,
    person: str,
    cause: str = "profile",
) -> tuple[TagState | None, list[TagChange], int | None, TagMemo | None]:
    """``tag_step`` that re-evaluates only what can have changed: ``(state, changes, timer, memo)``.

    The first three results are exactly ``tag_step``'s for the same arguments, whatever ``memo`` is
    (a test compares them on random steps). ``memo`` is the previous call's result for this person,
    or None (then every tag is evaluated). A tag keeps its remembered value when none of the names its
    expression reads changed and ``now_ms`` is before the value's ``until`` (``next_change_ms``: the
    value cannot change before it); its share of the timer is asked again only when ``now_ms`` reached
    the entry's ``timer_before`` (``TagMemo``). A new tag set object evaluates everything.
    """
    old = state.tags if state is not None else frozenset()
    if not profile:
        new = old & tagset.paused
        return (TagState(new, tagset.version) if new else None), \
            diff_tags(person, old, new, now_ms, cause, tagset_version=tagset.version), None, None
    prev = memo.entries if memo is not None and memo.tagset is tagset else None
    changed: set[str] = set()
    if prev is not None:
        before = memo.fields  # type: ignore[union-attr]
        changed = {k for k, v in profile.items() if before.get(k, _ABSENT) != v}
        changed.update(k for k in before if k not in profile)
        if changed:
            changed.add("profile")
    env: Mapping[str, Any] | None = None
    entries: dict[str, tuple[bool, int | None, int | None, int]] = {}
    members: list[str] = []
    next_timer: int | None = None
    for d in tagset._active:
        expr = d.expr
        entry = prev.get(d.name) if prev is not None else None
        if entry is not None and (entry[1] is None or now_ms < entry[1]) and expr.names.isdisjoint(changed):
            before = entry[2]
            if before is not None and now_ms >= before:
                if env is None:
                    env = profile_env(profile)
                if before == _UNCHECKED:
                    before = _timer_before(expr, env, entry)
                    entry = (entry[0], entry[1], before, entry[3])
                if now_ms >= before:
                    entry = _fresh_entry(expr, env, now_ms, entry[0])
        else:
            if env is None:
                env = profile_env(profile)
            entry = _fresh_entry(expr, env, now_ms, expr.evaluate(env, now_ms) is True)
        entries[d.name] = entry
        if entry[0]:
            members.append(d.name)
        t = entry[1]
        if t is not None and (next_timer is None or t < next_timer):
            next_timer = t
    new = frozenset(members) | (old & tagset.paused)
    changes = diff_tags(person, old, new, now_ms, cause, tagset_version=tagset.version) if new != old else []
    return (TagState(new, tagset.version) if new else None), changes, next_timer, TagMemo(tagset, profile, entries)


_ABSENT = object()
