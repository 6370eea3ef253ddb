"""The runtime values and their semantics: kinds, null-propagating arithmetic (exact ints, 34-digit
decimals, floats), equality, ordering and membership that never raise on data."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Context, Decimal
from typing import Any

_DEC = Context(prec=34, rounding=ROUND_HALF_EVEN, Emax=999_999, Emin=-999_999)
_NUM_TYPES = frozenset({int, float, Decimal})
_COLL_TYPES = frozenset({list, tuple, set, frozenset})


def _is_num(v: Any) -> bool:
    return type(v) in _NUM_TYPES


def _kind_of(v: Any) -> str:
    t = type(v)
    if t in _NUM_TYPES:
        return "num"
    if t is str:
        return "str"
    if t is bool:
        return "bool"
    if v is None:
        return "null"
    if t in _COLL_TYPES:
        return "list"
    if isinstance(v, Mapping):
        return "map"
    return "opaque"


def _dec_floor_mod(a: Decimal, b: Decimal) -> Decimal:
    q = _DEC.divide(a, b).to_integral_value(rounding=ROUND_FLOOR)
    return _DEC.subtract(a, _DEC.multiply(b, q))


def _arith(
    int_op: Callable[[int, int], Any] | None,
    float_op: Callable[[float, float], float],
    dec_op: Callable[[Decimal, Decimal], Decimal],
    *,
    zero_divisor_is_null: bool = False,
    joins_strings: bool = False,
) -> Callable[[Any, Any], Any]:
    """A null-propagating binary operator: ints exact, Decimals in a 34-digit context, floats if any.

    Non-numbers, division by zero (when ``zero_divisor_is_null``), overflow and NaN give None.
    """

    def op(a: Any, b: Any) -> Any:
        ta, tb = type(a), type(b)
        if ta in _NUM_TYPES and tb in _NUM_TYPES:
            try:
                if zero_divisor_is_null and not b:
                    return None
                if ta is int and tb is int and int_op is not None:
                    return int_op(a, b)
                if ta is float or tb is float:
                    return float_op(float(a), float(b))
                return dec_op(Decimal(a), Decimal(b))
            except (ArithmeticError, ValueError):  # overflow, NaN operations
                return None
        if joins_strings and ta is str and tb is str:
            return a + b
        return None

    return op


_add = _arith(operator.add, operator.add, _DEC.add, joins_strings=True)
_sub = _arith(operator.sub, operator.sub, _DEC.subtract)
_mul = _arith(operator.mul, operator.mul, _DEC.multiply)
_div = _arith(None, operator.truediv, _DEC.divide, zero_divisor_is_null=True)  # int / int is exact Decimal
_mod = _arith(operator.mod, operator.mod, _dec_floor_mod, zero_divisor_is_null=True)


def _neg(a: Any) -> Any:
    if type(a) in _NUM_TYPES:
        try:
            return -a
        except (ArithmeticError, ValueError):
            return None
    return None


_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_ARITH = {"+": _add, "-": _sub, "*": _mul, "/": _div, "%": _mod}


def _comparable(a: Any, b: Any) -> bool:
    ta, tb = type(a), type(b)
    return (ta in _NUM_TYPES and tb in _NUM_TYPES) or (ta is str and tb is str)


def _eq(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    ka, kb = _kind_of(a), _kind_of(b)
    if ka != kb or ka == "opaque":
        return False
    if ka == "list" and type(a) is not type(b):
        if isinstance(a, (set, frozenset)) or isinstance(b, (set, frozenset)):
            return set(a) == set(b) if _hashable_all(a) and _hashable_all(b) else False
        return list(a) == list(b)
    return bool(a == b)


def _hashable_all(c: Any) -> bool:
    try:
        set(c)
    except TypeError:
        return False
    return True


def _ne(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    ka, kb = _kind_of(a), _kind_of(b)
    if ka != kb or ka == "opaque":
        return False
    return not _eq(a, b)


def _member(x: Any, coll: Any) -> bool | None:
    """``x in coll``: True/False, or None when the test is not defined (null or wrong kinds)."""
    try:
        return _member_unguarded(x, coll)
    except (ArithmeticError, ValueError):  # Decimal sNaN
        return None


def _member_unguarded(x: Any, coll: Any) -> bool | None:
    if x is None or coll is None:
        return None
    tc = type(coll)
    if tc is str:
        return (x in coll) if type(x) is str else None
    if not (tc in _COLL_TYPES or isinstance(coll, Mapping)):
        return None
    tx = type(x)
    if tx is str:
        try:
            return x in coll
        except TypeError:
            return False
    if tx in _NUM_TYPES:
        try:
            hit = x in coll
        except TypeError:
            return False
        if hit and (x == 0 or x == 1):  # True == 1 and False == 0 in Python: a bool is not a number here
            return any(type(e) in _NUM_TYPES and e == x for e in coll)
        return hit
    return any(_eq(x, e) for e in coll)


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    ka, kb = _kind_of(a), _kind_of(b)
    return ka == kb and a == b


_KIND_WORDS = {"num": "a number", "str": "a string", "bool": "a boolean", "list": "a list", "map": "a mapping",
               "null": "null", "any": "a value", "opaque": "a value"}


def _a(kind: str) -> str:
    return _KIND_WORDS.get(kind, kind)
