"""The parser: tokens to a syntax tree (a Pratt parser over the grammar in the package docstring),
with the nesting bound."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from operators.expr.errors import _Text
from operators.expr.limits import MAX_DEPTH
from operators.expr.tokens import _Tok, _tokenize

_CMP_OPS = frozenset({"==", "!=", "<", "<=", ">", ">="})


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


def _check_depth(src: _Text, root: _Node) -> None:
    """Bound the tree depth (left-nested chains like ``1+1+1...`` are deep without parentheses)."""
    stack = [(root, 1)]
    while stack:
        node, d = stack.pop()
        if d > MAX_DEPTH:
            raise src.error(node.pos, f"expression nested deeper than {MAX_DEPTH} levels; simplify it")
        stack.extend((a, d + 1) for a in node.args)
