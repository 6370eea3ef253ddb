"""``ExprError`` (a compile error with its position) and the source text that turns offsets into
``source:line:column`` errors with a caret."""

from __future__ import annotations

from typing import Any


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
