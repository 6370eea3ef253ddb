"""What a tag expression reads: the profile fields (bare and under ``profile.``) with money as
``Decimal``, and the names and kinds expressions are compiled against."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from operators import profile_windows


def _profile_fields() -> tuple[frozenset[str], frozenset[str]]:
    """The fields profile_windows.evaluate really returns (all of them, and the money ones)."""
    sample = profile_windows.evaluate({"first_seen": "1", "last_seen": "1", "last_purchase": "1"})
    return frozenset(sample), frozenset(k for k, v in sample.items() if isinstance(v, str))


#: Profile fields an expression may read (bare or as ``profile.<field>``).
PROFILE_FIELDS, MONEY_FIELDS = _profile_fields()
#: The names (with kinds) a tag expression is compiled against: the profile fields, and ``traits.<name>`` for the
#: schema's computed traits (docs/schema.md; a trait the schema does not declare reads as null).
TAG_NAMES: Mapping[str, str] = {**{f: "num" for f in PROFILE_FIELDS}, **{f"profile.{f}": "num" for f in PROFILE_FIELDS},
                                "traits": "map"}

_KIND_WORDS = {"num": "a number", "str": "a string", "list": "a list", "map": "a mapping", "null": "null"}


def profile_env(profile: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluation environment of a profile: its fields, money as ``Decimal``, and ``profile``.

    A money value that does not parse becomes null (so comparisons with it are false).
    """
    env = dict(profile)
    for f in MONEY_FIELDS:
        v = env.get(f)
        if isinstance(v, str):
            try:
                env[f] = Decimal(v)
            except InvalidOperation:
                env[f] = None
    env["profile"] = dict(env)
    return env
