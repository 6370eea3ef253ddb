"""Tags a condition cannot be true without, read from its text (pure).

Marketing conditions mostly start from a segment: ``'high_value' in tags and days_since(...) >= 30``.
A top-level conjunct ``'<tag>' in tags`` is false whenever the person lacks that tag, and then so is
the whole ``and`` chain (``and`` treats only true as true). :func:`required_tags` returns those tags,
so the engine skips the expression entirely for persons without them (a set inclusion instead of an
evaluation). Anything it does not recognise requires nothing: a top-level ``or``, ``not``,
``not in``, function calls; the result is then only less selective, never wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["required_tags"]

_TAG_IN = re.compile(r"""^(?:'([^'\\\n]*)'|"([^"\\\n]*)")\s+in\s+tags$""")


def _word_at(text: str, i: int, word: str) -> bool:
    end = i + len(word)
    if not text.startswith(word, i):
        return False
    before = text[i - 1] if i > 0 else " "
    after = text[end] if end < len(text) else " "
    return not (before.isalnum() or before == "_" or after.isalnum() or after == "_")


def _outside_quotes(text: str) -> Iterator[tuple[int, str, int]]:
    """(index, char, paren depth before it) for every character outside string literals; ends
    with (len(text), "", final depth), depth -1 marking an unterminated string."""
    depth, quote, i, n = 0, "", 0, len(text)
    while i < n:
        c = text[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        else:
            yield i, c, depth
            depth += 1 if c in "([" else -1 if c in ")]" else 0
        i += 1
    yield n, "", -1 if quote else depth


def _split_top_level_and(text: str) -> list[str] | None:
    """The top-level ``and`` operands, or None if there is a top-level ``or`` (or unbalanced text)."""
    parts: list[str] = []
    start = 0
    for i, c, depth in _outside_quotes(text):
        if c == "":
            if depth != 0:
                return None
        elif depth == 0 and c == "o" and _word_at(text, i, "or"):
            return None
        elif depth == 0 and c == "a" and _word_at(text, i, "and") and i >= start:
            parts.append(text[start:i])
            start = i + 3
    parts.append(text[start:])
    return parts


def _wrapped(text: str) -> bool:
    """``text`` is one parenthesised group: ``( ... )`` with the first paren closing at the end."""
    if not (text.startswith("(") and text.endswith(")")):
        return False
    for i, c, depth in _outside_quotes(text):
        if c == ")" and depth == 1 and i != len(text) - 1:
            return False
    return True


def required_tags(text: str | None) -> frozenset[str]:
    """Tags that must all be in ``tags`` for the condition ``text`` to be true (may be empty)."""
    if not text:
        return frozenset()
    parts = _split_top_level_and(text.strip())
    if parts is None:
        return frozenset()
    out: set[str] = set()
    for part in parts:
        p = part.strip()
        m = _TAG_IN.match(p)
        if m:
            out.add(m.group(1) if m.group(1) is not None else m.group(2))
        elif _wrapped(p):
            out |= required_tags(p[1:-1])
    return frozenset(out)
