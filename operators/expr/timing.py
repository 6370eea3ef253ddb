"""A compiled node (``_C``: its closure, static kind and what it knows about time) and the timing
analysis behind ``Expr.next_change_ms``: monotonicity in ``now`` and the next time a value can change."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from operators.expr.limits import T_MAX
from operators.expr.values import _NUM_TYPES, _kind_of

Fn = Callable[[Mapping[str, Any], int], Any]
Cand = Callable[[Mapping[str, Any], int], "int | None"]


@dataclass(slots=True)
class _C:
    fn: Fn
    kind: str  # static kind: num | str | bool | list | map | null | any
    mono: int | None = 0  # 0: time-independent, +1/-1: monotone in now, None: time-dependent, unknown
    cand: Cand | None = None  # lower bound on the next time the value can change; None: never
    const: bool = False
    value: Any = None
    at_least: Callable[[Mapping[str, Any], int], int | None] | None = None  # integer-valued nondecreasing f: first t with f(t) >= k


def _lit(value: Any) -> _C:
    kind = "null" if value is None else _kind_of(value)
    return _C(lambda env, now: value, kind, 0, None, True, value)


def _min_cand(cands: list[Cand | None]) -> Cand | None:
    cs = [c for c in cands if c is not None]
    if not cs:
        return None
    if len(cs) == 1:
        return cs[0]

    def cand(env: Mapping[str, Any], t: int) -> int | None:
        best = None
        for c in cs:
            v = c(env, t)
            if v is not None and (best is None or v < best):
                best = v
        return best

    return cand


def _mono_add(a: int | None, b: int | None) -> int | None:
    if a is None or b is None:
        return None
    if a == 0:
        return b
    if b == 0 or a == b:
        return a
    return None


def _neg_mono(a: int | None) -> int | None:
    return None if a is None else -a


def _first_time(f: Fn, env: Mapping[str, Any], t: int, pred: Callable[[Any], bool]) -> int | None:
    """Earliest ``t' > t`` with ``pred(f(env, t'))``, for ``pred∘f`` monotone (false, then true)."""
    v = f(env, T_MAX)
    if v is None or not pred(v):
        return None
    lo, hi = t, T_MAX
    while hi - lo > 1:
        mid = (lo + hi) // 2
        v = f(env, mid)
        if v is not None and pred(v):
            hi = mid
        else:
            lo = mid
    return hi


def _cmp_cand(f: _C, c: _C) -> Cand:
    """Exact next time the order of a monotone ``f`` against a time-independent ``c`` changes."""
    fn, cf, direction, at_least = f.fn, c.fn, f.mono or 0, f.at_least

    def cand(env: Mapping[str, Any], t: int) -> int | None:
        try:
            return exact(env, t)
        except (ArithmeticError, ValueError):  # NaN operands: the comparison is false for ever
            return None

    def exact(env: Mapping[str, Any], t: int) -> int | None:
        cv: Any = cf(env, t)
        fv: Any = fn(env, t)
        if not (type(cv) in _NUM_TYPES and type(fv) in _NUM_TYPES) or cv != cv or fv != fv:  # noqa: PLR0124 (NaN)
            return None  # null, non-numbers or NaN: fixed while env is fixed
        closed_form = at_least if -T_MAX <= cv <= T_MAX else None
        if direction > 0:
            if fv < cv:
                if closed_form is not None:
                    return closed_form(env, math.ceil(cv))
                return _first_time(fn, env, t, lambda v: v >= cv)
            if fv == cv:
                if closed_form is not None:
                    return closed_form(env, math.floor(cv) + 1)
                return _first_time(fn, env, t, lambda v: v > cv)
            return None
        if fv > cv:
            return _first_time(fn, env, t, lambda v: v <= cv)
        if fv == cv:
            return _first_time(fn, env, t, lambda v: v < cv)
        return None

    return cand
