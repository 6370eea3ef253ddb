"""Loading a tag file (``config/tags.yaml``): validation with ``file:line:column`` errors that point
into the YAML (block scalars and quoted strings included)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from operators.expr import Expr, ExprError, compile_expr
from operators.tags.fields import _KIND_WORDS, TAG_NAMES
from operators.tags.records import TAG_NAME_RE, TagConfigError, TagDefinition

TAGS_FILE = Path(__file__).resolve().parents[2] / "config" / "tags.yaml"

_TAG_KEYS = {"name": "str", "description": "str", "expression": "str", "enabled": "bool", "version": "int"}
_REQUIRED = ("name", "description", "expression")
_FILE_KEYS = {"version": "int", "tags": "seq"}
_YAML_TAGS = {"str": "tag:yaml.org,2002:str", "bool": "tag:yaml.org,2002:bool", "int": "tag:yaml.org,2002:int"}


def _position(text: str, index: int) -> tuple[int, int, str]:
    """1-based line and column of ``index`` in ``text``, and that line's text."""
    start = text.rfind("\n", 0, index) + 1
    end = text.find("\n", index)
    return text.count("\n", 0, index) + 1, index - start + 1, text[start : end if end >= 0 else len(text)]


def _error_at(text: str, source: str, index: int, message: str) -> TagConfigError:
    line, column, snippet = _position(text, index)
    return TagConfigError(message, source=source, line=line, column=column, snippet=snippet.expandtabs(1), caret=column - 1)


def _node_error(text: str, source: str, node: yaml.Node, message: str) -> TagConfigError:
    return _error_at(text, source, node.start_mark.index, message)


def _value_offsets(text: str, node: yaml.ScalarNode) -> list[int]:
    """For each offset of the scalar's value (and its end), the index of that character in ``text``.

    YAML folding, indentation and quoting only change whitespace and escapes, so the value's
    non-blank characters appear in the source in order; they are aligned one by one.
    """
    start, end = node.start_mark.index, node.end_mark.index
    style = node.style
    if style in ("|", ">"):
        nl = text.find("\n", start)
        start = end if nl < 0 else nl + 1
    elif style in ("'", '"'):
        start += 1
    value: str = node.value
    out: list[int] = []
    r = start
    last = start
    for ch in value:
        if ch.isspace():
            out.append(r)
            continue
        while r < end and text[r] != ch:
            r += 1
        out.append(r if r < end else last)
        last = r + 1
        r += 1
        if style == "'" and ch == "'" and r < end and text[r] == "'":
            r += 1
    out.append(last)
    return out


def _compile_node(text: str, source: str, node: yaml.ScalarNode) -> Expr:
    try:
        return compile_expr(node.value, source=source, names=TAG_NAMES)
    except ExprError as e:
        index = _value_offsets(text, node)[min(e.offset, len(node.value))]
        raise _error_at(text, source, index, e.message) from None


def _scalar(text: str, source: str, node: yaml.Node, kind: str, where: str) -> Any:
    if not isinstance(node, yaml.ScalarNode) or node.tag != _YAML_TAGS[kind]:
        want = {"str": "text", "bool": "true or false", "int": "an integer"}[kind]
        raise _node_error(text, source, node, f"{where} must be {want}")
    if kind == "str":
        return node.value
    return yaml.SafeLoader(text).construct_object(node)  # the usual YAML 1.1 int / bool rules


def _mapping(text: str, source: str, node: yaml.Node, allowed: Mapping[str, str], where: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise _node_error(text, source, node, f"{where} must be a mapping with keys {', '.join(allowed)}")
    seen: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for k, v in node.value:
        if not isinstance(k, yaml.ScalarNode) or k.value not in allowed:
            key = k.value if isinstance(k, yaml.ScalarNode) else "?"
            raise _node_error(text, source, k, f"unknown key {key!r} in {where}; allowed: {', '.join(allowed)}")
        if k.value in seen:
            raise _node_error(text, source, k, f"duplicate key {k.value!r} in {where} (first at line {seen[k.value][0].start_mark.line + 1})")
        seen[k.value] = (k, v)
    return seen


def _parse_tags_yaml(text: str, source: str) -> tuple[int, list[TagDefinition]]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        index = mark.index if mark is not None else 0
        raise _error_at(text, source, index, f"invalid YAML: {e.problem or e.context}") from None
    if root is None:
        raise TagConfigError("empty tag file: expected 'tags:' with a list of tag definitions", source=source)
    top = _mapping(text, source, root, _FILE_KEYS, "the tag file")
    version = 1
    if "version" in top:
        version = _scalar(text, source, top["version"][1], "int", "'version'")
        if version < 1:
            raise _node_error(text, source, top["version"][1], "'version' must be at least 1")
    if "tags" not in top:
        raise _node_error(text, source, root, "missing key 'tags' (a list of tag definitions)")
    seq = top["tags"][1]
    if not isinstance(seq, yaml.SequenceNode):
        raise _node_error(text, source, seq, "'tags' must be a list of tag definitions ('- name: ...')")
    defs: list[TagDefinition] = []
    first_line: dict[str, int] = {}
    for item in seq.value:
        fields = _mapping(text, source, item, _TAG_KEYS, "a tag definition")
        for key in _REQUIRED:
            if key not in fields:
                raise _node_error(text, source, item, f"tag definition without {key!r}")
        name_node = fields["name"][1]
        name = _scalar(text, source, name_node, "str", "'name'")
        if not TAG_NAME_RE.match(name):
            raise _node_error(text, source, name_node, f"tag name {name!r} must match {TAG_NAME_RE.pattern} (lower case, digits, '_')")
        if name in first_line:
            raise _node_error(text, source, name_node, f"duplicate tag {name!r} (first defined at line {first_line[name]})")
        first_line[name] = name_node.start_mark.line + 1
        description = _scalar(text, source, fields["description"][1], "str", f"'description' of {name}")
        if not description.strip():
            raise _node_error(text, source, fields["description"][1], f"'description' of {name} is empty")
        expr_node = fields["expression"][1]
        _scalar(text, source, expr_node, "str", f"'expression' of {name}")
        expr = _compile_node(text, source, expr_node)
        if expr.kind not in ("bool", "any"):
            raise _node_error(text, source, expr_node, f"'expression' of {name} must be a condition (true/false), it gives {_KIND_WORDS.get(expr.kind, expr.kind)}")
        enabled = _scalar(text, source, fields["enabled"][1], "bool", f"'enabled' of {name}") if "enabled" in fields else True
        tag_version = 1
        if "version" in fields:
            tag_version = _scalar(text, source, fields["version"][1], "int", f"'version' of {name}")
            if tag_version < 1:
                raise _node_error(text, source, fields["version"][1], f"'version' of {name} must be at least 1")
        defs.append(TagDefinition(name, description, expr, tag_version, enabled))
    return version, defs
