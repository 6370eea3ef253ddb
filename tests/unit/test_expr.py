"""The expression language (operators/expr/): grammar, semantics, errors, safety, next_change_ms."""

from __future__ import annotations

import pickle
import random
from decimal import Decimal, InvalidOperation

import pytest

from operators.expr import MAX_CHANGE_STEPS, MAX_DEPTH, MAX_LENGTH, ExprError, compile_expr

D = 86_400_000
H = 3_600_000
M = 60_000


def ev(text: str, env: dict | None = None, now: int = 0):
    return compile_expr(text).evaluate(env or {}, now)


def err(text: str, **kw) -> ExprError:
    with pytest.raises(ExprError) as info:
        compile_expr(text, **kw)
    return info.value


# ---------------------------------------------------------------------------------------------- grammar


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),  # left associative
        ("100 / 10 / 5", Decimal(2)),
        ("2 * 3 % 4", 2),  # (2*3) % 4
        ("-2 * 3", -6),
        ("- (2 + 3)", -5),
        ("+4", 4),
        ("1 + 2 > 2 and 3 < 4", True),
        ("true or true and false", True),  # and binds tighter than or
        ("(true or true) and false", False),
        ("not true or true", True),  # (not true) or true
        ("not (true or true)", False),
        ("not 1 > 2", True),  # not binds looser than comparisons
        ("not 1 in [1]", False),
        ("1 not in [2, 3]", True),
        ("[1, 2, 3,]", [1, 2, 3]),
        ("[]", []),
        ("'it''s'" if False else "'it\\'s'", "it's"),
        ('"double" + \'single\'', "doublesingle"),
        ("'tab\\there\\n\\\\'", "tab\there\n\\"),
        ("12.50", Decimal("12.50")),
        ("true", True),
        ("null is null", True),
        ("1 is not null", True),
        ("\n  1 +\n  2\n", 3),  # newlines are whitespace
    ],
)
def test_grammar_and_precedence(text, expected):
    got = ev(text)
    assert got == expected and type(got) is type(expected)


def test_dotted_names_read_nested_mappings_and_missing_is_null():
    env = {"event": {"type": "purchase", "props": {"price": Decimal("9.90"), "deep": {"x": 1}}}, "tags": {"vip"}}
    assert ev("event.type", env) == "purchase"
    assert ev("event.props.price * 2", env) == Decimal("19.80")
    assert ev("event.props.deep.x", env) == 1
    assert ev("event.props.nope", env) is None
    assert ev("event.type.more", env) is None  # stepping into a string: null
    assert ev("nothing.at.all", env) is None
    assert ev("'vip' in tags", env) is True


def test_expr_metadata():
    e = compile_expr("event.type == 'purchase' and days_since(profile.last_purchase) >= 30 and 'vip' in tags")
    assert e.names == frozenset({"event", "profile", "tags"})
    assert e.paths == frozenset({"event.type", "profile.last_purchase", "tags"})
    assert e.uses_time is True and e.kind == "bool"
    assert compile_expr("gmv > 3").uses_time is False
    assert compile_expr("now()").uses_time is True
    e2 = pickle.loads(pickle.dumps(e))
    assert e2 == e and e2.evaluate({"event": {"type": "purchase"}, "profile": {"last_purchase": 0}, "tags": ["vip"]}, 30 * D) is True


# ---------------------------------------------------------------------------------------------- operators and null


@pytest.mark.parametrize(
    "text, env, expected",
    [
        # arithmetic: exact decimals, int division exact, floor modulo, division by zero is null
        ("a + b", {"a": Decimal("0.10"), "b": Decimal("0.20")}, Decimal("0.30")),
        ("a + b", {"a": 1, "b": Decimal("0.5")}, Decimal("1.5")),
        ("a * 3", {"a": Decimal("1.10")}, Decimal("3.30")),
        ("7 / 2", {}, Decimal("3.5")),
        ("1 / 3", {}, Decimal("0.3333333333333333333333333333333333")),
        ("a / 0", {"a": 5}, None),
        ("a % 0", {"a": 5}, None),
        ("-7 % 3", {}, 2),
        ("7 % -3", {}, -2),
        ("a % 3", {"a": Decimal("-7.5")}, Decimal("1.5")),
        ("a + 1", {"a": 1.5}, 2.5),
        ("a + b", {"a": 1.5, "b": Decimal(1)}, 2.5),
        ("a + b", {"a": "ab", "b": "cd"}, "abcd"),
        ("a + 1", {"a": "1"}, None),  # no string/number coercion
        ("a + 1", {"a": True}, None),  # a bool is not a number
        ("a - 1", {}, None),
        ("-a", {"a": None}, None),
        ("-a", {"a": "x"}, None),
        # comparisons
        ("a == 1", {"a": 1}, True),
        ("a == 1", {"a": Decimal("1.00")}, True),
        ("a == 1", {"a": True}, False),  # True == 1 in Python, not here
        ("a == b", {"a": "1", "b": 1}, False),
        ("a != b", {"a": "1", "b": 1}, False),  # different kinds: false both ways
        ("a != 'x'", {"a": "y"}, True),
        ("a != 'x'", {"a": None}, False),
        ("a < b", {"a": "abc", "b": "abd"}, True),
        ("a < b", {"a": "abc", "b": 5}, False),
        ("a >= 2.5", {"a": 2.5}, True),
        ("a > 2", {"a": [3]}, False),
        ("a == b", {"a": [1, 2], "b": (1, 2)}, True),
        ("a == b", {"a": {1, 2}, "b": [2, 1]}, True),
        ("a == b", {"a": False, "b": False}, True),
        ("a == b", {"a": object(), "b": object()}, False),
        # null: comparisons false, is null, arithmetic null
        ("a > 1", {}, False),
        ("a <= 1", {}, False),
        ("a == b", {}, False),
        ("a != b", {}, False),
        ("not (a > 1)", {}, True),
        ("a is null", {}, True),
        ("a is not null", {"a": 0}, True),
        ("a + 1 is null", {}, True),
        # and / or / not: only true is true
        ("a and true", {"a": None}, False),
        ("a or true", {"a": None}, True),
        ("a or false", {"a": 1}, False),
        ("not a", {"a": None}, True),
        ("not a", {"a": "yes"}, True),
        ("a and b and c", {"a": True, "b": True, "c": True}, True),
        ("a and b and c", {"a": True, "b": True, "c": None}, False),
        ("a or b or c", {"c": True}, True),
        ("a or b or c", {}, False),
        # in / not in
        ("a in [1, 2, 3]", {"a": Decimal("2.0")}, True),
        ("a in [1, 2, 3]", {"a": "2"}, False),
        ("a in [1, 'x']", {"a": True}, False),
        ("a in [true]", {"a": 1}, False),
        ("a in [true]", {"a": True}, True),
        ("a in [x, 2]", {"a": 5, "x": 5}, True),
        ("a not in [1, 2]", {"a": 3}, True),
        ("a not in [1, 2]", {"a": None}, False),  # null: false both ways
        ("a in [1, 2]", {"a": None}, False),
        ("'vip' in tags", {"tags": frozenset({"vip", "new"})}, True),
        ("'vip' in tags", {"tags": ["new"]}, False),
        ("'vip' not in tags", {"tags": ["new"]}, True),
        ("'vip' not in tags", {}, False),
        ("'vip' in tags", {"tags": "a vip user"}, True),  # substring
        ("1 in tags", {"tags": {True}}, False),
        ("1 in tags", {"tags": {1.0}}, True),
        ("a in m", {"a": "k", "m": {"k": 1}}, True),  # mapping: keys
        ("a in tags", {"a": [1], "tags": [[1], [2]]}, True),
        ("a in tags", {"a": "x", "tags": 5}, False),
        ("a not in tags", {"a": "x", "tags": 5}, False),
        # the fused 'name op constant' closures
        ("m.k > 1", {"m": {"k": 2}}, True),
        ("m.k > 1", {"m": 5}, False),
        ("m.k > 1", {"m": {"k": Decimal("NaN")}}, False),
        ("a > 1", {"a": Decimal("sNaN")}, False),
        ("m.k == 'x'", {"m": {"k": "x"}}, True),
        ("m.k != 'x'", {"m": "x"}, False),
        ("m.k != 'x'", {"m": {"k": 1}}, False),
    ],
)
def test_operator_semantics(text, env, expected):
    got = compile_expr(text).evaluate(env, 0)
    assert got == expected and type(got) is type(expected), (text, env, got)


def test_fused_comparisons_agree_with_the_general_path():
    """``name op const`` has its own closures; ``coalesce(name) op const`` takes the general one."""
    values = [None, True, 0, 1, 2, -3, 1.5, float("nan"), Decimal(2), Decimal("NaN"), "1", "x", "y", [], {"k": 1}]
    consts = ["1", "1.5", "'x'"]
    checked = 0
    for op in ["==", "!=", "<", "<=", ">", ">="]:
        for c in consts:
            for name in ["a", "m.k"]:
                text = f"{name} {op} {c}"
                try:
                    fused = compile_expr(text)
                except ExprError:
                    continue  # ordering a string constant is fine, kinds known: none here
                general = compile_expr(f"coalesce({name}) {op} {c}")
                for v in values:
                    for env in ({"a": v}, {"m": {"k": v}}, {"m": v}):
                        assert fused.evaluate(env, 0) is general.evaluate(env, 0), (text, env)
                        checked += 1
    assert checked == 6 * 3 * 2 * len(values) * 3


# ---------------------------------------------------------------------------------------------- functions


@pytest.mark.parametrize(
    "text, env, now, expected",
    [
        ("days_since(t)", {"t": 0}, D - 1, 0),
        ("days_since(t)", {"t": 0}, D, 1),
        ("days_since(t)", {"t": 1000}, 30 * D + 999, 29),
        ("days_since(t)", {"t": 1000}, 30 * D + 1000, 30),
        ("days_since(t)", {"t": D}, 0, -1),  # future ts: floored, negative
        ("days_since(t)", {"t": D + 1}, 0, -2),
        ("days_since(t)", {"t": Decimal("0.5")}, D, 0),
        ("days_since(t)", {"t": 0.0}, 2 * D, 2),
        ("days_since(t)", {"t": None}, D, None),
        ("days_since(t)", {"t": "2024-01-01"}, D, None),
        ("hours_since(t)", {"t": 0}, 5 * H - 1, 4),
        ("minutes_since(t)", {"t": 0}, 90 * M, 90),
        ("now()", {}, 12345, 12345),
        ("now() - t", {"t": 45}, 100, 55),
        ("min(3, a, 1)", {"a": 2}, 0, 1),
        ("min(3, a)", {}, 0, 3),  # nulls ignored
        ("min(a, b)", {}, 0, None),
        ("max(a, 2, 7)", {"a": Decimal("7.5")}, 0, Decimal("7.5")),
        ("max(a, b)", {"a": "x", "b": 1}, 0, None),  # kinds differ
        ("max(a, b)", {"a": "x", "b": "y"}, 0, "y"),
        ("max(a)", {"a": [1]}, 0, None),
        ("abs(a)", {"a": -3}, 0, 3),
        ("abs(a)", {"a": Decimal("-1.5")}, 0, Decimal("1.5")),
        ("abs(a)", {"a": "x"}, 0, None),
        ("coalesce(a, b, 'default')", {"b": 0}, 0, 0),
        ("coalesce(a, b, 'default')", {}, 0, "default"),
        ("len(a)", {"a": "héllo"}, 0, 5),
        ("len(a)", {"a": {"x", "y"}}, 0, 2),
        ("len(a)", {"a": {"k": 1}}, 0, 1),
        ("len(a)", {"a": 5}, 0, None),
        ("lower(a)", {"a": "VIP"}, 0, "vip"),
        ("upper(a)", {"a": "vip"}, 0, "VIP"),
        ("upper(a)", {"a": 1}, 0, None),
        ("contains(a, 'ip')", {"a": "vip"}, 0, True),
        ("contains(a, 'vip')", {"a": ["vip", "new"]}, 0, True),
        ("contains(a, 'x')", {"a": None}, 0, False),
        ("startswith(a, 'cart')", {"a": "cart_abandoner"}, 0, True),
        ("startswith(a, 'cart')", {"a": None}, 0, False),
        ("endswith(a, 'er')", {"a": "cart_abandoner"}, 0, True),
        ("endswith(a, b)", {"a": "x", "b": 1}, 0, False),
    ],
)
def test_functions(text, env, now, expected):
    got = compile_expr(text).evaluate(env, now)
    assert got == expected and type(got) is type(expected), (text, env, got)


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "text, line, column, message",
    [
        ("", 5, 3, "empty expression"),
        ("a +", 5, 6, "unexpected end of expression: an operand is missing"),
        ("a = 1", 5, 5, "'=' is not an operator; use '==' to compare"),
        ("a && b", 5, 5, "use 'and' instead of '&'/'&&'"),
        ("a || b", 5, 5, "use 'or' instead of '|'/'||'"),
        ("!a", 5, 3, "use 'not' instead of '!' (and '!=' for 'not equal')"),
        ("a AND b", 5, 5, "keywords are lower case: write 'and', not 'AND'"),
        ("a < b < c", 5, 9, "comparisons cannot be chained: write 'a < b and b < c'"),
        ("a b", 5, 5, "unexpected 'b' after a complete expression (missing 'and'/'or' or an operator?)"),
        ("(a + 1", 5, 9, "expected ')' to close the '(' opened earlier, found end of expression"),
        ("[1, 2", 5, 8, "expected ',' or ']' in the list, found end of expression"),
        ("'abc", 5, 3, "unterminated string: close it with '"),
        ("'a\\qb'", 5, 5, "unknown escape '\\q' (known: \\\\ \\' \\\" \\n \\t)"),
        ("30d", 5, 3, "invalid number '30d': write plain digits, e.g. 1000 or 12.50 (no exponents, units or underscores)"),
        ("1e999999999", 5, 3, "invalid number '1e999999999': write plain digits, e.g. 1000 or 12.50 (no exponents, units or underscores)"),
        ("2 ** 1000000", 5, 5, "there is no power operator"),
        ("a $ b", 5, 5, "unexpected character '$'"),
        ("a # comment", 5, 5, "comments are not allowed inside an expression"),
        ("days_snce(t) > 3", 5, 3, "unknown function 'days_snce'; did you mean days_since() or hours_since()?"),
        ("days_since() > 3", 5, 3, "days_since() takes 1 argument, got 0: days_since(ts_ms)"),
        ("now(1)", 5, 3, "now() takes 0 arguments, got 1: now()"),
        ("contains('a')", 5, 3, "contains() takes 2 arguments, got 1: contains(haystack, needle)"),
        ("min()", 5, 3, "min() takes at least 1 argument, got 0: min(a, b, ...)"),
        ("days_since('2024-01-01') > 3", 5, 14, "days_since() takes a time in epoch milliseconds, got a string"),
        ("days_since(null)", 5, 14, "days_since() of null is always null; remove the null argument"),
        ("lower(5)", 5, 9, "lower() takes a string, got a number"),
        ("'a' + 1", 5, 7, "'+' adds two numbers or joins two strings, not a string and a number"),
        ("a - 'x'", 5, 5, "'-' needs numbers, got a string on the right"),
        ("true * 2", 5, 8, "'*' needs numbers, got a boolean on the left"),
        ("a + null", 5, 7, "arithmetic with null is always null; remove it or use coalesce(x, default)"),
        ("a == null", 5, 8, "a comparison with null is always false; write 'x is null'"),
        ("a != null", 5, 8, "a comparison with null is always false; write 'x is not null'"),
        ("'1' == 1", 5, 7, "'==' between a string and a number is always false"),
        ("true < false", 5, 8, "'<' orders numbers or strings, not a boolean"),
        ("not 5", 5, 7, "'not' needs a condition (true/false), got a number"),
        ("a and 'x'", 5, 9, "'and' needs a condition (true/false), got a string"),
        ("a in 5", 5, 8, "'in' needs a list, a set or a string on the right, got a number"),
        ("a in null", 5, 8, "'in' needs a list, a set or a string on the right, got null"),
        ("1 in 'abc'", 5, 5, "'in' a string looks for a string, got a number"),
        ("1 in [1, 'x']", 5, 12, "a string in the list can never equal a number on the left"),
        ("a in [1, null]", 5, 12, "null inside a list never matches 'in' (comparisons with null are false); remove it"),
        ("a is 5", 5, 8, "'is' must be followed by 'null' or 'not null', found '5'"),
        ("a.", 5, 5, "expected a field name after '.', found end of expression"),
        ("a.__class__", 5, 5, "name '__class__' is not allowed (names starting with '__' are reserved)"),
        ("__import__('os')", 5, 3, "name '__import__' is not allowed (names starting with '__' are reserved)"),
        ("max(1, 'a')", 5, 3, "max() compares numbers with numbers or strings with strings, got a number and a string"),
    ],
)
def test_compile_errors_have_exact_positions(text, line, column, message):
    e = err(text, source="tags.yaml", line=5, column=3)
    assert (e.source, e.line, e.column, e.message) == ("tags.yaml", line, column, message)


def test_error_rendering_with_caret_and_multiline_positions():
    e = err("a > 1 and\n    (b +)", source="cfg.yaml", line=10, column=7)
    assert (e.line, e.column, e.offset) == (11, 9, 18)
    assert str(e) == "cfg.yaml:11:9: unexpected ')': an operand (value, name or '(') is missing\n        (b +)\n            ^"
    first = err("a >", source="x", line=2, column=20)
    assert str(first) == "x:2:23: unexpected end of expression: an operand is missing\n    a >\n       ^"
    assert isinstance(first, ValueError)
    again = pickle.loads(pickle.dumps(first))
    assert (again.source, again.line, again.column, again.message, str(again)) == ("x", 2, 23, first.message, str(first))


def test_allowed_names_with_suggestions_and_kinds():
    names = {"gmv_90d": "num", "last_purchase": "num", "profile.gmv_90d": "num", "event": "map", "tags": "list"}
    ok = compile_expr("gmv_90d > 1 and profile.gmv_90d > 1 and event.props.x == 1 and 'a' in tags", names=names)
    assert ok.names == frozenset({"gmv_90d", "profile", "event", "tags"})
    e = err("days_since(last_purchase_ms) >= 30", names=names)
    assert (e.column, e.message) == (12, "unknown name 'last_purchase_ms'; did you mean 'last_purchase'?")
    e = err("profile.gmv_9d > 1", names=names)
    assert (e.column, e.message) == (9, "unknown name 'profile.gmv_9d'; did you mean 'profile.gmv_90d'?")
    e = err("zzz > 1", names=["a", "b"])
    assert e.message == "unknown name 'zzz'; known: a, b"
    e = err("gmv_90d == 'high'", names=names)
    assert (e.column, e.message) == (9, "'==' between a number and a string is always false")
    e = err("now > 3", names=names)
    assert e.message == "unknown name 'now'; now is a function: call it as now()"
    # negative control: without names the same texts compile (unknown names are null at run time)
    assert compile_expr("days_since(last_purchase_ms) >= 30").evaluate({}, 0) is False
    assert compile_expr("gmv_90d == 'high'").evaluate({"gmv_90d": 5}, 0) is False
    with pytest.raises(ValueError, match="kind must be one of"):
        compile_expr("a", names={"a": "number"})
    with pytest.raises(TypeError):
        compile_expr("a", names="a")


# ---------------------------------------------------------------------------------------------- safety


class _Sneaky:
    secret = "s3cr3t"

    def __getitem__(self, k):  # not a Mapping: must never be indexed either
        raise AssertionError("indexed")


def test_no_access_to_python_internals():
    env = {"obj": _Sneaky(), "d": {"__class__": "fine"}, "s": "abc"}
    assert ev("obj.secret", env) is None  # attributes are never read
    assert ev("s.upper", env) is None
    assert ev("obj == obj", env) is False  # opaque values compare false
    assert ev("obj + 1", env) is None
    for text in ["d.__class__", "__builtins__", "s.__len__", "x.__globals__"]:
        assert err(text).message.endswith("(names starting with '__' are reserved)")
    assert err("getattr(s, 'upper')").message.startswith("unknown function 'getattr'")
    assert err("s.upper()").message == "unexpected '(' after a complete expression (missing 'and'/'or' or an operator?)"
    assert err("[1][0]").message == "unexpected '[' after a complete expression (missing 'and'/'or' or an operator?)"
    assert err("lambda: 1").message == "unexpected character ':'"


def test_size_limits():
    assert ev("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH) == 1
    e = err("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1))
    assert e.message == f"expression nested deeper than {MAX_DEPTH} levels" and e.column == MAX_DEPTH + 2
    assert err("-" * 200 + "1").message == f"expression nested deeper than {MAX_DEPTH} levels"
    assert ev(" + ".join(["1"] * MAX_DEPTH)) == MAX_DEPTH
    assert err(" + ".join(["1"] * (MAX_DEPTH + 1))).message == f"expression nested deeper than {MAX_DEPTH} levels; simplify it"
    assert ev(" or ".join(["false"] * 1000) + " or true") is True  # and/or chains are flat, not deep
    assert ev("9" * 40) == int("9" * 40)
    assert err("9" * 41).message == "number literal longer than 40 characters"
    assert err("1" + " " * MAX_LENGTH).message == f"expression longer than {MAX_LENGTH} characters"
    # products stay bounded by the text: 40-digit literals multiplied within the length limit
    big = ev(" * ".join(["9" * 40] * 50))
    assert big == int("9" * 40) ** 50


def test_evaluate_never_raises_on_any_env():
    texts = [
        "a + b * c - a / b % c", "a > b and b >= c or not (a == c)", "a in b or a not in c", "min(a, b, c) < max(a, b)",
        "days_since(a) >= b", "hours_since(c) < a", "abs(a) + len(b)", "lower(a) == upper(b)", "contains(a, b) and startswith(c, a)",
        "coalesce(a, b, c) != 0", "a.b.c == a", "-a", "a is null or b is not null", "now() - a > b",
    ]
    values = [None, True, False, 0, 1, -1, 2**70, 1.5, float("nan"), float("inf"), Decimal("NaN"), Decimal("sNaN"), Decimal("1E+999998"),
              Decimal("-0.01"), "", "x", "1", [], [1, "x"], {1, 2}, frozenset({"a"}), {"b": {"c": 1}}, (1,), object(), b"bytes"]
    # the inputs do include values on which plain Python operations raise
    with pytest.raises(InvalidOperation):
        Decimal("sNaN") < 1  # noqa: B015
    with pytest.raises(TypeError):
        "x" < 1  # noqa: B015, PLR0133
    rng = random.Random(7)
    for text in texts:
        e = compile_expr(text)
        for _ in range(400):
            env = {k: rng.choice(values) for k in "abc"}
            e.evaluate(env, rng.choice([0, 10**13, -5]))
            e.next_change_ms(env, rng.choice([0, 10**13]))


# ---------------------------------------------------------------------------------------------- next_change_ms


TIME_EXPRS = [
    "days_since(t) >= 30",
    "days_since(t) > 2",
    "days_since(t) == 3",
    "days_since(t) != 3",
    "days_since(t) < 5",
    "3 <= days_since(t)",
    "hours_since(t) >= 36 and days_since(t) < 3",
    "not (minutes_since(t) <= 1500)",
    "days_since(a) >= 2 or days_since(b) >= 4",
    "30 - days_since(t) <= 27",
    "days_since(t) * 2 + 1 > 6",
    "-days_since(t) < -2",
    "max(days_since(a), days_since(b)) >= 3",
    "min(days_since(a), 2) == 2",
    "days_since(t) / 2 >= 1.5",
    "hours_since(t) >= 30.5",
    "days_since(t) >= x",
    "days_since(d) >= 2",
    "now() >= 300000000",
    "now() > c",
    "days_since(t) % 2 == 0 and x > 1",
    "abs(days_since(t) - 3) >= 1",
    "days_since(a) > days_since(b)",
    "days_since(t)",
    "hours_since(t) >= 40 and x is null",
    "x > 1",
]


def _truth(e, env, now, horizon, step=M):
    """Brute force: the first ms after ``now`` (within ``horizon``) where the value differs."""
    v0 = e.evaluate(env, now)
    t = now
    while t < now + horizon:
        nxt = t + step
        v = e.evaluate(env, nxt)
        if v != v0 or type(v) is not type(v0):
            for tt in range(t + 1, nxt + 1):
                v = e.evaluate(env, tt)
                if v != v0 or type(v) is not type(v0):
                    return tt
        t = nxt
    return None


def test_next_change_is_exact_against_brute_force():
    rng = random.Random(3)
    horizon = 12 * D
    checked = 0
    for text in TIME_EXPRS:
        e = compile_expr(text)
        for _ in range(12):
            env = {
                "t": rng.randrange(0, 3 * D), "a": rng.randrange(0, 3 * D), "b": rng.randrange(0, 5 * D),
                "x": rng.choice([None, 1, 2, 3, 4, Decimal("2.5")]), "d": Decimal(rng.randrange(0, 3 * D * 1000)) / 1000,
                "c": rng.randrange(0, 5 * D),
            }
            now = rng.randrange(0, 6 * D)
            truth = _truth(e, env, now, horizon)
            got = e.next_change_ms(env, now)
            if truth is None:
                assert got is None or got >= now + horizon, (text, env, now, got)
            else:
                assert got == truth, (text, env, now, got, truth)
            checked += 1
    assert checked == len(TIME_EXPRS) * 12


def test_next_change_exact_at_the_boundary_and_none_when_settled():
    e = compile_expr("days_since(last_purchase) >= 30")
    env = {"last_purchase": 1_700_000_000_123}
    flip = 1_700_000_000_123 + 30 * D
    assert e.next_change_ms(env, 1_700_000_000_123) == flip
    assert e.evaluate(env, flip - 1) is False and e.evaluate(env, flip) is True
    assert e.next_change_ms(env, flip - 1) == flip
    assert e.next_change_ms(env, flip) is None  # true for ever after
    assert e.next_change_ms({}, 0) is None  # null never changes
    assert e.next_change_ms({"last_purchase": "x"}, 0) is None
    assert compile_expr("x > 1").next_change_ms({"x": 5}, 0) is None  # no time: never
    # far in the future and decimal thresholds
    assert compile_expr("days_since(t) >= 36500").next_change_ms({"t": 0}, 0) == 36500 * D
    assert compile_expr("days_since(t) > 2.5").next_change_ms({"t": 0}, 0) == 3 * D
    assert compile_expr("hours_since(t) >= 1.5").next_change_ms({"t": 0}, 0) == 2 * H
    assert compile_expr("now() >= 1000.5").next_change_ms({}, 0) == 1001
    assert compile_expr("days_since(t) - 1 >= 29").next_change_ms({"t": 7}, 0) == 7 + 30 * D  # binary search path
    assert compile_expr("days_since(t) >= 30").next_change_ms({"t": Decimal("0.5")}, 0) == 30 * D + 1


def test_next_change_naive_schedules_are_wrong():
    """Negative controls: 'wake me at the next day boundary' or 'now + 30 days' miss the flip."""
    e = compile_expr("days_since(t) >= 30")
    env = {"t": 5 * H + 17}
    now = 10 * D
    exact = e.next_change_ms(env, now)
    naive_day_boundary = (now // D + 1) * D
    naive_plus_30 = now + 30 * D
    assert exact == 5 * H + 17 + 30 * D
    assert e.evaluate(env, exact) is True and e.evaluate(env, exact - 1) is False
    for naive in (naive_day_boundary, naive_plus_30):
        assert naive != exact
        assert e.evaluate(env, naive) is e.evaluate(env, naive - 1)  # nothing happens there


def test_next_change_fallback_is_a_safe_earlier_bound():
    # days_since(t) % 7 == 0 is not monotone; with the other operand false it never changes, but the
    # search only walks MAX_CHANGE_STEPS day steps and returns the last one: earlier, never later.
    e = compile_expr("days_since(t) % 7 == 0 and x")
    env = {"t": 0, "x": False}
    assert e.next_change_ms(env, 0) == MAX_CHANGE_STEPS * D
    assert all(e.evaluate(env, k * D) is False for k in range(MAX_CHANGE_STEPS + 8))
    env_true = {"t": 0, "x": True}
    assert e.next_change_ms(env_true, 0) == D  # true at day 0, false from day 1
    assert e.next_change_ms(env_true, D) == 7 * D
