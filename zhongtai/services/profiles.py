"""Profile look-up by any identifier (the CLI's ``profile get`` and the Python API for the REST API)."""

from __future__ import annotations

import re
from typing import Any

from config.settings import Settings
from operators.pii import pseudonymise


def person_key(settings: Settings, identifier: str) -> str:
    """``type:value`` → the stored person key (phone/e-mail and hashed custom types normalised and HMAC'd,
    as the job stores them)."""
    id_type, sep, value = identifier.partition(":")
    id_types = settings.event_schema.id_types()
    if not sep or id_type not in id_types or not value:
        raise ValueError(f"identifier {identifier!r}: write it as type:value with type one of {', '.join(id_types)}")
    value = pseudonymise(id_type, value, settings.pii.hmac_secret.get_secret_value(),
                         settings.pii.default_country_code, settings.event_schema.identifiers)
    return f"{id_type}:{value}"


#: A person id as the identity graph makes it (``operators.identity.model.person_id``).
PERSON_ID = re.compile(r"^p[0-9a-f]{16}$")


def resolve_person(settings: Settings, store: Any, identifier: str) -> tuple[str, str | None]:
    """``identifier`` (``type:value`` or a person id) → (the identifier as stored, its person or None), read from
    ``store`` (a ``connectors.redis_store.RedisStore``). ``ValueError`` for a malformed identifier."""
    if PERSON_ID.match(identifier) is not None:
        return identifier, identifier
    key = person_key(settings, identifier)
    return key, store.person_of(key)


def get_profile(settings: Settings, identifier: str, as_of: int | None = None,
                prefix: str | None = None) -> dict[str, object]:
    """Resolve ``identifier`` (``type:value``, raw phone/e-mail accepted, or a person id) to its person and
    return the person id, the identifier as stored, the person's identifiers, live tags and rolling
    profile, and with declared computed traits (docs/schema.md) their values (``traits``: name → value text);
    ``{}`` when it belongs to no person. ``ValueError`` for a malformed identifier."""
    from connectors.redis_store import RedisStore

    by_person = PERSON_ID.match(identifier) is not None
    key = identifier if by_person else person_key(settings, identifier)
    store = RedisStore(settings.redis, prefix=prefix)
    try:
        pid = key if by_person else store.person_of(key)
        ids = store.identifiers(pid) if pid is not None else []
        if pid is None or (by_person and not ids and not store.profile_hash(pid)):
            return {}
        out: dict[str, object] = {
            "identifier": key,
            "person": pid,
            "identifiers": ids,
            "tags": store.tags_of(pid),
            "profile": store.profile(pid, as_of),
        }
        if settings.event_schema.traits:
            out["traits"] = store.traits(pid)
        return out
    finally:
        store.close()
