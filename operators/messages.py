"""The records the job and the services exchange through Kafka: one definition each, with its JSON (pure).

* :class:`Action` (``zt.actions.<channel>``): the strategy engine writes ``Action.to_json()``; the channel
  workers read it back with :meth:`Action.decode`, the campaign budget step and the engine's state codec
  with :meth:`Action.from_json`. The field list is docs/rules.md's "Records".
* :class:`DeliveryReceipt` (``zt.delivery``, key = person id): a worker writes one per settled action;
  the job reads the delivered ones back for attribution (``operators.rules.attribution.delivery_from``).
* :class:`TagChange` (``zt.tags.changes``): a tag added to or removed from a person, by the tags stage.

A reader takes what the writer writes field by field (tests/unit/test_messages.py); a message that is not
such a JSON object raises :class:`MessageDecodeError` naming the field, and the reader dead-letters it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["Action", "ActionDecodeError", "DeliveryReceipt", "MessageDecodeError", "TagChange"]


class MessageDecodeError(ValueError):
    """A message is not the JSON object its writer writes; the reader dead-letters it with this reason."""


class ActionDecodeError(MessageDecodeError):
    """An action message is not the JSON object the rules engine writes; it goes to the DLQ."""


def _int(d: Mapping[str, Any], name: str, what: str) -> int:
    """``d[name]`` as an int (missing or null: 0); raises naming the field and the message."""
    v = d.get(name)
    if v is None:
        return 0
    try:
        return int(v)
    except (TypeError, ValueError) as e:
        raise ActionDecodeError(f"bad field type {name} ({what}): {e}") from None


@dataclass(frozen=True, slots=True)
class Action:
    """One marketing action for ``zt.actions.<channel>`` (JSON via :meth:`to_json`; docs/rules.md).

    ``ts_ms`` is the event time the action is due (the trigger's, or the end of quiet hours for a held
    action); ``trigger`` says what caused it. ``campaign`` is None when the rule names none.
    ``budget_max`` is set when the rule has a campaign budget: the action must pass
    :func:`~operators.rules.guards.budget_step` first (the workers ignore it).
    """

    action_id: str
    rule_id: str
    rule_version: int
    person_id: str
    channel: str
    template: str
    params: Mapping[str, Any] = field(default_factory=dict)
    campaign: str | None = None
    trigger: Mapping[str, Any] = field(default_factory=dict)
    ts_ms: int = 0
    priority: int = 0
    budget_max: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"action_id": self.action_id, "rule_id": self.rule_id, "rule_version": self.rule_version,
                "person_id": self.person_id, "channel": self.channel, "template": self.template,
                "params": dict(self.params), "campaign": self.campaign, "trigger": dict(self.trigger),
                "ts_ms": self.ts_ms, "priority": self.priority, "budget_max": self.budget_max}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Action:
        """The action of a JSON object as :meth:`to_json` writes it; raises ``ActionDecodeError``.

        ``action_id`` (1-128 characters), ``person_id``, ``channel`` and ``template`` are required;
        ``rule_id``/``rule_version``/``ts_ms``/``priority`` default to ""/0, ``params``/``trigger`` to {}.
        """
        aid = d.get("action_id")
        if not isinstance(aid, str) or not (1 <= len(aid) <= 128):
            raise ActionDecodeError("action_id missing or not a string of 1-128 characters")
        for name in ("person_id", "channel", "template"):
            if not isinstance(d.get(name), str) or not d[name]:
                raise ActionDecodeError(f"{name} missing or empty (action {aid})")
        params = {} if d.get("params") is None else d["params"]
        trigger = {} if d.get("trigger") is None else d["trigger"]
        if not isinstance(params, Mapping) or not isinstance(trigger, Mapping):
            raise ActionDecodeError(f"params and trigger must be JSON objects (action {aid})")
        what = f"action {aid}"
        campaign, budget_max = d.get("campaign"), d.get("budget_max")
        return cls(
            action_id=aid, rule_id=str(d.get("rule_id") or ""), rule_version=_int(d, "rule_version", what),
            person_id=d["person_id"], channel=d["channel"], template=d["template"], params=dict(params),
            campaign=None if campaign is None else str(campaign), trigger=dict(trigger),
            ts_ms=_int(d, "ts_ms", what), priority=_int(d, "priority", what),
            budget_max=None if budget_max is None else _int(d, "budget_max", what),
        )

    @classmethod
    def decode(cls, raw: bytes | None) -> Action:
        """Parse and validate one Kafka message value; raises ``ActionDecodeError`` with the reason."""
        if not raw:
            raise ActionDecodeError("empty message value")
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise ActionDecodeError(f"not JSON: {e}") from None
        if not isinstance(d, dict):
            raise ActionDecodeError("not a JSON object")
        return cls.from_json(d)


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    """What a channel worker did with one action, for ``zt.delivery`` (exactly once per action).

    ``ts_ms`` is when it was settled (the worker's clock); ``provider_id`` the provider's message id
    (delivered only); ``reason`` why it failed or was suppressed. ``rule_id`` and ``campaign`` are the
    action's, for attribution.
    """

    action_id: str
    person_id: str
    channel: str
    status: str  # "delivered" | "failed" | "suppressed": the ledger's terminal states
    attempts: int
    provider_id: str | None
    ts_ms: int
    reason: str | None
    rule_id: str
    campaign: str | None

    def to_json(self) -> dict[str, Any]:
        return {"action_id": self.action_id, "person_id": self.person_id, "channel": self.channel,
                "status": self.status, "attempts": self.attempts, "provider_id": self.provider_id,
                "ts_ms": self.ts_ms, "reason": self.reason, "rule_id": self.rule_id, "campaign": self.campaign}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DeliveryReceipt:
        """The receipt of a JSON object as :meth:`to_json` writes it; raises ``MessageDecodeError``.

        ``action_id`` and ``status`` must be strings and ``ts_ms`` an integer; the other fields default
        (text to "", ``attempts`` to 0, the optional ones to None).
        """
        aid, status, ts = d.get("action_id"), d.get("status"), d.get("ts_ms")
        if not isinstance(aid, str):
            raise MessageDecodeError("receipt without a string action_id")
        if not isinstance(status, str):
            raise MessageDecodeError(f"receipt of action {aid}: status missing or not a string")
        if not isinstance(ts, int) or isinstance(ts, bool):
            raise MessageDecodeError(f"receipt of action {aid}: ts_ms missing or not an integer")
        attempts = d.get("attempts") or 0
        if not isinstance(attempts, int) or isinstance(attempts, bool):
            raise MessageDecodeError(f"receipt of action {aid}: attempts is not an integer")
        provider_id, reason, campaign = d.get("provider_id"), d.get("reason"), d.get("campaign")
        return cls(aid, str(d.get("person_id") or ""), str(d.get("channel") or ""), status, attempts,
                   None if provider_id is None else str(provider_id), ts, None if reason is None else str(reason),
                   str(d.get("rule_id") or ""), None if campaign is None else str(campaign))


@dataclass(frozen=True)
class TagChange:
    """A tag added to / removed from a person, for ``zt.tags.changes`` (JSON via :meth:`as_record`)."""

    person: str
    tag: str
    op: str  # "add" | "remove"
    ts_ms: int
    cause: str
    tagset_version: int

    def as_record(self) -> dict[str, Any]:
        return {"person": self.person, "tag": self.tag, "op": self.op, "ts": self.ts_ms, "cause": self.cause,
                "tagset_version": self.tagset_version}

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> TagChange:
        """Inverse of :meth:`as_record`; raises ``MessageDecodeError`` naming a missing or mistyped field."""
        try:
            person, tag, op, ts, cause, version = (d["person"], d["tag"], d["op"], d["ts"], d["cause"],
                                                   d["tagset_version"])
        except KeyError as e:
            raise MessageDecodeError(f"tag change without {e.args[0]!r}") from None
        if not all(isinstance(v, str) for v in (person, tag, op, cause)) or op not in ("add", "remove"):
            raise MessageDecodeError(f"tag change of {person!r}: person, tag, cause must be text, op add or remove")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (ts, version)):
            raise MessageDecodeError(f"tag change of {person!r}: ts and tagset_version must be integers")
        return cls(person, tag, op, ts, cause, version)
