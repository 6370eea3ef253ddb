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
  the tag loader (operators/tags/loading.py) maps that position back into the YAML file (block
  scalars included); library parsers report Python syntax errors against their own string, not the
  user's file.
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

from operators.expr.errors import ExprError
from operators.expr.expression import Expr, compile_expr
from operators.expr.functions import FUNCTIONS
from operators.expr.limits import KINDS, MAX_CHANGE_STEPS, MAX_DEPTH, MAX_LENGTH, MAX_NUMBER_CHARS

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
