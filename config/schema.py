"""The declared event schema (``config/schema.yaml``, docs/schema.md): which props each event type carries
and of what type, which identifier types exist and how each is normalised and stored.

Loaded once with the settings (``Settings.event_schema``; ``schema_file`` names the file) and validated
here with the file, line and a message that says what to write instead. The checks it declares run in the
job's decode (JVM, ``pipelines/decode.py``) and in its Python reference (``operators.envelope``), which
tests keep equal; the rules, tags and actions see declared props with their declared types
(``operators.envelope.typed_props``).

Pure: pydantic and PyYAML only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from config.yaml_source import YamlSource

__all__ = ["BUILTIN_IDENTIFIERS", "BUILTIN_PROPS", "PROP_TYPES", "TRAIT_AGGREGATES", "TRAIT_COLUMNS", "EventSchema",
           "EventSpec", "IdentifierSpec", "PropSpec", "SchemaError", "TraitSpec", "default_schema", "load_schema",
           "parse_schema"]

#: The type of a declared prop (docs/schema.md "Types").
PROP_TYPES = ("string", "integer", "decimal", "boolean", "timestamp", "list")
PropType = Literal["string", "integer", "decimal", "boolean", "timestamp", "list"]
#: Props the envelope itself reads with fixed meaning (docs/semantics.md); a schema cannot redeclare them.
BUILTIN_PROPS = ("price", "qty", "campaign_id", "channel", "item_id", "experiment_id", "variation_id")
#: The identifier types every deployment has, strongest first (their storage is fixed: phone and e-mail
#: normalised and keyed-hashed, the others as sent).
BUILTIN_IDENTIFIERS = ("user_id", "unionid", "openid", "phone", "email", "device_id", "cookie_id")
#: A prop or identifier type name (it becomes part of DLQ reasons, Redis fields and SQL column names).
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: What a computed trait aggregates (docs/schema.md "Computed traits").
TRAIT_AGGREGATES = ("count", "sum", "min", "max", "distinct_count", "first", "last")
TraitAggregate = Literal["count", "sum", "min", "max", "distinct_count", "first", "last"]
#: Columns of the job's event rows a trait may read as a prop besides the declared props: ``amount`` (price ×
#: qty of a purchase, docs/semantics.md) is a decimal, ``ts`` the event time (epoch ms), the others text.
TRAIT_COLUMNS = {"amount": "decimal", "ts": "integer", "item_id": "string", "campaign": "string",
                 "channel": "string"}
#: A trait window: a whole number of minutes, hours or days (``30d``), or ``lifetime``.
_WINDOW = re.compile(r"([1-9][0-9]{0,5})([mhd])")
#: The longest window: the days the person operator keeps buckets for (``operators.profile.KEEP_DAYS``).
MAX_WINDOW_MINUTES = 90 * 1440
#: Longest list a ``list`` prop may hold.
MAX_LIST_ITEMS = 1000


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PropSpec(_Frozen):
    """One declared prop."""

    type: PropType
    #: Absent, null (or an empty string for ``string``) → ``missing_field:props.<name>``.
    required: bool = False
    #: Personal data: never written to logs, the DLQ's metadata or tag/rule explanations in clear.
    pii: bool = False
    description: str = ""


class EventSpec(_Frozen):
    """One declared event type: its props beyond ``common_props``."""

    description: str = ""
    props: dict[str, PropSpec] = {}


class IdentifierSpec(_Frozen):
    """A custom identifier type (e.g. ``member_card``): how its raw value becomes its stored form."""

    #: ``none``: as sent; ``lower``: NFKC, ASCII white space trimmed, lower-cased (e-mail's normalisation).
    normalise: Literal["none", "lower"] = "none"
    #: Stored as the keyed HMAC of ``"<type>:<normalised value>"`` (like phone and e-mail), never in clear.
    hashed: bool = False
    description: str = ""


class TraitSpec(_Frozen):
    """A computed trait (docs/schema.md "Computed traits"): ``aggregate`` of the events of type ``event`` (all
    types when ``"*"``) that pass ``where`` (an expression over ``props``), of ``prop`` (not for ``count``), over
    ``window`` (``lifetime`` or e.g. ``30d``, ``24h``, ``60m``: buckets of that unit ending with the as-of
    time's)."""

    aggregate: TraitAggregate
    event: str = "*"
    prop: str | None = None
    where: str | None = None
    window: str = "lifetime"
    description: str = ""
    #: Where ``where`` starts (``file:line:column``; set by the loader, for the expression's errors).
    at: str = ""

    def window_spec(self) -> tuple[str, int] | None:
        """``(unit, n)`` with unit ``m``/``h``/``d``; None for ``lifetime``."""
        if self.window == "lifetime":
            return None
        m = _WINDOW.fullmatch(self.window)
        if m is None:  # parse_schema refuses such a file
            raise ValueError(f"trait window {self.window!r}")
        return m.group(2), int(m.group(1))


class EventSchema(_Frozen):
    version: Literal[1] = 1
    #: Custom identifier types, weakest last in ``identity.priority`` (which must name each of them).
    identifiers: dict[str, IdentifierSpec] = {}
    #: Props any event type may carry.
    common_props: dict[str, PropSpec] = {}
    #: Declared event types. Types not declared here are accepted (with ``common_props`` checked) unless
    #: ``undeclared_events: reject`` (then ``undeclared:event_type``).
    events: dict[str, EventSpec] = {}
    undeclared_events: Literal["accept", "reject"] = "accept"
    #: Computed traits (``operators.traits``): kept per person by the job, written with the profile.
    traits: dict[str, TraitSpec] = {}

    def prop_type(self, event_type: str, prop: str) -> str | None:
        """The type a trait reads ``prop`` of ``event_type`` as (``"*"``: a common prop), None when undeclared."""
        if prop in TRAIT_COLUMNS:
            return TRAIT_COLUMNS[prop]
        spec = (self.common_props if event_type == "*" else self.props_of(event_type)).get(prop)
        return spec.type if spec is not None else None

    def id_types(self) -> tuple[str, ...]:
        """Every identifier type the decode reads: the built-in ones, then the custom ones in file order."""
        return BUILTIN_IDENTIFIERS + tuple(self.identifiers)

    def prop_checks(self) -> list[tuple[str, str, PropSpec]]:
        """``(event type or "*", prop, spec)`` in check order: common props first, then each event type's."""
        out: list[tuple[str, str, PropSpec]] = [("*", n, s) for n, s in self.common_props.items()]
        for et, spec in self.events.items():
            out.extend((et, n, s) for n, s in spec.props.items())
        return out

    def props_of(self, event_type: str) -> dict[str, PropSpec]:
        """The declared props of one event type (common ones included; read-only). Called for every event the
        person operator sees: without a second source of props no new mapping is built."""
        ev = self.events.get(event_type)
        if ev is None or not ev.props:
            return self.common_props
        if not self.common_props:
            return ev.props
        return {**self.common_props, **ev.props}

    def reasons(self) -> tuple[str, ...]:
        """Every DLQ reason the schema's checks can give."""
        out: list[str] = []
        for _, name, spec in self.prop_checks():
            for r in (f"missing_field:props.{name}" if spec.required else None, f"wrong_type:props.{name}",
                      f"out_of_range:props.{name}" if spec.type in ("integer", "decimal") else None):
                if r and r not in out:
                    out.append(r)
        if self.undeclared_events == "reject":
            out.append("undeclared:event_type")
        return tuple(out)


class SchemaError(ValueError):
    """The schema file is wrong: the message names the file, the line and what to write instead."""


def default_schema() -> EventSchema:
    """The schema when none is declared: the envelope of docs/semantics.md, nothing more."""
    return EventSchema()


#: The schema shipped beside this module.
SHIPPED = Path(__file__).resolve().parent / "schema.yaml"


def load_schema(path: str | Path | None = None) -> EventSchema:
    """The schema of ``path`` (the shipped ``config/schema.yaml`` when empty)."""
    p = Path(path) if path else SHIPPED
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SchemaError(f"schema file {p} does not exist: set schema_file to an existing file "
                          f"(or leave it empty for the shipped {SHIPPED.name})") from None
    return parse_schema(text, str(p))


def parse_schema(text: str, file: str = "<schema>") -> EventSchema:
    """Parse and check a schema document; :class:`SchemaError` with ``file:line: message`` when wrong."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise SchemaError(f"{file}{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    src = YamlSource(file, root, text=text)

    def at(path: tuple[str, ...]) -> str:
        return f"{file}:{src.at(path)[0] or 1}"

    for key_path, _key, _kind in src.non_text_keys:
        raise SchemaError(f"{at(tuple(map(str, key_path)))}: {'.'.join(map(str, key_path))}: YAML reads this key as "
                          "something other than text (on/off/yes/no, numbers, ~): quote it")
    for key_path, _key in src.duplicates:
        raise SchemaError(f"{at(tuple(map(str, key_path)))}: {'.'.join(map(str, key_path))} is declared twice: keep one")
    if not isinstance(data, dict):
        raise SchemaError(f"{file}:1: the schema must be a mapping with identifiers, common_props and events")
    try:
        schema = EventSchema.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        path = tuple(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "literal_error" and path and path[-1] == "type":
            msg = f"'{err.get('input')}' is not a prop type: write one of {', '.join(PROP_TYPES)}"
        elif err["type"] == "extra_forbidden":
            msg = f"'{path[-1]}' is not a schema key here: check its spelling (docs/schema.md)"
        elif err["type"] == "missing" and path and path[-1] == "type":
            msg = f"type is missing: give each prop a type ({', '.join(PROP_TYPES)})"
        raise SchemaError(f"{at(path)}: {'.'.join(path)}: {msg}") from None
    _check_names(schema, at)
    _check_traits(schema, at)
    if schema.traits:
        def where_at(name: str) -> str:
            line, col = src.expr_start(("traits", name, "where"))
            return f"{file}:{line}:{col}"

        traits = {n: t.model_copy(update={"at": where_at(n) if t.where else at(("traits", n))})
                  for n, t in schema.traits.items()}
        schema = schema.model_copy(update={"traits": traits})
    return schema


def _check_names(schema: EventSchema, at: Any) -> None:
    for name in schema.identifiers:
        path = ("identifiers", name)
        if not _NAME.fullmatch(name):
            raise SchemaError(f"{at(path)}: identifier type '{name}': write a-z, 0-9 and _ starting with a "
                              "letter, at most 40 characters")
        if name in BUILTIN_IDENTIFIERS:
            raise SchemaError(f"{at(path)}: '{name}' is a built-in identifier type: declare only new ones "
                              f"(built in: {', '.join(BUILTIN_IDENTIFIERS)})")
    for et in schema.events:
        if not _EVENT_TYPE.fullmatch(et):
            raise SchemaError(f"{at(('events', et))}: event type '{et}': write a-z, 0-9 and _ starting with a "
                              "letter, at most 64 characters (as events send it)")
    for et, name, _spec in schema.prop_checks():
        prop_path = ("common_props", name) if et == "*" else ("events", et, "props", name)
        if not _NAME.fullmatch(name):
            raise SchemaError(f"{at(prop_path)}: prop '{name}': write a-z, 0-9 and _ starting with a letter, at "
                              "most 40 characters")
        if name in BUILTIN_PROPS:
            raise SchemaError(f"{at(prop_path)}: props.{name} is read by the envelope itself (docs/semantics.md): "
                              f"do not declare it (built in: {', '.join(BUILTIN_PROPS)})")
        if et != "*" and name in schema.common_props:
            raise SchemaError(f"{at(prop_path)}: props.{name} is already a common prop: declare it once")


_NUMERIC = ("integer", "decimal")


def _check_traits(schema: EventSchema, at: Any) -> None:
    """Each trait: a valid name, an event type and prop that exist with a type its aggregate can use, a window
    within the kept days. (Its ``where`` is an expression: ``operators.traits`` compiles it when the job is built and
names the file and line kept in ``TraitSpec.at``.)"""
    for name, t in schema.traits.items():
        path = ("traits", name)
        if not _NAME.fullmatch(name):
            raise SchemaError(f"{at(path)}: trait '{name}': write a-z, 0-9 and _ starting with a letter, at most 40 "
                              "characters")
        if t.event != "*" and not _EVENT_TYPE.fullmatch(t.event):
            raise SchemaError(f"{at(path + ('event',))}: traits.{name}.event: '{t.event}' is not an event type name "
                              "(or \"*\" for every type)")
        if t.window != "lifetime":
            m = _WINDOW.fullmatch(t.window)
            minutes = int(m.group(1)) * {"m": 1, "h": 60, "d": 1440}[m.group(2)] if m else 0
            if not m or minutes > MAX_WINDOW_MINUTES:
                raise SchemaError(f"{at(path + ('window',))}: traits.{name}.window: '{t.window}': write lifetime or a "
                                  "whole number of minutes, hours or days (60m, 24h, 30d), at most 90d")
        if t.aggregate == "count":
            if t.prop is not None:
                raise SchemaError(f"{at(path + ('prop',))}: traits.{name}: count counts events: remove prop (or use "
                                  "distinct_count to count its values)")
        else:
            if t.prop is None:
                raise SchemaError(f"{at(path)}: traits.{name}: {t.aggregate} needs a prop: name one of the event's "
                                  f"props (or {', '.join(TRAIT_COLUMNS)})")
            kind = schema.prop_type(t.event, t.prop)
            if kind is None:
                raise SchemaError(f"{at(path + ('prop',))}: traits.{name}.prop: props.{t.prop} is not declared for "
                                  f"{'every event type (common_props)' if t.event == '*' else t.event}: declare it "
                                  f"first (or use {', '.join(TRAIT_COLUMNS)})")
            if t.aggregate in ("sum", "min", "max") and kind not in _NUMERIC:
                raise SchemaError(f"{at(path + ('prop',))}: traits.{name}: {t.aggregate} needs an integer or decimal "
                                  f"prop; props.{t.prop} is {kind}")
            if t.aggregate in ("distinct_count", "first", "last") and kind not in ("string", "integer"):
                raise SchemaError(f"{at(path + ('prop',))}: traits.{name}: {t.aggregate} reads a string or integer "
                                  f"prop; props.{t.prop} is {kind}")
