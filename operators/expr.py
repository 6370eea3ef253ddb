"""The safe expression language of tags and rules (pure; see docs/expressions.md for users).

An expression is a single line or a few lines of text such as
``gmv_90d >= 1000 and days_since(last_purchase) >= 30`` or ``'vip' in tags and event.type == 'purchase'``.
``compile_expr`` parses it once into an ``Expr``; ``Expr.evaluate(env, now_ms)`` runs it against a mapping
of values and the current event time; ``Expr.next_change_ms(env, now_ms)`` says when the result can next
change while ``env`` stays the same (only the time functions move), so a tag "no purchase for 30 days"
can flip on a timer at exactly the right event time.

Why a parser of our own rather than a library (simpleeval, asteval, CEL, jsonlogic, ...):

* **No eval.** Libraries built on Python's ``ast``/``eval`` inherit Python's attack surface
  (attribute access, ``__class__`` walks, huge ``**`` exponents, deep recursion); they must blacklist
  what Python allows. Here nothing is allowed unless the grammar below says so: names are looked up
  only as mapping keys (never ``getattr``), there is no power operator, no indexing, no lambdas, and
  length, nesting depth and number size are bounded.
* **Exact error positions.** Every error names ``source:line:column`` of the offending token, and
  tags.py maps that position back into the YAML file (block scalars included); library parsers
  report Python syntax errors against their own string, not the user's file.
* **Time awareness.** The compiler knows which sub-terms depend on time and whether they are
  monotone, which is what ``next_change_ms`` needs to schedule tag and rule timers exactly. No
  library offers that.
* **Speed.** Expressions compile to nested closures with type-specialised fast paths and constant
  folding (no per-node dispatch at evaluation time); thousands of rules per event stay cheap
  (bench/expr_bench.py).

Grammar (lowest binding first)::

    expr     := or
    or       := and ('or' and)*
    and      := not ('and' not)*
    not      := 'not' not | cmp
    cmp      := sum [('=='|'!='|'<'|'<='|'>'|'>=') sum | ['not'] 'in' sum | 'is' ['not'] 'null']
    sum      := prod (('+'|'-') prod)*
    prod     := unary (('*'|'/'|'%') unary)*
    unary    := ('-'|'+') unary | primary
    primary  := INT | DECIMAL | STRING | 'true' | 'false' | 'null' | '[' [expr (',' expr)* [',']] ']'
              | '(' expr ')' | NAME '(' [expr (',' expr)*] ')' | NAME ('.' NAME)*

Comparisons do not chain (``a < b < c`` is an error). Keywords are lower case.

Values: ``None`` (null), ``bool``, numbers (``int``, ``decimal.Decimal``, ``float``; decimal literals
are exact ``Decimal``), ``str``, collections (``list``, ``tuple``, ``set``, ``frozenset``) and mappings
(for dotted names). Anything else in ``env`` is opaque: it compares false and computes null.

Null and type semantics (SQL-like, and total: ``evaluate`` never raises on any ``env``):

* A name missing from ``env`` (or a dotted step into something that is not a mapping) is null.
* Every comparison (``== != < <= > >=``, ``in``, ``not in``) with a null operand is **false**, and so
  is a comparison of operands of different kinds (a number and a string, a bool and a number).
  Use ``x is null`` / ``x is not null`` to test for null.
* Arithmetic with a null (or a non-number) operand is null; division or ``%`` by zero is null.
  ``+`` also concatenates two strings. ``/`` is exact decimal division for int/Decimal operands
  (``7 / 2`` is ``3.5``, 34 significant digits), float division if a float is involved.
  ``%`` is a floor modulo (the result has the sign of the divisor), like Python's int ``%``.
* ``and``/``or``/``not`` treat only ``true`` as true: null (and any non-boolean) counts as false,
  so ``not (x > 5)`` is true when ``x`` is null. Results of ``and``/``or``/``not`` are booleans.
* Where the kinds are known at compile time (literals, function results, typed ``names``) a
  comparison or operation that can only be false / null is a compile error instead.

Functions (fixed registry; ``ts`` arguments are epoch milliseconds):

* ``days_since(ts)`` = ``floor((now - ts) / 86_400_000)``; ``hours_since`` (3_600_000) and
  ``minutes_since`` (60_000) likewise. Whole elapsed units, floored (negative for a future ``ts``);
  null for a null or non-number ``ts`` or one outside ±2**62 ms. ``now()`` is the evaluation time in ms.
* ``min(a, ...)``, ``max(a, ...)``: nulls ignored, null if all null or the kinds differ.
* ``abs(x)``, ``coalesce(a, ...)`` (first non-null), ``len(x)`` (string, collection or mapping),
  ``lower(s)``, ``upper(s)``, ``contains(haystack, needle)`` (substring, or membership in a
  collection), ``startswith(s, prefix)``, ``endswith(s, suffix)``; null in, null out, except that the
  three predicates return false.

``next_change_ms`` contract: the earliest event time ``t > now_ms`` at which ``evaluate(env, t)`` can
differ from ``evaluate(env, now_ms)``, or ``None`` if it never changes. It is exact when the time-
dependent parts are monotone terms (``days_since``/``hours_since``/``minutes_since``/``now()`` of
time-independent arguments, combined with constants by ``+ - * /``, ``min``/``max``, unary minus)
compared with time-independent values, under any ``and``/``or``/``not`` nesting. Other time uses
(``abs(days_since(x) - 3)``, ``days_since(a) > days_since(b)``, ``days_since(x) % 7``) fall back to the
next step of any time function in the expression; the search then walks those steps up to
``MAX_CHANGE_STEPS`` times and, if the result still has not changed, returns the last step reached:
an **earlier** bound at which the caller re-evaluates and asks again (never a later one).
"""

from __future__ import annotations

import difflib
import math
import operator
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Context, Decimal
from typing import Any

__all__ = [
    "FUNCTIONS",
    "KINDS",
    "MAX_CHANGE_STEPS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_NUMBER_CHARS",
    "Expr",
    "ExprError",
    "compile_expr",
]

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

#: Longest accepted expression text (characters).
MAX_LENGTH = 10_000
#: Deepest accepted nesting (parentheses, lists, calls, operators).
MAX_DEPTH = 100
#: Longest numeric literal (characters).
MAX_NUMBER_CHARS = 40
#: How many candidate times ``next_change_ms`` examines before returning a safe earlier bound.
MAX_CHANGE_STEPS = 64
#: Search horizon of ``next_change_ms`` (epoch ms, about 146 million years).
T_MAX = 2**62

#: Static kinds a ``names`` mapping may declare (and that the compiler infers).
KINDS = frozenset({"num", "str", "bool", "list", "map", "any"})

_DEC = Context(prec=34, rounding=ROUND_HALF_EVEN, Emax=999_999, Emin=-999_999)
_NUM_TYPES = frozenset({int, float, Decimal})
_COLL_TYPES = frozenset({list, tuple, set, frozenset})
_KEYWORDS = frozenset({"and", "or", "not", "in", "is", "null", "true", "false"})
_CMP_OPS = frozenset({"==", "!=", "<", "<=", ">", ">="})


# ---------------------------------------------------------------------------------------------- errors


class ExprError(ValueError):
    """A compile error of an expression, with its position.

    ``source`` names where the text came from (a file, ``control:tag:x``...), ``line``/``column`` are
    1-based, ``message`` says what is wrong and what to do. ``offset`` is the 0-based character offset
    in the expression text (used to map positions back into a YAML file). ``str()`` is
    ``"source:line:col: message"`` followed by the source line and a caret under the column.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str = "<expr>",
        line: int = 1,
        column: int = 1,
        snippet: str = "",
        caret: int = 0,
        offset: int = 0,
    ) -> None:
        self.message = message
        self.source = source
        self.line = line
        self.column = column
        self.snippet = snippet
        self.caret = caret
        self.offset = offset
        super().__init__(self.__str__())

    def __str__(self) -> str:
        head = f"{self.source}:{self.line}:{self.column}: {self.message}"
        if not self.snippet:
            return head
        return f"{head}\n    {self.snippet}\n    {' ' * self.caret}^"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore_error, (self.message, self.source, self.line, self.column, self.snippet, self.caret, self.offset))


def _restore_error(message: str, source: str, line: int, column: int, snippet: str, caret: int, offset: int) -> ExprError:
    return ExprError(message, source=source, line=line, column=column, snippet=snippet, caret=caret, offset=offset)


class _Text:
    """The expression text with its origin; turns offsets into positioned errors."""

    __slots__ = ("column", "line", "source", "text")

    def __init__(self, text: str, source: str, line: int, column: int) -> None:
        self.text, self.source, self.line, self.column = text, source, line, column

    def error(self, offset: int, message: str) -> ExprError:
        text = self.text
        offset = max(0, min(offset, len(text)))
        nl_before = text.count("\n", 0, offset)
        start = text.rfind("\n", 0, offset) + 1
        end = text.find("\n", offset)
        snippet = text[start : end if end >= 0 else len(text)]
        caret = offset - start
        column = self.column + caret if nl_before == 0 else caret + 1
        shown, shown_caret = snippet, caret
        if len(snippet) > 100:  # a window around the caret
            lo = max(0, caret - 50)
            shown = ("..." if lo else "") + snippet[lo : lo + 100] + ("..." if lo + 100 < len(snippet) else "")
            shown_caret = caret - lo + (3 if lo else 0)
        return ExprError(
            message,
            source=self.source,
            line=self.line + nl_before,
            column=column,
            snippet=shown.expandtabs(1),
            caret=shown_caret,
            offset=offset,
        )


# ---------------------------------------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # "num" | "str" | "name" | "kw" | "op" | "eof"
    value: Any
    pos: int
    text: str


_TWO_CHAR = frozenset({"==", "!=", "<=", ">="})
_ONE_CHAR = frozenset("()[],.+-*/%<>")
_HINTS = {
    "=": "'=' is not an operator; use '==' to compare",
    "&": "use 'and' instead of '&'/'&&'",
    "|": "use 'or' instead of '|'/'||'",
    "!": "use 'not' instead of '!' (and '!=' for 'not equal')",
    "**": "there is no power operator",
    "<>": "use '!=' for 'not equal'",
}


def _tokenize(src: _Text) -> list[_Tok]:
    text = src.text
    n = len(text)
    toks: list[_Tok] = []
    i = 0
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
            continue
        if ch == "#":
            raise src.error(i, "comments are not allowed inside an expression")
        if ch.isdigit():
            j = i
            while j < n and text[j].isdigit():
                j += 1
            is_dec = j + 1 < n and text[j] == "." and text[j + 1].isdigit()
            if is_dec:
                j += 1
                while j < n and text[j].isdigit():
                    j += 1
            if j < n and (text[j].isalnum() or text[j] == "_"):
                k = j
                while k < n and (text[k].isalnum() or text[k] in "_."):
                    k += 1
                raise src.error(i, f"invalid number {text[i:k]!r}: write plain digits, e.g. 1000 or 12.50 (no exponents, units or underscores)")
            lit = text[i:j]
            if len(lit) > MAX_NUMBER_CHARS:
                raise src.error(i, f"number literal longer than {MAX_NUMBER_CHARS} characters")
            toks.append(_Tok("num", Decimal(lit) if is_dec else int(lit), i, lit))
            i = j
            continue
        if ch.isalpha() or ch == "_":
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_") and text[j].isascii():
                j += 1
            word = text[i:j]
            if j < n and text[j].isalnum() and not text[j].isascii():
                raise src.error(j, "names are ASCII letters, digits and '_'")
            if word.startswith("__"):
                raise src.error(i, f"name {word!r} is not allowed (names starting with '__' are reserved)")
            if word in _KEYWORDS:
                toks.append(_Tok("kw", word, i, word))
            else:
                if word.lower() in _KEYWORDS and word.lower() != word:
                    raise src.error(i, f"keywords are lower case: write {word.lower()!r}, not {word!r}")
                toks.append(_Tok("name", word, i, word))
            i = j
            continue
        if ch in "'\"":
            j = i + 1
            out: list[str] = []
            while True:
                if j >= n or text[j] == "\n":
                    raise src.error(i, "unterminated string: close it with " + ch)
                c = text[j]
                if c == ch:
                    j += 1
                    break
                if c == "\\":
                    if j + 1 >= n:
                        raise src.error(j, "unterminated string: close it with " + ch)
                    esc = text[j + 1]
                    mapped = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}.get(esc)
                    if mapped is None:
                        raise src.error(j, f"unknown escape '\\{esc}' (known: \\\\ \\' \\\" \\n \\t)")
                    out.append(mapped)
                    j += 2
                    continue
                out.append(c)
                j += 1
            toks.append(_Tok("str", "".join(out), i, text[i:j]))
            i = j
            continue
        for op, known in ((text[i : i + 2], _TWO_CHAR), (ch, _ONE_CHAR)):  # longest operator first
            if op in _HINTS:
                raise src.error(i, _HINTS[op])
            if op in known:
                toks.append(_Tok("op", op, i, op))
                i += len(op)
                break
        else:
            raise src.error(i, f"unexpected character {ch!r}")
    toks.append(_Tok("eof", None, n, ""))
    return toks


# ---------------------------------------------------------------------------------------------- AST


@dataclass(slots=True)
class _Node:
    kind: str  # lit | list | name | call | unary | binop | cmp | and | or | not | in | isnull
    pos: int
    value: Any = None  # literal value, operator, function name, name path, negate flag
    args: list[_Node] = field(default_factory=list)
    seg_pos: tuple[int, ...] = ()  # positions of the segments of a dotted name


_LBP = {"or": 10, "and": 20, "==": 40, "!=": 40, "<": 40, "<=": 40, ">": 40, ">=": 40, "in": 40, "is": 40,
        "+": 50, "-": 50, "*": 60, "/": 60, "%": 60}
_CMP_BP = 40


class _Parser:
    def __init__(self, src: _Text) -> None:
        self.src = src
        self.toks = _tokenize(src)
        self.i = 0
        self.depth = 0

    def peek(self, k: int = 0) -> _Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def next(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def describe(self, t: _Tok) -> str:
        return "end of expression" if t.kind == "eof" else repr(t.text)

    def expect(self, value: str, what: str) -> _Tok:
        t = self.next()
        if t.value != value or t.kind not in ("op", "kw"):
            raise self.src.error(t.pos, f"expected {value!r} {what}, found {self.describe(t)}")
        return t

    def parse(self) -> _Node:
        if self.peek().kind == "eof":
            raise self.src.error(0, "empty expression")
        node = self.expr(0)
        t = self.peek()
        if t.kind != "eof":
            raise self.src.error(t.pos, f"unexpected {self.describe(t)} after a complete expression (missing 'and'/'or' or an operator?)")
        return node

    def lbp(self, t: _Tok) -> int:
        if t.kind == "op" or t.kind == "kw":
            if t.value == "not":
                nxt = self.peek(1)
                return _CMP_BP if nxt.kind == "kw" and nxt.value == "in" else 0
            return _LBP.get(t.value, 0)
        return 0

    def expr(self, rbp: int) -> _Node:
        self.depth += 1
        if self.depth > MAX_DEPTH + 1:  # the outermost expression is level 0
            raise self.src.error(self.peek().pos, f"expression nested deeper than {MAX_DEPTH} levels")
        left = self.nud(self.next())
        while rbp < self.lbp(self.peek()):
            left = self.led(self.next(), left)
        self.depth -= 1
        return left

    def nud(self, t: _Tok) -> _Node:
        if t.kind in ("num", "str"):
            return _Node("lit", t.pos, t.value)
        if t.kind == "kw":
            if t.value in ("true", "false"):
                return _Node("lit", t.pos, t.value == "true")
            if t.value == "null":
                return _Node("lit", t.pos, None)
            if t.value == "not":
                return _Node("not", t.pos, None, [self.expr(30)])
            raise self.src.error(t.pos, f"unexpected {t.value!r}: an operand (value, name or '(') is missing")
        if t.kind == "op":
            if t.value == "(":
                inner = self.expr(0)
                self.expect(")", "to close the '(' opened earlier")
                return inner
            if t.value == "[":
                items: list[_Node] = []
                while not (self.peek().kind == "op" and self.peek().value == "]"):
                    items.append(self.expr(0))
                    if self.peek().kind == "op" and self.peek().value == ",":
                        self.next()
                        continue
                    if not (self.peek().kind == "op" and self.peek().value == "]"):
                        raise self.src.error(self.peek().pos, f"expected ',' or ']' in the list, found {self.describe(self.peek())}")
                self.next()
                return _Node("list", t.pos, None, items)
            if t.value in ("-", "+"):
                return _Node("unary", t.pos, t.value, [self.expr(70)])
            raise self.src.error(t.pos, f"unexpected {self.describe(t)}: an operand (value, name or '(') is missing")
        if t.kind == "name":
            nxt = self.peek()
            if nxt.kind == "op" and nxt.value == "(":
                self.next()
                args: list[_Node] = []
                if not (self.peek().kind == "op" and self.peek().value == ")"):
                    while True:
                        args.append(self.expr(0))
                        if self.peek().kind == "op" and self.peek().value == ",":
                            self.next()
                            continue
                        break
                self.expect(")", f"to close the call of {t.value}()")
                return _Node("call", t.pos, t.value, args)
            path = [t.value]
            segs = [t.pos]
            while self.peek().kind == "op" and self.peek().value == ".":
                self.next()
                seg = self.next()
                if seg.kind not in ("name", "kw"):
                    raise self.src.error(seg.pos, f"expected a field name after '.', found {self.describe(seg)}")
                path.append(seg.value)
                segs.append(seg.pos)
            return _Node("name", t.pos, tuple(path), seg_pos=tuple(segs))
        raise self.src.error(t.pos, "unexpected end of expression: an operand is missing")

    def led(self, t: _Tok, left: _Node) -> _Node:
        op = t.value
        if op in ("and", "or"):
            right = self.expr(_LBP[op])
            if left.kind == op:
                left.args.append(right)
                return left
            return _Node(op, t.pos, None, [left, right])
        if op in _CMP_OPS or op in ("in", "not", "is"):
            if op == "is":
                neg = False
                if self.peek().kind == "kw" and self.peek().value == "not":
                    self.next()
                    neg = True
                nt = self.next()
                if not (nt.kind == "kw" and nt.value == "null"):
                    raise self.src.error(nt.pos, f"'is' must be followed by 'null' or 'not null', found {self.describe(nt)}")
                node = _Node("isnull", t.pos, neg, [left])
            elif op == "not":
                self.next()  # 'in'
                node = _Node("in", t.pos, True, [left, self.expr(_CMP_BP)])
            elif op == "in":
                node = _Node("in", t.pos, False, [left, self.expr(_CMP_BP)])
            else:
                node = _Node("cmp", t.pos, op, [left, self.expr(_CMP_BP)])
            nxt = self.peek()
            if self.lbp(nxt) == _CMP_BP:
                raise self.src.error(nxt.pos, "comparisons cannot be chained: write 'a < b and b < c'")
            return node
        right = self.expr(_LBP[op])
        return _Node("binop", t.pos, op, [left, right])


# ---------------------------------------------------------------------------------------------- runtime helpers

Fn = Callable[[Mapping[str, Any], int], Any]
Cand = Callable[[Mapping[str, Any], int], "int | None"]


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


# ---------------------------------------------------------------------------------------------- compiled nodes


@dataclass(slots=True)
class _C:
    fn: Fn
    kind: str  # static kind: num | str | bool | list | map | null | any
    mono: int | None = 0  # 0: time-independent, +1/-1: monotone in now, None: time-dependent, unknown
    cand: Cand | None = None  # lower bound on the next time the value can change; None: never
    const: bool = False
    value: Any = None
    at_least: Callable[[Mapping[str, Any], int], int | None] | None = None  # integer-valued nondecreasing f: first t with f(t) >= k


_KIND_WORDS = {"num": "a number", "str": "a string", "bool": "a boolean", "list": "a list", "map": "a mapping",
               "null": "null", "any": "a value", "opaque": "a value"}


def _a(kind: str) -> str:
    return _KIND_WORDS.get(kind, kind)


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


# ---------------------------------------------------------------------------------------------- functions


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


# ---------------------------------------------------------------------------------------------- compiler


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


# ---------------------------------------------------------------------------------------------- public API


def _check_depth(src: _Text, root: _Node) -> None:
    """Bound the tree depth (left-nested chains like ``1+1+1...`` are deep without parentheses)."""
    stack = [(root, 1)]
    while stack:
        node, d = stack.pop()
        if d > MAX_DEPTH:
            raise src.error(node.pos, f"expression nested deeper than {MAX_DEPTH} levels; simplify it")
        stack.extend((a, d + 1) for a in node.args)


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
