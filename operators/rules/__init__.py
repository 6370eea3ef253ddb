"""The strategy engine (pure; never imports pyflink): rules, patterns, journeys, guard rails.

Modules: ``model`` (frozen definitions and inputs), ``schema`` (JSON Schema, validation with
file/line/path errors, parsing), ``registry`` (versioned :class:`RuleSet`, trigger indexes, control
messages), ``patterns`` and ``journeys`` (event-time state machines), ``guards`` (consent, quiet
hours, frequency caps, groups, campaign budgets), ``prefilter`` (tags a condition needs),
``inputs`` (the profile as conditions compare it), ``engine`` (``evaluate`` per person) and
``attribution`` (purchases attributed to the delivered action that preceded them).
docs/rules.md describes the file format, the action record and the exact semantics.
"""

from operators.messages import Action
from operators.rules.engine import EngineResult, PersonState, Suppressed, action_id, evaluate
from operators.rules.model import Event, TagChange
from operators.rules.registry import ControlResult, RuleSet, apply_control
from operators.rules.schema import DefinitionError, load_file, load_text

__all__ = [
    "Action", "ControlResult", "DefinitionError", "EngineResult", "Event", "PersonState", "RuleSet",
    "Suppressed", "TagChange", "action_id", "apply_control", "evaluate", "load_file", "load_text",
]
