"""The tokenizer: expression text to tokens (numbers, strings, names, keywords, operators), with a
hint for the operators of other languages (``=``, ``&&``, ``!``, ``**``)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from operators.expr.errors import _Text
from operators.expr.limits import MAX_NUMBER_CHARS

_KEYWORDS = frozenset({"and", "or", "not", "in", "is", "null", "true", "false"})


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
