"""The compiler: a syntax tree to nested closures with type-specialised fast paths, constant
folding, compile-time kind checks and the timing facts of every node."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Mapping
from typing import Any

from operators.expr.errors import _Text
from operators.expr.functions import _FUNCTIONS, _TIME_FUNCTIONS, FUNCTIONS
from operators.expr.limits import KINDS
from operators.expr.parser import _Node
from operators.expr.timing import _C, Cand, Fn, _cmp_cand, _lit, _min_cand, _mono_add, _neg_mono
from operators.expr.values import (
    _ARITH,
    _NUM_TYPES,
    _ORDER,
    _a,
    _comparable,
    _eq,
    _kind_of,
    _member,
    _ne,
    _neg,
)


def _num_order(order: Callable[[Any, Any], Any], v: Any, rv: Any) -> bool:
    """``order(v, rv)`` for a number ``v``; False for anything else and for NaN operands."""
    if type(v) not in _NUM_TYPES:
        return False
    try:
        return bool(order(v, rv))
    except (ArithmeticError, ValueError):
        return False


def _fused_cmp(op: str, name: _Node, r: _C) -> Fn | None:
    """``name op constant`` in one closure (the most common condition shape; saves a call per test).

    Same semantics as the general comparison: null, other kinds and NaN compare false.
    """
    path: tuple[str, ...] = name.value
    if len(path) > 2 or not r.const:
        return None
    rv = r.value
    root = path[0]
    key = path[1] if len(path) == 2 else None
    if type(rv) is str and op in ("==", "!="):
        want_equal = op == "=="
        if key is None:
            return lambda env, now: type(v := env.get(root)) is str and (v == rv) is want_equal

        def str_cmp(env: Mapping[str, Any], now: int) -> bool:
            m = env.get(root)
            if type(m) is dict or isinstance(m, Mapping):
                v = m.get(key)
                return type(v) is str and (v == rv) is want_equal
            return False

        return str_cmp
    if type(rv) in _NUM_TYPES and op in _ORDER:
        order = _ORDER[op]

        def num_cmp(env: Mapping[str, Any], now: int) -> bool:
            if key is None:
                v = env.get(root)
            else:
                m = env.get(root)
                if not (type(m) is dict or isinstance(m, Mapping)):
                    return False
                v = m.get(key)
            return _num_order(order, v, rv)

        return num_cmp
    return None


def _name_fn(path: tuple[str, ...]) -> Fn:
    root = path[0]
    if len(path) == 1:
        return lambda env, now: env.get(root)
    if len(path) == 2:
        k1 = path[1]

        def fn2(env: Mapping[str, Any], now: int) -> Any:
            v = env.get(root)
            if type(v) is dict or isinstance(v, Mapping):
                return v.get(k1)
            return None

        return fn2
    rest = path[1:]

    def fnn(env: Mapping[str, Any], now: int) -> Any:
        v = env.get(root)
        for k in rest:
            if type(v) is dict or isinstance(v, Mapping):
                v = v.get(k)
            else:
                return None
        return v

    return fnn


class _Compiler:
    def __init__(self, src: _Text, names: Collection[str] | Mapping[str, str] | None) -> None:
        self.src = src
        self.allowed: frozenset[str] | None = None
        self.kinds: dict[str, str] = {}
        if names is not None:
            if isinstance(names, str):
                raise TypeError("names must be a collection of names, not a single string")
            self.allowed = frozenset(names)
            if isinstance(names, Mapping):
                for k, v in names.items():
                    if v not in KINDS:
                        raise ValueError(f"names[{k!r}] = {v!r}: kind must be one of {sorted(KINDS)}")
                    self.kinds[k] = v
            self.prefixes = frozenset(".".join(n.split(".")[:i]) for n in self.allowed for i in range(1, n.count(".") + 1))
        self.roots: set[str] = set()
        self.paths: set[str] = set()

    # -- helpers

    def require_kind(self, node: _Node, c: _C, kinds: tuple[str, ...], message: str) -> None:
        if c.kind in ("any",) or c.kind in kinds:
            return
        raise self.src.error(node.pos, f"{message}, got {_a(c.kind)}")

    def fold(self, c: _C, parts: list[_C]) -> _C:
        if all(p.const for p in parts) and c.mono == 0 and c.cand is None:
            return _lit(c.fn({}, 0))
        return c

    # -- nodes

    def compile(self, node: _Node) -> _C:
        method = getattr(self, "c_" + node.kind)
        return method(node)

    def c_lit(self, node: _Node) -> _C:
        return _lit(node.value)

    def c_list(self, node: _Node) -> _C:
        items = [self.compile(a) for a in node.args]
        for a, c in zip(node.args, items):
            if c.kind == "null":
                raise self.src.error(a.pos, "null inside a list never matches 'in' (comparisons with null are false); remove it")
        fns = [c.fn for c in items]
        c = _C(lambda env, now: [f(env, now) for f in fns], "list", 0 if all(i.mono == 0 for i in items) else None,
               _min_cand([i.cand for i in items]))
        return self.fold(c, items)

    def c_name(self, node: _Node) -> _C:
        path: tuple[str, ...] = node.value
        dotted = ".".join(path)
        if self.allowed is not None:
            ok = any(".".join(path[: i + 1]) in self.allowed for i in range(len(path)))
            if not ok:
                for i in range(len(path)):
                    p = ".".join(path[: i + 1])
                    if p not in self.prefixes:
                        level = {n for n in self.allowed | self.prefixes if n.count(".") == i and (i == 0 or n.startswith(".".join(path[:i]) + "."))}
                        close = difflib.get_close_matches(p, sorted(level), n=3, cutoff=0.6)
                        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else f"; known: {', '.join(sorted(level)[:40])}"
                        if path[0] in _FUNCTIONS and len(path) == 1:
                            hint = f"; {path[0]} is a function: call it as {FUNCTIONS[path[0]]}"
                        raise self.src.error(node.seg_pos[i], f"unknown name {p!r}{hint}")
        self.roots.add(path[0])
        self.paths.add(dotted)
        kind = self.kinds.get(dotted, "any")
        return _C(_name_fn(path), kind, 0, None)

    def c_call(self, node: _Node) -> _C:
        name = node.value
        spec = _FUNCTIONS.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, sorted(_FUNCTIONS), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(c + '()' for c in close)}?" if close else f"; known: {', '.join(sorted(_FUNCTIONS))}"
            raise self.src.error(node.pos, f"unknown function {name!r}{hint}")
        n = len(node.args)
        if n < spec.min_args or (spec.max_args is not None and n > spec.max_args):
            want = str(spec.min_args) if spec.max_args == spec.min_args else f"at least {spec.min_args}"
            noun = "argument" if want in ("1", "at least 1") else "arguments"
            raise self.src.error(node.pos, f"{name}() takes {want} {noun}, got {n}: {spec.signature}")
        args = [self.compile(a) for a in node.args]
        for a, c in zip(node.args, args):
            if c.kind == "null" and name != "coalesce":
                raise self.src.error(a.pos, f"{name}() of null is always null; remove the null argument")
        c = spec.build(self, node, args)
        if name in _TIME_FUNCTIONS:
            return c
        return self.fold(c, args)

    def c_unary(self, node: _Node) -> _C:
        (a,) = [self.compile(x) for x in node.args]
        self.require_kind(node.args[0], a, ("num",), f"unary '{node.value}' needs a number")
        af = a.fn
        if node.value == "+":
            c = _C(lambda env, now: v if type(v := af(env, now)) in _NUM_TYPES else None, "num", a.mono, a.cand, at_least=a.at_least)
        else:
            c = _C(lambda env, now: -v if type(v := af(env, now)) is int else _neg(v), "num", _neg_mono(a.mono), a.cand)
        return self.fold(c, [a])

    def c_binop(self, node: _Node) -> _C:
        op = node.value
        l, r = (self.compile(x) for x in node.args)
        for x, c in zip(node.args, (l, r)):
            if c.kind == "null":
                raise self.src.error(x.pos, "arithmetic with null is always null; remove it or use coalesce(x, default)")
        lk, rk = l.kind, r.kind
        if op == "+" and "str" in (lk, rk):
            if lk not in ("str", "any") or rk not in ("str", "any"):
                raise self.src.error(node.pos, f"'+' adds two numbers or joins two strings, not {_a(lk)} and {_a(rk)}")
            kind = "str" if lk == rk == "str" else "any"
        else:
            for side, k in (("left", lk), ("right", rk)):
                if k not in ("num", "any"):
                    raise self.src.error(node.pos, f"'{op}' needs numbers, got {_a(k)} on the {side}")
            kind = "num" if "num" in (lk, rk) else "any"
        f = _ARITH[op]
        lf, rf = l.fn, r.fn
        if r.const and type(r.value) is int and op in ("+", "-", "*"):
            rv = r.value
            if op == "+":
                fn: Fn = lambda env, now: (v + rv) if type(v := lf(env, now)) is int else f(v, rv)
            elif op == "-":
                fn = lambda env, now: (v - rv) if type(v := lf(env, now)) is int else f(v, rv)
            else:
                fn = lambda env, now: (v * rv) if type(v := lf(env, now)) is int else f(v, rv)
        else:
            fn = lambda env, now: f(lf(env, now), rf(env, now))
        # monotonicity in time
        if op == "+":
            mono = _mono_add(l.mono, r.mono)
        elif op == "-":
            mono = _mono_add(l.mono, _neg_mono(r.mono))
        elif op in ("*", "/") and r.const and type(r.value) in _NUM_TYPES:
            mono = 0 if l.mono == 0 else (None if l.mono is None else (l.mono if r.value > 0 else -l.mono if r.value < 0 else 0))
        elif op == "*" and l.const and type(l.value) in _NUM_TYPES:
            mono = 0 if r.mono == 0 else (None if r.mono is None else (r.mono if l.value > 0 else -r.mono if l.value < 0 else 0))
        else:
            mono = 0 if l.mono == 0 and r.mono == 0 else None
        c = _C(fn, kind, mono, _min_cand([l.cand, r.cand]))
        return self.fold(c, [l, r])

    def c_cmp(self, node: _Node) -> _C:
        op = node.value
        l, r = (self.compile(x) for x in node.args)
        for x, c in zip(node.args, (l, r)):
            if c.kind == "null":
                neg = "not " if op == "!=" else ""
                raise self.src.error(x.pos, f"a comparison with null is always false; write 'x is {neg}null'")
        known = {l.kind, r.kind} - {"any"}
        if len(known) == 2:
            raise self.src.error(node.pos, f"'{op}' between {_a(l.kind)} and {_a(r.kind)} is always false")
        if op not in ("==", "!=") and known & {"bool", "list", "map"}:
            raise self.src.error(node.pos, f"'{op}' orders numbers or strings, not {_a(next(iter(known & {'bool', 'list', 'map'})))}")
        lf, rf = l.fn, r.fn
        fused = _fused_cmp(op, node.args[0], r) if node.args[0].kind == "name" else None
        fn = fused if fused is not None else self._cmp_fn(op, l, r, lf, rf)
        cand: Cand | None
        if l.mono in (1, -1) and r.mono == 0:
            cand = _cmp_cand(l, r)
        elif r.mono in (1, -1) and l.mono == 0:
            cand = _cmp_cand(r, l)
        else:
            cand = _min_cand([l.cand, r.cand])
        c = _C(fn, "bool", 0 if l.mono == 0 and r.mono == 0 else None, cand)
        return self.fold(c, [l, r])

    @staticmethod
    def _cmp_fn(op: str, l: _C, r: _C, lf: Fn, rf: Fn) -> Fn:
        """Comparison closures; Decimal NaN/sNaN operands (which raise in Python) compare false."""
        if op in ("==", "!="):
            if r.const and type(r.value) is str:
                rv = r.value
                if op == "==":
                    return lambda env, now: type(v := lf(env, now)) is str and v == rv
                return lambda env, now: type(v := lf(env, now)) is str and v != rv
            test = _eq if op == "==" else _ne

            def eq(env: Mapping[str, Any], now: int) -> bool:
                try:
                    return test(lf(env, now), rf(env, now))
                except (ArithmeticError, ValueError):
                    return False

            return eq
        order = _ORDER[op]
        if r.const and type(r.value) in _NUM_TYPES:
            rv = r.value
            return lambda env, now: _num_order(order, lf(env, now), rv)

        def cmp(env: Mapping[str, Any], now: int) -> bool:
            a = lf(env, now)
            b = rf(env, now)
            if not _comparable(a, b):
                return False
            try:
                return order(a, b)
            except (ArithmeticError, ValueError):
                return False

        return cmp

    def c_in(self, node: _Node) -> _C:
        negate: bool = node.value
        l, r = (self.compile(x) for x in node.args)
        if l.kind == "null":
            raise self.src.error(node.args[0].pos, "'null in ...' is always false; write 'x is null'")
        if r.kind in ("num", "bool", "null"):
            raise self.src.error(node.args[1].pos, f"'in' needs a list, a set or a string on the right, got {_a(r.kind)}")
        if r.kind == "str" and l.kind not in ("str", "any"):
            raise self.src.error(node.pos, f"'in' a string looks for a string, got {_a(l.kind)}")
        lf, rf = l.fn, r.fn
        if r.const and r.kind == "list":
            items = r.value
            for x, v in zip(node.args[1].args if node.args[1].kind == "list" else [], items):
                if l.kind not in ("any",) and _kind_of(v) != l.kind:
                    raise self.src.error(x.pos, f"{_a(_kind_of(v))} in the list can never equal {_a(l.kind)} on the left")
            plain = frozenset(v for v in items if type(v) in _NUM_TYPES or type(v) is str) if all(
                type(v) in _NUM_TYPES or type(v) is str or type(v) is bool for v in items) else None
            bools = frozenset(v for v in items if type(v) is bool)
            if plain is not None:
                okt = _NUM_TYPES | {str}

                def member(env: Mapping[str, Any], now: int) -> bool | None:
                    v = lf(env, now)
                    t = type(v)
                    if t is str:
                        return v in plain
                    if t in okt:
                        return _member(v, plain)
                    if t is bool:
                        return v in bools
                    return None
            else:
                member = lambda env, now: _member(lf(env, now), items)
        elif l.const and type(l.value) is str:
            lv = l.value

            def member(env: Mapping[str, Any], now: int) -> bool | None:
                coll = rf(env, now)
                tc = type(coll)
                if tc is frozenset or tc is set:
                    return lv in coll
                return _member(lv, coll)
        else:
            member = lambda env, now: _member(lf(env, now), rf(env, now))
        if negate:
            fn: Fn = lambda env, now: member(env, now) is False
        else:
            fn = lambda env, now: member(env, now) is True
        c = _C(fn, "bool", 0 if l.mono == 0 and r.mono == 0 else None, _min_cand([l.cand, r.cand]))
        return self.fold(c, [l, r])

    def c_isnull(self, node: _Node) -> _C:
        (a,) = [self.compile(x) for x in node.args]
        af = a.fn
        if node.value:
            fn: Fn = lambda env, now: af(env, now) is not None
        else:
            fn = lambda env, now: af(env, now) is None
        return self.fold(_C(fn, "bool", 0 if a.mono == 0 else None, a.cand), [a])

    def _bool_operands(self, node: _Node, word: str) -> list[_C]:
        parts = [self.compile(x) for x in node.args]
        for x, c in zip(node.args, parts):
            if c.kind not in ("bool", "any"):
                raise self.src.error(x.pos, f"'{word}' needs a condition (true/false), got {_a(c.kind)}")
        return parts

    def c_not(self, node: _Node) -> _C:
        (a,) = self._bool_operands(node, "not")
        af = a.fn
        return self.fold(_C(lambda env, now: af(env, now) is not True, "bool", 0 if a.mono == 0 else None, a.cand), [a])

    def c_and(self, node: _Node) -> _C:
        return self._junction(node, "and")

    def c_or(self, node: _Node) -> _C:
        return self._junction(node, "or")

    def _junction(self, node: _Node, word: str) -> _C:
        parts = self._bool_operands(node, word)
        fns = [p.fn for p in parts]
        if word == "and":
            if len(fns) == 2:
                a, b = fns
                fn: Fn = lambda env, now: a(env, now) is True and b(env, now) is True
            else:
                def fn(env: Mapping[str, Any], now: int) -> bool:
                    for f in fns:
                        if f(env, now) is not True:
                            return False
                    return True
        else:
            if len(fns) == 2:
                a, b = fns
                fn = lambda env, now: a(env, now) is True or b(env, now) is True
            else:
                def fn(env: Mapping[str, Any], now: int) -> bool:
                    for f in fns:
                        if f(env, now) is True:
                            return True
                    return False
        mono = 0 if all(p.mono == 0 for p in parts) else None
        return self.fold(_C(fn, "bool", mono, _min_cand([p.cand for p in parts])), parts)
