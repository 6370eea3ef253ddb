"""The bounds of the expression language (text length, nesting, literal size, the
``next_change_ms`` search) and the time units of its functions."""

from __future__ import annotations

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
