"""The tag records: a definition, the answer to a control message, a person's keyed state, and the
configuration error (a change of a person's tags, ``TagChange``, is a Kafka record: ``operators.messages``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from operators.expr import Expr, ExprError

TAG_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class TagConfigError(ExprError):
    """A tag file or definition is invalid; ``source:line:column`` points at the offending place."""


@dataclass(frozen=True)
class TagDefinition:
    """One tag: ``expr`` is true for the persons who carry it; ``enabled=False`` means paused."""

    name: str
    description: str
    expr: Expr
    version: int = 1
    enabled: bool = True

    def as_record(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "expression": self.expr.text,
                "version": self.version, "enabled": self.enabled}


@dataclass(frozen=True)
class ControlResult:
    """The answer to one control message, for ``zt.control.results``. ``reason`` is None when applied."""

    kind: str
    name: str
    version: int | None
    status: str  # "applied" | "rejected"
    reason: str | None = None
    tagset_version: int | None = None

    def as_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "version": self.version, "status": self.status,
                "reason": self.reason, "tagset_version": self.tagset_version}


@dataclass(frozen=True)
class TagState:
    """Keyed state of one person: the tags they carry and the tag set version that computed them."""

    tags: frozenset[str]
    tagset_version: int
