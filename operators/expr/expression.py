"""``compile_expr`` (text to ``Expr``) and ``Expr``: ``evaluate`` and ``next_change_ms``."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from operators.expr.compiler import _Compiler
from operators.expr.errors import _Text
from operators.expr.limits import MAX_CHANGE_STEPS, MAX_LENGTH
from operators.expr.parser import _check_depth, _Parser
from operators.expr.timing import Cand, Fn
from operators.expr.values import _same


class Expr:
    """A compiled expression. Immutable, thread-safe, picklable (it pickles its text and recompiles).

    * ``text``: the source text; ``source``, ``line``, ``column``: where it came from.
    * ``names``: the root names it reads from ``env`` (``event`` for ``event.type``).
    * ``paths``: the dotted names it reads (``event.type``).
    * ``kind``: its static result kind (``bool``, ``num``, ``str``, ``list``, ``any`` ...).
    * ``uses_time``: whether the result can depend on ``now_ms`` (time functions).
    """

    __slots__ = ("_cand", "_fn", "_names_arg", "column", "kind", "line", "names", "paths", "source", "text", "uses_time")

    text: str
    source: str
    line: int
    column: int
    names: frozenset[str]
    paths: frozenset[str]
    kind: str
    uses_time: bool
    _fn: Fn
    _cand: Cand | None
    _names_arg: Any

    def __init__(self) -> None:  # use compile_expr
        raise TypeError("use compile_expr(text) to build an Expr")

    def evaluate(self, env: Mapping[str, Any], now_ms: int) -> Any:
        """The value of the expression for ``env`` at event time ``now_ms``. Never raises on data."""
        return self._fn(env, now_ms)

    def next_change_ms(self, env: Mapping[str, Any], now_ms: int) -> int | None:
        """Earliest ``t > now_ms`` at which ``evaluate(env, t)`` can differ, or ``None`` (never).

        Exact for monotone time terms compared with time-independent values under and/or/not; else a
        safe earlier bound (see the module docstring).
        """
        cand = self._cand
        if cand is None:
            return None
        fn = self._fn
        v0 = fn(env, now_ms)
        t = now_ms
        for _ in range(MAX_CHANGE_STEPS):
            nxt = cand(env, t)
            if nxt is None:
                return None
            if nxt <= t:
                nxt = t + 1
            if not _same(fn(env, nxt), v0):
                return nxt
            t = nxt
        return t

    def __repr__(self) -> str:
        return f"Expr({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expr) and (self.text, self.names, self._names_arg) == (other.text, other.names, other._names_arg)

    def __hash__(self) -> int:
        return hash(self.text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_recompile, (self.text, self.source, self.line, self.column, self._names_arg))


def _recompile(text: str, source: str, line: int, column: int, names: Any) -> Expr:
    return compile_expr(text, source=source, line=line, column=column, names=names)


def compile_expr(
    text: str,
    *,
    source: str = "<expr>",
    line: int = 1,
    column: int = 1,
    names: Collection[str] | None = None,
) -> Expr:
    """Parse and compile ``text``; raise ``ExprError`` with the position of the first problem.

    ``source``/``line``/``column`` say where ``text[0]`` sits in the user's file (later lines of a
    multi-line text start at column 1). ``names``, when given, is the set of names the expression
    may read: an entry allows itself and everything below it (``event`` allows ``event.type``;
    ``profile.gmv`` allows only that field of ``profile``). A mapping name → kind (``num``, ``str``,
    ``bool``, ``list``, ``map``, ``any``) additionally lets the compiler reject type errors such as
    ``gmv_90d == 'high'``. Unknown functions, wrong argument counts and type errors on literals are
    always compile errors.
    """
    if not isinstance(text, str):
        raise TypeError(f"expression text must be a string, got {type(text).__name__}")
    src = _Text(text, source, line, column)
    if len(text) > MAX_LENGTH:
        raise src.error(MAX_LENGTH, f"expression longer than {MAX_LENGTH} characters")
    tree = _Parser(src).parse()
    _check_depth(src, tree)
    comp = _Compiler(src, names)
    c = comp.compile(tree)
    e = object.__new__(Expr)
    e.text = text
    e.source = source
    e.line = line
    e.column = column
    e.names = frozenset(comp.roots)
    e.paths = frozenset(comp.paths)
    e.kind = c.kind
    e.uses_time = c.cand is not None
    e._fn = c.fn
    e._cand = c.cand
    e._names_arg = None if names is None else (dict(names) if isinstance(names, Mapping) else frozenset(names))
    return e
