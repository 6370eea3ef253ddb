"""A/B experiments, pure core: GrowthBook-compatible assignment and the statistics engine.

No pyflink, no clients: the Flink operators and the CLI call these functions.

- :mod:`.assignment`: hash, bucket ranges, namespaces, :class:`Experiment`, :func:`assign`;
- :mod:`.stats`: :class:`VariantStats` (mergeable sufficient statistics) and the tests;
- :mod:`.sequential`: always-valid confidence sequences for live peeking;
- :mod:`.corrections`: Holm and Benjamini-Hochberg;
- :mod:`.report`: :func:`experiment_report`, :func:`format_table`, :func:`to_json`.
"""

from importlib import import_module
from typing import Any

from .assignment import Assignment, Experiment, assign, exclusion_reason

# The statistics modules import scipy: loaded on first use only, so that the job's control operator
# (thread mode, ``operators.experiments.control``) never imports scipy inside Flink (it deadlocked
# the embedded interpreters' start-up).
_LAZY = {"Report": ".report", "experiment_report": ".report", "format_table": ".report", "to_json": ".report",
         "VariantStats": ".stats"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "Assignment",
    "Experiment",
    "Report",
    "VariantStats",
    "assign",
    "exclusion_reason",
    "experiment_report",
    "format_table",
    "to_json",
]
