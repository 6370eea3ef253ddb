"""The identity graph's state handling over dicts (what the Flink operator does with ``step``): the
reference driver for tests and the bench."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .control import apply_control, control
from .graph import step
from .model import Component, Observation, StepResult
from .rules import IdentityRules


class InMemoryGraph:
    """What the Flink operator does with :func:`step`, over dicts: the reference driver for tests/bench.

    State: ``components`` (cid → Component; in Flink one codec blob per cid in MapState), ``index``
    (identifier → cid), ``mapping`` (identifier → person id: what Redis ``zt:id:*`` holds) and the
    current ``rules`` (overlay changed by control messages).
    """

    def __init__(self, rules: IdentityRules) -> None:
        self.rules = rules
        self.components: dict[str, Component] = {}
        self.index: dict[str, str] = {}
        self.mapping: dict[str, str] = {}

    def observe(self, obs: Observation) -> StepResult:
        cids = {c for t, v in obs.ids if (c := self.index.get(f"{t}:{v}")) is not None}
        res = step({c: self.components[c] for c in cids}, obs, self.rules)
        self.apply(res)
        return res

    def control(self, message: Mapping[str, Any], ts_ms: int, cause: str = "") -> StepResult:
        cmd = apply_control(message, self.rules)
        cid = self.index.get(cmd.identifier)
        comps = {cid: self.components[cid]} if cid is not None else {}
        self.rules, res = control(comps, cmd, self.rules, ts_ms, cause)
        self.apply(res)
        return res

    def apply(self, res: StepResult) -> None:
        for cid in res.deletes:
            del self.components[cid]
        self.components.update(res.upserts)
        self.index.update(res.index)
        for i, p in res.mappings.items():
            if p is None:
                self.mapping.pop(i, None)
            else:
                self.mapping[i] = p
