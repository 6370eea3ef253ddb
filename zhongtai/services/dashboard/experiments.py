"""Experiment results for the dashboard from the per-variant statistics the job keeps in Redis.

Layout and decoding are connectors/redis_experiments.py's: ``{prefix}:exp:{key}:{variant}`` hashes
(``units, converted, rev_sum, rev_sumsq, cov_sum, cov_sumsq, cov_rev_sum``, read with its
``stats_from_hash``) and the meta hash ``{prefix}:exp:{key}`` whose ``definition`` field is the
definition's JSON. The dashboard reads every experiment in one pipelined round trip
(zhongtai/services/dashboard/reader.py) and reports here; the numbers come from
operators/experiments/report.py, so ``zhongtai experiment report`` and the dashboard agree.

Without a usable meta hash the variations seen in Redis are reported with equal weights,
``control`` first when there is one, else in sorted order (``source: "observed"``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectors.redis_experiments import stats_from_hash
from operators.experiments.assignment import Experiment
from operators.experiments.definitions import DefinitionError, definition_from_mapping
from operators.experiments.report import experiment_report, to_json
from operators.experiments.sequential import DEFAULT_TARGET_N


@dataclass(frozen=True, slots=True)
class ReportSettings:
    """The statistics settings of the report (``settings.experiments``)."""

    alpha: float = 0.05
    correction: str = "holm"
    target_n: float = DEFAULT_TARGET_N


DEFAULT_REPORT = ReportSettings()


def _experiment(key: str, meta: Mapping[str, str], seen: list[str]) -> tuple[Experiment, str]:
    if meta.get("definition"):
        d = definition_from_mapping(json.loads(meta["definition"]), source=f"experiment {key} meta hash")
        return d.experiment, "meta"
    if meta.get("variations"):
        return Experiment(key=key, variations=tuple(json.loads(meta["variations"]))), "meta"
    ordered = (["control"] if "control" in seen else []) + sorted(v for v in seen if v != "control")
    return Experiment(key=key, variations=tuple(ordered)), "observed"


def report_json(
    key: str,
    meta: Mapping[str, str],
    variants: Mapping[str, Mapping[str, str]],
    cfg: ReportSettings = DEFAULT_REPORT,
) -> dict[str, Any]:
    """The report of experiment ``key`` as JSON (``operators.experiments.report.to_json``) plus
    ``source`` (``meta`` or ``observed``). An experiment that cannot be reported (a bad meta hash,
    fewer than two variations, statistics for a variation the definition lacks) gives
    ``{"experiment": key, "error": ..., "source": ...}`` instead of raising."""
    source = "meta" if meta else "observed"
    try:
        definition, source = _experiment(key, meta, sorted(variants))
        stats = {v: stats_from_hash(dict(h)) for v, h in variants.items()}
        report = experiment_report(
            definition, stats, cfg.alpha, correction=cfg.correction, target_n=cfg.target_n
        )
    except (ValueError, DefinitionError) as e:
        return {"experiment": key, "error": str(e), "source": source}
    return {**to_json(report), "source": source}
