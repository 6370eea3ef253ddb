"""Turning what the job has into what conditions compare (pure).

The person profile comes from :func:`operators.profile_windows.evaluate` (money as 2-decimal
strings such as ``"1234.50"``) or straight from the Redis hash (every value a string). The
expression language compares numbers with numbers only (``'1234.50' >= 1000`` is false, silently),
so :func:`rules_profile` gives conditions numbers: integer strings become ``int``, decimal strings
``Decimal``; other values (``timezone``, ...) stay as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

__all__ = ["rules_profile"]

_INT = re.compile(r"^-?[0-9]{1,18}$")
_DEC = re.compile(r"^-?[0-9]{1,18}\.[0-9]{1,18}$")


def rules_profile(profile: Mapping[str, Any] | None) -> dict[str, Any]:
    """The profile for ``evaluate``: numeric strings as numbers, everything else unchanged."""
    out: dict[str, Any] = {}
    for k, v in (profile or {}).items():
        if isinstance(v, str):
            if _INT.match(v):
                v = int(v)
            elif _DEC.match(v):
                v = Decimal(v)
        out[k] = v
    return out
