"""Keyed state of the experiments' control operator (``pipelines.experiments``): declaration and codec.

* ``experiments-registry-v2`` ValueState STRING, one key: the ``ExperimentRegistry`` after the last control
  message (``operators.experiments.control.registry_to_bytes``: a version byte + JSON), stored as a
  latin-1 string (a bijection of the bytes; byte-array values fail to snapshot in thread mode). Bounded
  by the running experiments. No TTL: the definitions live as long as the job. v1 was the same bytes as
  a pickled byte array (``zt-exp-registry-v1``); v2 needs no pickle.
"""

from __future__ import annotations

from typing import Any

from operators.experiments.control import registry_from_bytes, registry_to_bytes
from operators.experiments.definitions import ExperimentRegistry

REGISTRY = "experiments-registry-v2"


def encode_registry(reg: ExperimentRegistry) -> str:
    return registry_to_bytes(reg).decode("latin-1")


def decode_registry(raw: str) -> ExperimentRegistry:
    return registry_from_bytes(raw.encode("latin-1"))


def registry_state() -> Any:
    from pyflink.common import Types
    from pyflink.datastream.state import ValueStateDescriptor

    return ValueStateDescriptor(REGISTRY, Types.STRING())
