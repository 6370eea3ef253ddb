"""Keyed and broadcast state of the strategy engine in the event job (``pipelines.person``).

The engine's per-person state (consent, sends, held actions, patterns, journeys) is part of the person
state of the person operator (``state.person``), with the profile and the tags. Declared here (one
function per descriptor; pyflink is imported lazily so this module loads without it):

* ``rules-budget-v1`` ValueState BIGINT, keyed by campaign: actions granted so far (``budget_step``'s
  ``BudgetState.spent``). One number per campaign; never expires (a budget is a lifetime total).
* ``rules-control-log-v1`` broadcast MapState STRING → STRING: every control message that changed
  the rule set, under its sequence number (``%010d``), as JSON. The operator rebuilds the running
  ``RuleSet`` after a restore by replaying it over the rule set the job was started with. Bounded by
  the number of accepted changes (a few per day in practice; republishing a file is one batch).
"""

from __future__ import annotations

from typing import Any

BUDGET = "rules-budget-v1"
CONTROL_LOG = "rules-control-log-v1"


# ------------------------------------------------------------------------------------------ descriptors


def budget_state() -> Any:
    from pyflink.common import Types
    from pyflink.datastream.state import ValueStateDescriptor

    return ValueStateDescriptor(BUDGET, Types.LONG())


def control_log_state() -> Any:
    from pyflink.common import Types
    from pyflink.datastream.state import MapStateDescriptor

    return MapStateDescriptor(CONTROL_LOG, Types.STRING(), Types.STRING())
