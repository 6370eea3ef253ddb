"""What every Python operator of the job does first on its worker (``share_interpreter``).

In thread mode (``python.execution-mode: thread``, the job's default) all Python operators of a
TaskManager run in ONE embedded CPython (pemja) and take turns on its GIL: the identity graph, the
tags, the rules, the store writer and the experiment UDFs. The per-record operators enter Python
once per record; when another operator is inside a longer Python call (a store batch), CPython lets
the waiting thread in only after the switch interval, 5 ms by default: a record that needs 0.1 ms of
Python then waits up to 5 ms. A short interval bounds that wait (docs/performance.md, "One
interpreter"); it is process-wide, so every operator sets the same value.
"""

from __future__ import annotations

import sys
from typing import Any

#: CPython's GIL switch interval for the job's workers, in seconds (CPython's default is 0.005).
SWITCH_INTERVAL_S = 0.0002


def share_interpreter() -> None:
    """Apply the worker settings of the shared interpreter (idempotent; call from ``open``)."""
    if sys.getswitchinterval() != SWITCH_INTERVAL_S:
        sys.setswitchinterval(SWITCH_INTERVAL_S)


def subtask_index(runtime_context: Any) -> int:
    """This subtask's index. In thread mode (Flink 2.x) ``get_index_of_this_subtask`` calls a Java method
    that moved to ``getTaskInfo()``; fall back to it."""
    try:
        return runtime_context.get_index_of_this_subtask()
    except AttributeError:
        return runtime_context._runtime_context.getTaskInfo().getIndexOfThisSubtask()
