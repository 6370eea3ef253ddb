"""Contact directories: ``person_id -> Contact`` at delivery time.

Raw phone numbers and e-mail addresses never enter the event stream (they are HMACed at decode),
so a worker asks a directory owned by the CRM for the address when it delivers. Two directories:

* ``FileContactDirectory``: a YAML or JSON file mapping person ids to contact objects; re-read
  when the file's modification time changes. For tests, demos and small deployments.
* ``HttpContactDirectory``: ``GET {url}/{person_id}`` returning the contact object (404: unknown).

A contact object: ``{"email": ..., "phone": ..., "push_token": ..., "webhook_url": ..., "name": ...,
"openid": ..., "opt_out": ["sms", ...]}``; every field optional. ``lookup`` returns None for an unknown person and
raises ``ContactLookupError`` when the directory cannot answer right now (the worker retries).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import httpx
import yaml

from connectors.channels.base import Contact

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import ContactsSettings

logger = logging.getLogger(__name__)

_FIELDS = ("email", "phone", "push_token", "webhook_url", "name", "openid")


class ContactLookupError(RuntimeError):
    """The directory could not answer (unreachable, 5xx, unreadable file): retry later."""


class ContactDirectory(Protocol):
    def lookup(self, person_id: str) -> Contact | None:
        """The person's contact, None when the directory does not know the person."""
        ...

    def close(self) -> None: ...


def contact_from(person_id: str, d: Mapping[str, Any]) -> Contact:
    """Build a Contact from a directory object; raises ``ValueError``/``TypeError`` naming the bad field."""
    if not isinstance(d, Mapping):
        raise TypeError(f"contact of {person_id!r} must be an object, got {type(d).__name__}")
    unknown = set(d) - set(_FIELDS) - {"opt_out", "person_id"}
    if unknown:
        raise ValueError(f"contact of {person_id!r} has unknown fields {sorted(unknown)}; allowed: "
                         f"{', '.join(_FIELDS)}, opt_out")
    opt_out = d.get("opt_out") or []
    if not isinstance(opt_out, list | tuple) or not all(isinstance(c, str) for c in opt_out):
        raise ValueError(f"contact of {person_id!r}: opt_out must be a list of channel names")
    values = {f: (str(d[f]) if d.get(f) is not None else None) for f in _FIELDS}
    return Contact(person_id=person_id, opt_out=frozenset(opt_out), **values)


class FileContactDirectory:
    """Contacts from a YAML/JSON file (``{person_id: contact, ...}``), reloaded when it changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._mtime: float | None = None
        self._contacts: dict[str, Contact] = {}

    def _load(self) -> None:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            raise ContactLookupError(
                f"contact file {self.path} does not exist: create it or set worker.contacts.path"
            ) from None
        if mtime == self._mtime:
            return
        text = self.path.read_text(encoding="utf-8")
        try:
            data = json.loads(text) if self.path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            raise ContactLookupError(f"contact file {self.path} is not valid: {e}") from None
        if not isinstance(data, dict):
            raise ContactLookupError(f"contact file {self.path} must hold a mapping person_id -> contact")
        try:
            self._contacts = {str(pid): contact_from(str(pid), c) for pid, c in data.items()}
        except (ValueError, TypeError) as e:
            raise ContactLookupError(f"contact file {self.path}: {e}") from None
        self._mtime = mtime
        logger.info("loaded %d contacts from %s", len(self._contacts), self.path)

    def lookup(self, person_id: str) -> Contact | None:
        self._load()
        return self._contacts.get(person_id)

    def close(self) -> None:
        self._contacts = {}


class HttpContactDirectory:
    """Contacts from an HTTP service: ``GET {url}/{person_id}`` → 200 JSON object, or 404."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 5.0) -> None:
        if not url:
            raise ValueError("worker.contacts.url is empty: set it to the directory's base URL")
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self.client = httpx.Client(timeout=timeout_s, headers=headers)

    def lookup(self, person_id: str) -> Contact | None:
        target = f"{self.url}/{quote(person_id, safe='')}"
        try:
            r = self.client.get(target)
        except httpx.HTTPError as e:
            raise ContactLookupError(f"contact lookup {target} failed: {type(e).__name__}: {e}") from None
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise ContactLookupError(f"contact lookup {target} answered HTTP {r.status_code}")
        try:
            return contact_from(person_id, r.json())
        except (ValueError, TypeError) as e:
            raise ContactLookupError(f"contact lookup {target}: {e}") from None

    def close(self) -> None:
        self.client.close()


def build_directory(cfg: ContactsSettings) -> ContactDirectory:
    """The directory that ``worker.contacts`` configures."""
    if cfg.kind == "http":
        return HttpContactDirectory(cfg.url, cfg.token.get_secret_value() if cfg.token else None, cfg.timeout_s)
    return FileContactDirectory(cfg.path)
