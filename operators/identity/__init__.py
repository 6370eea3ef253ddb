"""Identity graph (ID-Mapping): pure core. See docs/identity.md.

* ``rules``: :class:`IdentityRules` (priority, limits, blocklist, dynamic overlay);
* ``model``: the records (:class:`Observation`, :class:`Component`, :class:`Change`, :class:`Edge`,
  :class:`StepResult`) and the stable person / component ids;
* ``graph``: the streaming, component-centric :func:`step` (its docstring states the semantics);
* ``engine``: the resolution in canonical order that ``step`` and control run;
* ``control``: split / block / unblock messages and their re-resolution;
* ``in_memory``: :class:`InMemoryGraph`, the state handling over dicts (tests, bench);
* ``batch``: :func:`resolve_batch`, the definition the streaming result must equal;
* ``quality``: pairwise precision / recall / F1 against a true partition.
The versioned state codec lives in ``state/identity.py``.
"""

from __future__ import annotations

from .batch import resolve_batch
from .control import ControlCommand, ControlError, apply_control, block, control, split, unblock
from .graph import fast_path_hit, step
from .model import Change, Combo, Component, Edge, Observation, Person, StepResult, person_id
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
