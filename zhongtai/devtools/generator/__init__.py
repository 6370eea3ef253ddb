"""Synthetic clickstream with ground truth.

* :func:`generate` — the seeded, deterministic stream of Kafka :class:`Record` s (``stream.py``);
* :class:`Oracle` / :func:`expected` — an independent reference implementation of
  docs/semantics.md that computes what the job must write (``oracle.py``);
* ``zhongtai.devtools.generator.produce.produce`` — writes a stream to Kafka and the oracle's answer to
  ``<run_dir>/expected/<name>.json`` (imported from its module: it needs confluent-kafka).
"""

from __future__ import annotations

from .model import DLQ_REASONS, FAULT_CLASSES, KINDS, GeneratorConfig, Record, fault_rates
from .oracle import Oracle, expected
from .stream import generate

__all__ = [
    "DLQ_REASONS",
    "FAULT_CLASSES",
    "KINDS",
    "GeneratorConfig",
    "Oracle",
    "Record",
    "expected",
    "fault_rates",
    "generate",
]
