"""Computed traits (pure): user-declared profile metrics, kept exactly under identity merges and splits.

A trait (``config/schema.yaml`` ``traits:``, ``config.schema.TraitSpec``, docs/schema.md) is ``count | sum |
min | max | distinct_count | first | last`` of the events of one type that pass a filter over their props,
of one prop, over ``lifetime`` or a window of minutes, hours or days. How the job keeps it exact, like the
profile (docs/semantics.md "Computed traits"):

* **Anchor partials, in SQL** (:func:`anchor_traits_statement`): per (anchor, minute, trait, ``dv``) the
  partial ``(n, sum, lo, hi, first, last)`` of the anchor's matching events. ``first``/``last`` are the
  sortable text ``"<ts, 15 digits>|<event_id>|<value>"`` (MIN / MAX pick the earliest / latest event, ties
  by event id); ``dv`` is the value for ``distinct_count`` ('' otherwise). ONE row shape and ONE plan for
  every set of traits: adding a trait adds rows and ``CASE`` branches, never columns or operators.
* **The same re-key as the profile** (:func:`person_traits_statement`): the partials join the identity map
  and are re-aggregated per person, so a merge or split retracts an anchor's partials from the old person
  and adds them to the new one (what ``zt_person_minutes`` does for the profile buckets).
* **The person operator** (:class:`TraitBuckets`, in ``operators.person``) keeps each person's partials of
  the kept days (``operators.profile.KEEP_DAYS``; older ones fold into a base, as the profile's rows do) and
  computes the values as of the profile's ``last_seen`` — the time the profile's own windows are as of —
  after every bundle that changed a partial or ``last_seen``; a changed value is written to the store.

Filters (``where``) are compiled to SQL by :func:`filter_sql` only where the SQL means exactly what the
expression language means (a subset: declared string / integer / decimal props, literals, ``== != < <= > >=``
(strings: ``== !=`` only, whose order is the same everywhere), ``in`` / ``not in`` a literal list,
``is [not] null``, ``and or not``; every comparison made two-valued as the language's are). The same
expression evaluated in Python (:meth:`Trait.matches`, the oracle's) sees the props with numbers as exact
decimals, as the SQL's DECIMAL does; tests/unit/test_traits.py checks both agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import orjson

from config.schema import TRAIT_COLUMNS, EventSchema, TraitSpec
from operators.expr import Expr, ExprError, compile_expr
from operators.expr.errors import _Text
from operators.expr.parser import _Node, _Parser
from operators.profile import DAY_MS, KEEP_DAYS, MINUTE_MS

__all__ = ["SCALE", "Partial", "Trait", "TraitBuckets", "TraitError", "TraitValue", "anchor_traits_statement", "compile_traits",
           "event_partial", "filter_sql", "person_traits_statement", "trait_value"]

#: Decimal places a trait's sum / min / max keeps (the SQL's ``DECIMAL(38, 6)``; values are rounded half up).
SCALE = Decimal("0.000001")
_DEC = "DECIMAL(38, 6)"
_FILTER_DEC = "DECIMAL(38, 18)"
_FILTER_SCALE = Decimal("1e-18")
_TS_DIGITS = 15


class TraitError(ValueError):
    """A trait the job cannot compute exactly: the message names the file, line and what to write."""


#: One (minute, dv) partial: count, sum, min, max (Decimal or None), first, last ("ts|event_id|value" or None).
Partial = tuple[int, Decimal | None, Decimal | None, Decimal | None, str | None, str | None]


@dataclass(frozen=True)
class Trait:
    """A compiled trait: its spec, the SQL of its filter and value, and the Python evaluation of the filter."""

    name: str
    spec: TraitSpec
    #: the prop's type (``string``, ``integer``, ``decimal``), None for ``count``
    kind: str | None
    where_sql: str
    value_sql: str | None
    expr: Expr | None = field(compare=False, default=None)
    #: the declared type of each prop the filter reads (``string``, ``integer``, ``decimal``)
    filter_types: Mapping[str, str] = field(compare=False, default_factory=dict)

    def matches(self, event_type: str, props: Mapping[str, Any]) -> bool:
        """Whether an event counts for this trait (``props``: :func:`exact_props` of the event's JSON). The props
        the filter reads are taken as the SQL reads them: a number (also one sent as text, as the schema's
        types allow) as a decimal of 18 places (``DECIMAL(38, 18)``, rounded half up), an integer sent for a
        text prop as its digits."""
        if self.spec.event != "*" and event_type != self.spec.event:
            return False
        if self.expr is None:
            return True
        env: dict[str, Any] = {}
        for name, kind in self.filter_types.items():
            v = props.get(name)
            if v is None or isinstance(v, bool):
                env[name] = v
            elif kind == "string":
                env[name] = str(v) if isinstance(v, int) else v
            else:
                try:
                    env[name] = Decimal(str(v)).quantize(_FILTER_SCALE, rounding=ROUND_HALF_UP) \
                        if isinstance(v, (str, int, Decimal)) else v
                except ArithmeticError:
                    env[name] = None
        return self.expr.evaluate({"props": env}, 0) is True

    def prop_value(self, props: Mapping[str, Any], columns: Mapping[str, Any]) -> Any:
        """The value the trait aggregates for an event (None: the event lacks it and does not count)."""
        p = self.spec.prop
        if p is None:
            return True
        v = columns.get(p) if p in TRAIT_COLUMNS else props.get(p)
        if v is None or isinstance(v, (dict, list, bool)):
            return None
        if self.spec.aggregate in ("sum", "min", "max"):
            try:
                return Decimal(str(v)).quantize(SCALE, rounding=ROUND_HALF_UP)
            except ArithmeticError:
                return None
        return v if isinstance(v, str) else str(v)


def exact_props(props_json: str | None) -> dict[str, Any]:
    """The props of an event's compact JSON with every number as an exact ``Decimal`` (an integer as ``int``):
    what the SQL reads with ``JSON_VALUE`` and ``DECIMAL``, so that the filter means the same on both sides."""
    if not props_json:
        return {}
    try:
        d = orjson.loads(props_json)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(d, dict):
        return {}
    import json

    # orjson reads numbers as float: read them again, exactly (only when there is a float at all)
    if any(isinstance(v, float) for v in d.values()):
        d = json.loads(props_json, parse_float=Decimal)
    return d


# ---------------------------------------------------------------------------------------------- compile


def compile_traits(schema: EventSchema) -> tuple[Trait, ...]:
    """Every declared trait of ``schema``, compiled; :class:`TraitError` (file:line:column) when a filter is
    not one the job can evaluate exactly."""
    return tuple(_compile(name, spec, schema) for name, spec in schema.traits.items())


def _compile(name: str, spec: TraitSpec, schema: EventSchema) -> Trait:
    kind = schema.prop_type(spec.event, spec.prop) if spec.prop else None
    where_sql, expr, types = "TRUE", None, {}
    if spec.where:
        source, line, column = _origin(spec.at)
        try:
            expr = compile_expr(spec.where, source=source, line=line, column=column, names={"props"})
            tree = _Parser(_Text(spec.where, source, line, column)).parse()
            where_sql = filter_sql(tree, lambda p: schema.prop_type(spec.event, p),
                                   _Text(spec.where, source, line, column))
            types = {p.split(".", 1)[1]: schema.prop_type(spec.event, p.split(".", 1)[1]) or "string"
                     for p in expr.paths if p.startswith("props.")}
        except ExprError as e:
            raise TraitError(f"traits.{name}.where: {e}") from None
    value_sql = None
    if spec.prop is not None:
        col = {"ts": "ts_ms"}.get(spec.prop, spec.prop) if spec.prop in TRAIT_COLUMNS \
            else f"JSON_VALUE(props, '$.{spec.prop}')"
        if spec.aggregate in ("sum", "min", "max"):
            col = f"CAST({col} AS {_DEC})"
        value_sql = col
    return Trait(name, spec, kind, where_sql, value_sql, expr, types)


def _origin(at: str) -> tuple[str, int, int]:
    parts = at.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return parts[0], int(parts[1]), int(parts[2])
    return at or "<trait>", 1, 1


def _sql_text(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def filter_sql(node: _Node, prop_type: Any, src: _Text) -> str:
    """The SQL of a filter's syntax tree (see the module docstring for the subset); ``ExprError`` at the
    first part outside it. ``prop_type(name)``: the declared type of ``props.<name>`` (None: undeclared)."""

    def operand(n: _Node) -> tuple[str, str]:
        """(sql, kind) of a value: ``str``, ``num`` or ``null``."""
        if n.kind == "name":
            path = n.value
            if len(path) != 2 or path[0] != "props" or path[1] in TRAIT_COLUMNS:
                raise src.error(n.pos, "a trait filter reads props.<declared prop> only")
            t = prop_type(path[1])
            if t is None:
                raise src.error(n.pos, f"props.{path[1]} is not declared for this event type: declare it first")
            ref = f"JSON_VALUE(props, '$.{path[1]}')"
            if t == "string":
                return ref, "str"
            if t in ("integer", "decimal"):
                return f"CAST({ref} AS {_FILTER_DEC})", "num"
            raise src.error(n.pos, f"props.{path[1]} is {t}: a trait filter reads string, integer and decimal props")
        if n.kind == "lit":
            v = n.value
            if isinstance(v, str):
                return _sql_text(v), "str"
            if isinstance(v, (int, Decimal)) and not isinstance(v, bool):
                return str(v), "num"
            raise src.error(n.pos, "a trait filter compares with text or number literals")
        if n.kind == "unary" and n.args[0].kind == "lit" and isinstance(n.args[0].value, (int, Decimal)):
            return (f"-{n.args[0].value}" if n.value == "-" else str(n.args[0].value)), "num"
        raise src.error(n.pos, "not supported in a trait filter (props, literals, comparisons, in, is null, "
                               "and, or, not): the job evaluates filters in SQL, where only these mean exactly the "
                               "same as in rules")

    def prop_operand(n: _Node) -> tuple[str, str]:
        sql, kind = operand(n)
        if n.kind != "name":
            raise src.error(n.pos, "write the prop first: props.<name> <op> <literal>")
        return sql, kind

    def cond(n: _Node) -> str:
        k = n.kind
        if k in ("and", "or"):
            return "(" + f" {k.upper()} ".join(cond(a) for a in n.args) + ")"
        if k == "not":
            return f"(NOT {cond(n.args[0])})"
        if k == "isnull":
            sql, _ = prop_operand(n.args[0])
            return f"({sql} IS {'NOT ' if n.value else ''}NULL)"
        if k == "cmp":
            left, lk = prop_operand(n.args[0])
            right, rk = operand(n.args[1])
            if n.args[1].kind == "name":
                raise src.error(n.args[1].pos, "compare a prop with a literal")
            if lk != rk:
                raise src.error(n.pos, f"this compares a {lk} prop with a {rk} literal: it is never true")
            if lk == "str" and n.value not in ("==", "!="):
                raise src.error(n.pos, "text props compare with == and != only in a trait filter")
            op = {"==": "=", "!=": "<>"}.get(n.value, n.value)
            return f"COALESCE({left} {op} {right}, FALSE)"
        if k == "in":
            left, lk = prop_operand(n.args[0])
            lst = n.args[1]
            if lst.kind != "list" or not lst.args:
                raise src.error(lst.pos, "'in' takes a non-empty literal list in a trait filter: in ['a', 'b']")
            items = [operand(a) for a in lst.args]
            if any(ik != lk or a.kind == "name" for (_, ik), a in zip(items, lst.args)):
                raise src.error(lst.pos, f"every item of the list must be a {lk} literal")
            return f"COALESCE({left} {'NOT ' if n.value else ''}IN ({', '.join(s for s, _ in items)}), FALSE)"
        if k == "lit" and isinstance(n.value, bool):
            return "TRUE" if n.value else "FALSE"
        raise src.error(n.pos, "a trait filter must be a condition (a comparison, in, is null, and, or, not)")

    return cond(node)


# ------------------------------------------------------------------------------------------------ SQL


def anchor_traits_statement(traits: Iterable[Trait], source: str = "zt_unique", view: str = "zt_anchor_traits") -> str:
    """``zt_anchor_traits``: per (anchor, mb, trait, dv) the partial of the anchor's matching events (one row
    shape for every trait; see the module docstring).

    Every event is paired with every trait name (``CROSS JOIN UNNEST`` of a constant array) and each trait's
    condition and value are ``CASE`` branches: the plan has the same operators whatever the number of traits,
    so adding a trait changes expressions and rows, never the planner's node numbers (the SQL operators' uids,
    ``pipelines.events.sql_uid_options``) — a savepoint restores every operator's state into the new plan
    (``bench/results/trait-uids.json``)."""
    ok, vs, fls, dvs = [], [], [], []
    names = []
    for t in traits:
        a = t.spec.aggregate
        name = _sql_text(t.name)
        names.append(f"CAST({name} AS STRING)")  # not CHAR(n): literals of different lengths would be padded
        conds = [t.where_sql] if t.where_sql != "TRUE" else []
        if t.spec.event != "*":
            conds.insert(0, f"event_type = {_sql_text(t.spec.event)}")
        if t.value_sql is not None:
            conds.append(f"{t.value_sql} IS NOT NULL")
        ok.append(f"WHEN {name} THEN {' AND '.join(conds) if conds else 'TRUE'}")
        if a in ("sum", "min", "max"):
            vs.append(f"WHEN {name} THEN {t.value_sql}")
        if a in ("first", "last"):
            fls.append(f"WHEN {name} THEN CONCAT(LPAD(CAST(ts_ms AS STRING), {_TS_DIGITS}, '0'), '|', event_id, '|', "
                       f"CAST({t.value_sql} AS STRING))")
        if a == "distinct_count":
            dvs.append(f"WHEN {name} THEN CAST({t.value_sql} AS STRING)")

    def case(branches: list[str], otherwise: str) -> str:
        if not branches:
            return otherwise
        return "CASE t.trait\n      " + "\n      ".join(branches) + f"\n      ELSE {otherwise} END"

    return f"""
CREATE TEMPORARY VIEW {view} AS
SELECT person AS anchor, mb, trait, dv, COUNT(*) AS n, SUM(v) AS s, MIN(v) AS lo, MAX(v) AS hi, MIN(fl) AS fst,
       MAX(fl) AS lst
FROM (
  SELECT person, ts_ms / 60000 AS mb, t.trait AS trait,
    {case(dvs, "''")} AS dv,
    CAST({case(vs, f"CAST(NULL AS {_DEC})")} AS {_DEC}) AS v,
    {case(fls, "CAST(NULL AS STRING)")} AS fl,
    {case(ok, "FALSE")} AS ok
  FROM {source} CROSS JOIN UNNEST(ARRAY[{", ".join(names)}]) AS t(trait))
WHERE ok AND person IS NOT NULL
GROUP BY person, mb, trait, dv"""


def person_traits_statement(anchors: str = "zt_anchor_traits", view: str = "zt_person_traits") -> str:
    """``zt_person_traits``: the anchor partials re-aggregated per person over ``zt_id_map``, as
    ``pipelines.events.person_minutes_statement`` does the profile buckets (a merge or split moves them)."""
    return f"""
CREATE TEMPORARY VIEW {view} AS
SELECT m.pid AS person, a.mb, a.trait, a.dv, SUM(a.n) AS n, SUM(a.s) AS s, MIN(a.lo) AS lo, MAX(a.hi) AS hi,
       MIN(a.fst) AS fst, MAX(a.lst) AS lst
FROM {anchors} AS a JOIN zt_id_map AS m ON a.anchor = m.identifier
GROUP BY m.pid, a.mb, a.trait, a.dv"""


# ------------------------------------------------------------------------------------------ the values


def event_partial(t: Trait, ts: int, event_id: str, value: Any) -> Partial:
    """One event's partial (the reference of the SQL's per-event row; ``value`` from :meth:`Trait.prop_value`)."""
    a = t.spec.aggregate
    num = value if a in ("sum", "min", "max") else None
    fl = f"{ts:0{_TS_DIGITS}d}|{event_id}|{value}" if a in ("first", "last") else None
    return (1, num, num, num, fl, fl)


def merge(a: Partial | None, b: Partial) -> Partial:
    """Two partials as one (what the SQL's SUM / MIN / MAX do)."""
    if a is None:
        return b

    def lo(x: Any, y: Any) -> Any:
        return y if x is None else x if y is None else min(x, y)

    def hi(x: Any, y: Any) -> Any:
        return y if x is None else x if y is None else max(x, y)

    s = b[1] if a[1] is None else a[1] if b[1] is None else a[1] + b[1]
    return (a[0] + b[0], s, lo(a[2], b[2]), hi(a[3], b[3]), lo(a[4], b[4]), hi(a[5], b[5]))


def _fmt(t: Trait, v: Decimal | None) -> Any:
    if v is None:
        return None
    if t.spec.prop == "amount":
        return str(v.quantize(Decimal("0.01")))
    if t.kind == "integer" and v == v.to_integral_value():
        return int(v)
    return format(v.normalize(), "f") if v else "0"


def _in_window(t: Trait, minute: int, as_of: int) -> bool:
    w = t.spec.window_spec()
    if w is None:
        return True
    unit, n = w
    div = {"m": 1, "h": 60, "d": 1440}[unit]
    end = as_of // MINUTE_MS // div
    return end - n < minute // div <= end


def trait_value(t: Trait, partials: Iterable[tuple[int, str, Partial]], as_of: int) -> Any:
    """The trait's value as of ``as_of`` from ``(minute, dv, partial)`` (a minute of ``-1``: folded, counts for
    lifetime only): count / distinct_count → int, sum / min / max → number (integer props), decimal text (``amount``
    with 2 places), first / last → the value's text; None when no event counts (0 for count, sum, distinct)."""
    a = t.spec.aggregate
    acc: Partial | None = None
    values: set[str] = set()
    lifetime = t.spec.window == "lifetime"
    for minute, dv, p in partials:
        if p[0] <= 0 or not (lifetime or (minute >= 0 and _in_window(t, minute, as_of))):
            continue
        acc = merge(acc, p)
        if a == "distinct_count":
            values.add(dv)
    if a == "count":
        return acc[0] if acc else 0
    if a == "distinct_count":
        return len(values)
    if a == "sum":
        return _fmt(t, acc[1] if acc else Decimal(0))
    if acc is None:
        return None
    if a in ("min", "max"):
        return _fmt(t, acc[2] if a == "min" else acc[3])
    fl = acc[4] if a == "first" else acc[5]
    return fl.split("|", 2)[2] if fl else None


@dataclass(frozen=True, slots=True)
class TraitValue:
    """A trait's new value for a person (None: it has none any more), as of the profile's ``last_seen``."""

    person: str
    trait: str
    value: Any
    ts_ms: int


def row_partial(r: list[Any]) -> Partial:
    """The partial of a person row of kind ``x`` (``operators.person``: ``n2`` count, ``s2`` sum, ``s5``
    ``"lo,hi"``, ``s6`` / ``s7`` first / last)."""
    lohi = r[14]
    lo = hi = None
    if lohi:
        a, _, b = lohi.partition(",")
        lo, hi = Decimal(a), Decimal(b)
    return (r[4] or 0, Decimal(r[8]) if r[8] is not None else None, lo, hi, r[15], r[16])


@dataclass(slots=True)
class TraitBuckets:
    """One person's trait partials (the operator's state, in ``person-v1``): ``rows`` trait → (minute, dv) →
    partial for the kept days; ``base`` trait → dv → the folded partials (lifetime traits only need them);
    ``out`` the values last written (a value is written again only when it changed)."""

    rows: dict[str, dict[tuple[int, str], Partial]] = field(default_factory=dict)
    base: dict[str, dict[str, Partial]] = field(default_factory=dict)
    out: dict[str, Any] = field(default_factory=dict)

    def apply(self, trait: str, minute: int, dv: str, new: Partial | None, last_seen: int) -> bool:
        """Set (``new``) or delete (None) one partial. Ignored (False) when the minute is before the kept days
        as of ``last_seen`` and not kept (the profile's rule, ``operators.profile.Profile.apply``)."""
        rows = self.rows.setdefault(trait, {})
        key = (minute, dv)
        if minute // 1440 < last_seen // DAY_MS - KEEP_DAYS + 1 and key not in rows:
            return False
        if new is None or new[0] <= 0:
            return rows.pop(key, None) is not None
        rows[key] = new
        return True

    def fold(self, last_seen: int) -> None:
        """Partials before the kept days as of ``last_seen`` into ``base`` (once per day of event time)."""
        floor = (last_seen // DAY_MS - KEEP_DAYS + 1) * 1440
        for trait, rows in self.rows.items():
            old = [k for k in rows if k[0] < floor]
            if old:
                base = self.base.setdefault(trait, {})
                for k in old:
                    base[k[1]] = merge(base.get(k[1]), rows.pop(k))

    def values(self, traits: Iterable[Trait], as_of: int) -> dict[str, Any]:
        out = {}
        for t in traits:
            rows = self.rows.get(t.name, {})
            items = [(m, dv, p) for (m, dv), p in rows.items()]
            items += [(-1, dv, p) for dv, p in self.base.get(t.name, {}).items()]
            out[t.name] = trait_value(t, items, as_of)
        return out

    def is_empty(self) -> bool:
        return not any(self.rows.values()) and not any(self.base.values()) and not self.out

    # -- codec (state.person)

    def to_json(self) -> list[Any]:
        def enc(p: Partial) -> list[Any]:
            return [p[0], *(None if x is None else str(x) for x in p[1:4]), p[4], p[5]]

        return [{t: [[m, dv, *enc(p)] for (m, dv), p in rows.items()] for t, rows in self.rows.items() if rows},
                {t: [[dv, *enc(p)] for dv, p in b.items()] for t, b in self.base.items() if b}, self.out]

    @classmethod
    def from_json(cls, d: list[Any]) -> TraitBuckets:
        def dec(r: list[Any]) -> Partial:
            return (r[0], *(None if x is None else Decimal(x) for x in r[1:4]), r[4], r[5])  # type: ignore[return-value]

        rows, base, out = d
        return cls({t: {(r[0], r[1]): dec(r[2:]) for r in rs} for t, rs in rows.items()},
                   {t: {r[0]: dec(r[1:]) for r in rs} for t, rs in base.items()}, dict(out))
