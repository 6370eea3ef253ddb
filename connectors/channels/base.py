"""The channel adapter contract: typed actions (``operators.messages.Action``) and contacts in, a
classified delivery result out.

An adapter sends one action to one resolved contact and says what happened:

* ``delivered``: the provider accepted it; ``provider_id`` is its message id (or ours).
* ``transient``: worth retrying later (timeouts, connection errors, 4xx SMTP replies, HTTP 408/425/429/5xx).
  ``retry_after_s`` carries a provider's ``Retry-After`` hint.
* ``permanent``: retrying cannot help (bad address, HTTP 4xx, SMTP 5xx); the action goes to the DLQ.
* ``suppressed``: not sent on purpose (no contact, no address for the channel, opted out).

Adapters never raise for a delivery problem (errors are data); they raise only for a programming or
configuration error. Every adapter sends the action id as its idempotency key (``Idempotency-Key``
header, ``Message-ID``), so that a re-delivery after a crash is recognisable by the provider.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from config.plugins import channel_names
from operators.messages import Action

#: The built-in channels and the installed channel plugins' (config/plugins.py).
CHANNELS = channel_names()
#: Channels addressed by the person id itself: a person the directory does not know still gets
#: the action (coupons are issued to the account), unless the directory says they opted out.
CONTACTLESS_CHANNELS = frozenset({"coupon"})

Status = Literal["delivered", "transient", "permanent", "suppressed"]


@dataclass(frozen=True, slots=True)
class Contact:
    """Where a person is reached, resolved at delivery time (the stream only carries HMACs)."""

    person_id: str
    email: str | None = None
    phone: str | None = None
    push_token: str | None = None
    webhook_url: str | None = None
    name: str | None = None
    #: The person's WeChat openid (of the official account / mini program that sends), for WeChat channels.
    openid: str | None = None
    #: Channels the person opted out of (the directory's view; the job enforces consent too).
    opt_out: frozenset[str] = frozenset()

    def address(self, channel: str) -> str | None:
        """The address this channel sends to, or None; ``coupon`` is issued to the person id itself."""
        return {
            "email": self.email, "sms": self.phone, "push": self.push_token,
            "webhook": self.webhook_url, "coupon": self.person_id,
        }.get(channel)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    status: Status
    provider_id: str | None = None
    reason: str = ""
    retry_after_s: float | None = None

    @classmethod
    def delivered(cls, provider_id: str) -> DeliveryResult:
        return cls("delivered", provider_id=provider_id)

    @classmethod
    def transient(cls, reason: str, retry_after_s: float | None = None) -> DeliveryResult:
        return cls("transient", reason=reason, retry_after_s=retry_after_s)

    @classmethod
    def permanent(cls, reason: str) -> DeliveryResult:
        return cls("permanent", reason=reason)

    @classmethod
    def suppressed(cls, reason: str) -> DeliveryResult:
        return cls("suppressed", reason=reason)


@runtime_checkable
class ChannelAdapter(Protocol):
    """Sends actions of one channel. One instance per worker process; not thread-safe.

    ``destination(action, contact)`` names the endpoint a delivery goes to (webhook host, mail
    domain, provider host): the worker parks every action of a destination that failed transiently
    and keeps delivering to the others. ``deliver`` must be safe to call again for the same action
    (send ``action.action_id`` as the provider idempotency key) and must return within its
    configured timeout.
    """

    channel: str

    def destination(self, action: Action, contact: Contact) -> str: ...

    def deliver(self, action: Action, contact: Contact) -> DeliveryResult: ...

    def close(self) -> None: ...


def render(templates: Mapping[str, Mapping[str, str]], action: Action) -> tuple[str, str]:
    """``(subject, body)`` of an action: its template's ``$param`` placeholders filled from params.

    An unknown template renders a neutral text naming the template (never a failed delivery: the
    template catalogue belongs to the content team and may lag the rules). Unknown placeholders
    are left as written.
    """
    values = {k: str(v) for k, v in action.params.items()}
    values.setdefault("person_id", action.person_id)
    values.setdefault("campaign", action.campaign or "")
    t = templates.get(action.template)
    if t is None:
        extra = ", ".join(f"{k}={v}" for k, v in sorted(action.params.items()))
        return action.template, f"{action.template}" + (f" ({extra})" if extra else "")
    subject = string.Template(t.get("subject", action.template)).safe_substitute(values)
    body = string.Template(t.get("body", "")).safe_substitute(values)
    return subject, body
