"""``TagSet``: the immutable, versioned registry of tag definitions, what it evaluates for a
profile, and its control messages (upsert, delete, pause, resume)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from operators.expr import ExprError, compile_expr
from operators.tags.fields import _KIND_WORDS, TAG_NAMES, profile_env
from operators.tags.loading import TAGS_FILE, _parse_tags_yaml
from operators.tags.records import TAG_NAME_RE, ControlResult, TagDefinition

_OPS = ("upsert", "delete", "pause", "resume")
_MSG_KEYS = frozenset({"kind", "op", "name", "version", "definition"})
_DEF_KEYS = frozenset({"description", "expression", "enabled"})


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
