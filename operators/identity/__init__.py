"""Identity graph (ID-Mapping): pure core. See docs/identity.md.

* ``rules``: :class:`IdentityRules` (priority, limits, blocklist, dynamic overlay);
* ``graph``: the streaming, component-centric :func:`step`, control (split/block/unblock);
* ``batch``: :func:`resolve_batch`, the definition the streaming result must equal;
* ``quality``: pairwise precision / recall / F1 against a true partition.
The versioned state codec lives in ``state/identity.py``.
"""

from __future__ import annotations

from .batch import resolve_batch
from .graph import (
    Change,
    Combo,
    Component,
    ControlCommand,
    ControlError,
    Edge,
    Observation,
    Person,
    StepResult,
    apply_control,
    block,
    control,
    fast_path_hit,
    person_id,
    split,
    step,
    unblock,
)
from .quality import PairQuality, pairwise_quality
from .rules import IdentityRules, identifier, split_identifier

__all__ = [
    "Change",
    "Combo",
    "Component",
    "ControlCommand",
    "ControlError",
    "Edge",
    "IdentityRules",
    "Observation",
    "PairQuality",
    "Person",
    "StepResult",
    "apply_control",
    "block",
    "control",
    "fast_path_hit",
    "identifier",
    "pairwise_quality",
    "person_id",
    "resolve_batch",
    "split",
    "split_identifier",
    "step",
    "unblock",
]
