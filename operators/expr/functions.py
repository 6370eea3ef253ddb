"""The function registry (``days_since``, ``min``, ``coalesce``, ``contains``, ...): each entry
checks its arguments at compile time and builds the closure with its timing facts."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from operators.expr.limits import DAY_MS, HOUR_MS, MINUTE_MS, T_MAX
from operators.expr.timing import _C, _min_cand, _mono_add
from operators.expr.values import _COLL_TYPES, _NUM_TYPES, _a, _comparable, _member

if TYPE_CHECKING:
    from operators.expr.compiler import _Compiler
    from operators.expr.parser import _Node


def _time_arg(ts: Any) -> Any:
    """``ts`` if it is a number within ±T_MAX ms (NaN and infinities excluded), else None."""
    if type(ts) is int:
        return ts if -T_MAX <= ts <= T_MAX else None
    if type(ts) is Decimal or type(ts) is float:
        try:
            return ts if -T_MAX <= ts <= T_MAX else None
        except (ArithmeticError, ValueError):
            return None
    return None


def _time_since(unit: int) -> Callable[[_Compiler, _Node, list[_C]], _C]:
    def build(comp: _Compiler, node: _Node, args: list[_C]) -> _C:
        (a,) = args
        comp.require_kind(node.args[0], a, ("num",), f"{node.value}() takes a time in epoch milliseconds")
        af = a.fn

        def fn(env: Mapping[str, Any], now: int) -> Any:
            ts = af(env, now)
            t = type(ts)
            if t is int:
                return (now - ts) // unit if -T_MAX <= ts <= T_MAX else None
            if (t is Decimal or t is float) and _time_arg(ts) is not None:
                try:
                    return math.floor((now - ts) / unit)
                except (ArithmeticError, ValueError, OverflowError):
                    return None
            return None

        if a.mono != 0:
            return _C(fn, "num", None, _min_cand([a.cand, lambda env, t: t + 1]))

        def cand(env: Mapping[str, Any], t: int) -> int | None:
            ts = _time_arg(af(env, t))
            tt = type(ts)
            if ts is None:
                return None
            if tt is int:
                return ts + ((t - ts) // unit + 1) * unit
            if tt is Decimal or tt is float:
                try:
                    k = math.floor((t - ts) / unit)
                    return max(t + 1, math.floor(ts + (k + 1) * unit))
                except (ArithmeticError, ValueError, OverflowError):
                    return None
            return None

        def at_least(env: Mapping[str, Any], k: int) -> int | None:
            ts = _time_arg(af(env, 0))
            tt = type(ts)
            if ts is None:
                return None
            if tt is int:
                return ts + k * unit
            if tt is Decimal or tt is float:
                try:
                    return math.ceil(ts + k * unit)  # smallest integer t with t - ts >= k*unit
                except (ArithmeticError, ValueError, OverflowError):
                    return None
            return None

        return _C(fn, "num", 1, cand, at_least=at_least)

    return build


def _now(comp: _Compiler, node: _Node, args: list[_C]) -> _C:
    return _C(lambda env, now: now, "num", 1, lambda env, t: t + 1, at_least=lambda env, k: k)


def _minmax(pick_max: bool) -> Callable[[_Compiler, _Node, list[_C]], _C]:
    def build(comp: _Compiler, node: _Node, args: list[_C]) -> _C:
        kinds = {a.kind for a in args} - {"any", "null"}
        if len(kinds) > 1 or kinds - {"num", "str"}:
            raise comp.src.error(node.pos, f"{node.value}() compares numbers with numbers or strings with strings, got {' and '.join(_a(k) for k in sorted(kinds))}")
        fns = [a.fn for a in args]

        def fn(env: Mapping[str, Any], now: int) -> Any:
            try:
                return pick(env, now)
            except (ArithmeticError, ValueError):  # Decimal NaN operands
                return None

        def pick(env: Mapping[str, Any], now: int) -> Any:
            best = None
            for f in fns:
                v = f(env, now)
                if v is None:
                    continue
                if best is None:
                    if not (type(v) in _NUM_TYPES or type(v) is str):
                        return None
                    best = v
                elif not _comparable(best, v):
                    return None
                elif (v > best) if pick_max else (v < best):
                    best = v
            return best

        mono: int | None = 0
        for a in args:
            mono = _mono_add(mono, a.mono)
        kind = next(iter(kinds)) if kinds else "any"
        return _C(fn, kind, mono, _min_cand([a.cand for a in args]))

    return build


def _coalesce(comp: _Compiler, node: _Node, args: list[_C]) -> _C:
    fns = [a.fn for a in args]

    def fn(env: Mapping[str, Any], now: int) -> Any:
        for f in fns:
            v = f(env, now)
            if v is not None:
                return v
        return None

    kinds = {a.kind for a in args} - {"null"}
    kind = next(iter(kinds)) if len(kinds) == 1 else "any"
    mono = 0 if all(a.mono == 0 for a in args) else None
    return _C(fn, kind, mono, _min_cand([a.cand for a in args]))


def _one_arg(accepts: tuple[str, ...], what: str, apply: Callable[[Any], Any], kind: str) -> Callable[[_Compiler, _Node, list[_C]], _C]:
    """A one-argument function: ``apply(v)`` for an accepted value, else (and on NaN errors) None."""

    def build(comp: _Compiler, node: _Node, args: list[_C]) -> _C:
        (a,) = args
        comp.require_kind(node.args[0], a, accepts, f"{node.value}() takes {what}")
        af = a.fn

        def fn(env: Mapping[str, Any], now: int) -> Any:
            try:
                return apply(af(env, now))
            except (ArithmeticError, ValueError):
                return None

        return _C(fn, kind, 0 if a.mono == 0 else None, a.cand)

    return build


def _abs_value(v: Any) -> Any:
    return abs(v) if type(v) in _NUM_TYPES else None


def _len_value(v: Any) -> Any:
    return len(v) if type(v) is str or type(v) in _COLL_TYPES or isinstance(v, Mapping) else None


def _contains(comp: _Compiler, node: _Node, args: list[_C]) -> _C:
    h, x = args
    comp.require_kind(node.args[0], h, ("str", "list", "map"), "contains() takes a string or a list/set first")
    if h.kind == "str":
        comp.require_kind(node.args[1], x, ("str",), "contains(text, part) looks for a string in a string")
    hf, xf = h.fn, x.fn

    def fn(env: Mapping[str, Any], now: int) -> bool:
        return _member(xf(env, now), hf(env, now)) is True

    return _C(fn, "bool", 0 if h.mono == 0 and x.mono == 0 else None, _min_cand([h.cand, x.cand]))


def _affix(start: bool) -> Callable[[_Compiler, _Node, list[_C]], _C]:
    def build(comp: _Compiler, node: _Node, args: list[_C]) -> _C:
        s, p = args
        comp.require_kind(node.args[0], s, ("str",), f"{node.value}() takes a string")
        comp.require_kind(node.args[1], p, ("str",), f"{node.value}() takes a string to look for")
        sf, pf = s.fn, p.fn

        def fn(env: Mapping[str, Any], now: int) -> bool:
            a, b = sf(env, now), pf(env, now)
            if type(a) is not str or type(b) is not str:
                return False
            return a.startswith(b) if start else a.endswith(b)

        return _C(fn, "bool", 0 if s.mono == 0 and p.mono == 0 else None, _min_cand([s.cand, p.cand]))

    return build


@dataclass(frozen=True)
class _FnSpec:
    min_args: int
    max_args: int | None
    build: Callable[[_Compiler, _Node, list[_C]], _C]
    signature: str


#: The function registry: name → signature (documented in docs/expressions.md).
_FUNCTIONS: dict[str, _FnSpec] = {
    "days_since": _FnSpec(1, 1, _time_since(DAY_MS), "days_since(ts_ms)"),
    "hours_since": _FnSpec(1, 1, _time_since(HOUR_MS), "hours_since(ts_ms)"),
    "minutes_since": _FnSpec(1, 1, _time_since(MINUTE_MS), "minutes_since(ts_ms)"),
    "now": _FnSpec(0, 0, _now, "now()"),
    "min": _FnSpec(1, None, _minmax(False), "min(a, b, ...)"),
    "max": _FnSpec(1, None, _minmax(True), "max(a, b, ...)"),
    "abs": _FnSpec(1, 1, _one_arg(("num",), "a number", _abs_value, "num"), "abs(x)"),
    "coalesce": _FnSpec(1, None, _coalesce, "coalesce(a, b, ...)"),
    "len": _FnSpec(1, 1, _one_arg(("str", "list", "map"), "a string, a list/set or a mapping", _len_value, "num"), "len(x)"),
    "lower": _FnSpec(1, 1, _one_arg(("str",), "a string", lambda v: v.lower() if type(v) is str else None, "str"), "lower(s)"),
    "upper": _FnSpec(1, 1, _one_arg(("str",), "a string", lambda v: v.upper() if type(v) is str else None, "str"), "upper(s)"),
    "contains": _FnSpec(2, 2, _contains, "contains(haystack, needle)"),
    "startswith": _FnSpec(2, 2, _affix(True), "startswith(s, prefix)"),
    "endswith": _FnSpec(2, 2, _affix(False), "endswith(s, suffix)"),
}
#: Public view of the registry: function name → signature.
FUNCTIONS: Mapping[str, str] = {k: v.signature for k, v in _FUNCTIONS.items()}
_TIME_FUNCTIONS = frozenset({"days_since", "hours_since", "minutes_since", "now"})
