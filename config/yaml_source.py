"""Where each part of a YAML document starts: 1-based line/column per path, duplicate keys, keys YAML read
as something other than text, scalar styles. The definition loaders (rules, the event schema) point their
messages at the exact line with it. Pure: PyYAML only.
"""

from __future__ import annotations

import yaml

__all__ = ["Path_", "YamlSource"]

Path_ = tuple[str | int, ...]

_YAML_STR = "tag:yaml.org,2002:str"
_YAML_KINDS = {"bool": "a boolean", "int": "an integer", "float": "a number", "null": "null", "timestamp": "a date"}


class YamlSource:
    """Where each JSON path starts in the text (1-based line/column), plus duplicate YAML keys."""

    def __init__(self, file: str, root: yaml.Node | None, base: Path_ = (), text: str = ""):
        self.file = file
        self.lines = text.split("\n")
        self.marks: dict[Path_, tuple[int, int]] = {}
        self.scalar_style: dict[Path_, str | None] = {}
        self.duplicates: list[tuple[Path_, str]] = []
        #: Mapping keys YAML resolved to something other than text (``on``/``yes`` → bool, ``1`` → int, ``~``).
        self.non_text_keys: list[tuple[Path_, str, str]] = []
        if root is not None:
            self._walk(root, base)

    def _walk(self, node: yaml.Node, path: Path_) -> None:
        self.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for k, v in node.value:
                key = str(k.value)
                if key in seen:
                    self.duplicates.append((path + (key,), key))
                seen.add(key)
                if k.tag != _YAML_STR:
                    kind = k.tag.rsplit(":", 1)[-1]
                    self.non_text_keys.append((path + (key,), key, _YAML_KINDS.get(kind, kind)))
                self._walk(v, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                self._walk(v, path + (i,))
        else:
            self.scalar_style[path] = node.style

    def at(self, path: Path_) -> tuple[int | None, int | None]:
        p = tuple(path)
        while p:
            if p in self.marks:
                return self.marks[p]
            p = p[:-1]
        return self.marks.get((), (None, None))

    def expr_start(self, path: Path_) -> tuple[int, int]:
        """Line/column of an expression's first character (quotes and block headers skipped)."""
        line, col = self.at(path)
        line, col = line or 1, col or 1
        style = self.scalar_style.get(tuple(path))
        if style in ("'", '"'):
            return line, col + 1
        if style in ("|", ">"):
            return line + 1, self.block_indent(line) + 1
        return line, col

    def block_indent(self, header_line: int) -> int:
        """Indentation of a block scalar's first content line (the line after its header)."""
        content = self.lines[header_line] if header_line < len(self.lines) else ""
        return len(content) - len(content.lstrip(" "))

    def expr_position(self, path: Path_, text: str, offset: int) -> tuple[int, int]:
        """File line/column of character ``offset`` of the expression at ``path``."""
        line, col = self.expr_start(path)
        nl = text.count("\n", 0, offset)
        in_line = offset - (text.rfind("\n", 0, offset) + 1)
        if self.scalar_style.get(tuple(path)) in ("|", ">"):
            return line + nl, self.block_indent(line - 1) + in_line + 1
        return line + nl, (col + in_line) if nl == 0 else in_line + 1
