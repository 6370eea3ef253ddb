"""A/B experiments, pure core: GrowthBook-compatible assignment and the statistics engine.

No pyflink, no clients: the Flink operators and the CLI call these functions.

- :mod:`.assignment`: hash, bucket ranges, namespaces, :class:`Experiment`, :func:`assign`;
- :mod:`.stats`: :class:`VariantStats` (mergeable sufficient statistics) and the tests;
- :mod:`.sequential`: always-valid confidence sequences for live peeking;
- :mod:`.corrections`: Holm and Benjamini-Hochberg;
- :mod:`.report`: :func:`experiment_report`, :func:`format_table`, :func:`to_json`.
"""

from .assignment import Assignment, Experiment, assign, exclusion_reason
from .report import Report, experiment_report, format_table, to_json
from .stats import VariantStats

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
