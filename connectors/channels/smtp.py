"""E-mail over SMTP (``smtplib``): one connection kept open across deliveries, re-opened on error.

``Message-ID: <action_id@message_id_domain>`` and ``X-Zhongtai-Action-Id`` make a re-delivery of
the same action recognisable (mailbox providers collapse identical Message-IDs; a relay that
deduplicates on it gives true provider-side idempotency). Classification: SMTP 5xx replies are
permanent, 4xx replies, timeouts and connection errors are transient.
"""

from __future__ import annotations

import logging
import smtplib
import time
from collections.abc import Callable, Mapping
from email.message import EmailMessage
from email.utils import formatdate
from typing import TYPE_CHECKING

from connectors.channels.base import Contact, DeliveryResult, render
from operators.messages import Action

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import SmtpSettings

logger = logging.getLogger(__name__)


def message_id(action_id: str, domain: str) -> str:
    """The Message-ID header of an action's e-mail (the same on every re-delivery)."""
    return f"<{action_id}@{domain}>"


def _classify(code: int, text: bytes | str, what: str) -> DeliveryResult:
    msg = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    reason = f"smtp {what} {code} {msg}".strip()
    return DeliveryResult.permanent(reason) if 500 <= code < 600 else DeliveryResult.transient(reason)


class SmtpAdapter:
    """The ``email`` channel. ``clock`` gives epoch seconds for the Date header."""

    channel = "email"

    def __init__(self, cfg: SmtpSettings, templates: Mapping[str, Mapping[str, str]],
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.templates = templates
        self.clock = clock
        self._conn: smtplib.SMTP | None = None

    def destination(self, action: Action, contact: Contact) -> str:
        addr = contact.email or ""
        return "email:" + addr.rpartition("@")[2].lower()

    def build(self, action: Action, contact: Contact) -> EmailMessage:
        subject, body = render(self.templates, action)
        m = EmailMessage()
        m["From"] = self.cfg.sender
        m["To"] = contact.email or ""
        m["Subject"] = subject
        m["Date"] = formatdate(self.clock(), usegmt=True)
        m["Message-ID"] = message_id(action.action_id, self.cfg.message_id_domain)
        m["X-Zhongtai-Action-Id"] = action.action_id
        if action.campaign:
            m["X-Zhongtai-Campaign"] = action.campaign
        m.set_content(body)
        return m

    def _connect(self) -> smtplib.SMTP:
        if self._conn is not None:
            return self._conn
        c = smtplib.SMTP(self.cfg.host, self.cfg.port, timeout=self.cfg.timeout_s)
        try:
            c.ehlo()
            if self.cfg.starttls:
                c.starttls()
                c.ehlo()
            if self.cfg.username:
                c.login(self.cfg.username, self.cfg.password.get_secret_value() if self.cfg.password else "")
        except BaseException:
            c.close()
            raise
        self._conn = c
        return c

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def deliver(self, action: Action, contact: Contact) -> DeliveryResult:
        if not contact.email:
            return DeliveryResult.suppressed("no_address")
        msg = self.build(action, contact)
        mid = msg["Message-ID"]
        try:
            refused = self._connect().send_message(msg)
        except smtplib.SMTPRecipientsRefused as e:
            self._reset()
            code, text = next(iter(e.recipients.values()))
            return _classify(code, text, "recipient refused")
        except smtplib.SMTPSenderRefused as e:
            self._reset()
            return _classify(e.smtp_code, e.smtp_error, "sender refused")
        except smtplib.SMTPResponseException as e:
            self._drop()
            return _classify(e.smtp_code, e.smtp_error, "error")
        except (TimeoutError, smtplib.SMTPException, OSError) as e:
            self._drop()
            return DeliveryResult.transient(f"smtp {self.cfg.host}:{self.cfg.port} {type(e).__name__}: {e}")
        if refused:  # only with several recipients; we send one
            code, text = next(iter(refused.values()))
            return _classify(code, text, "recipient refused")
        return DeliveryResult.delivered(mid)

    def _reset(self) -> None:
        """RSET after a refused transaction so the connection can carry the next message."""
        try:
            if self._conn is not None:
                self._conn.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.quit()
            except (smtplib.SMTPException, OSError):
                pass
        self._drop()
