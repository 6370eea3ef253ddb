"""Profile look-up by any identifier (the CLI's ``profile get`` and the Python API for the REST API)."""

from __future__ import annotations

from config.settings import Settings
from operators.pii import PII_TYPES, pseudonymise
from pipelines.decode import ID_TYPES


def person_key(settings: Settings, identifier: str) -> str:
    """``type:value`` → the stored person key (phone/e-mail normalised and HMAC'd)."""
    id_type, sep, value = identifier.partition(":")
    if not sep or id_type not in ID_TYPES or not value:
        raise ValueError(f"identifier {identifier!r}: write it as type:value with type one of {', '.join(ID_TYPES)}")
    if id_type in PII_TYPES:
        value = pseudonymise(id_type, value, settings.pii.hmac_secret.get_secret_value(),
                             settings.pii.default_country_code)
    return f"{id_type}:{value}"


def get_profile(settings: Settings, identifier: str, as_of: int | None = None,
                prefix: str | None = None) -> dict[str, object]:
    """Resolve ``identifier`` (any type; raw phone/e-mail accepted) to its person and return the person
    id, the identifier as stored, the person's identifiers, live tags and rolling profile; ``{}`` when
    the identifier belongs to no person."""
    from connectors.redis_store import RedisStore

    key = person_key(settings, identifier)
    store = RedisStore(settings.redis, prefix=prefix)
    try:
        pid = store.person_of(key)
        if pid is None:
            return {}
        return {
            "identifier": key,
            "person": pid,
            "identifiers": store.identifiers(pid),
            "tags": store.tags_of(pid),
            "profile": store.profile(pid, as_of),
        }
    finally:
        store.close()
