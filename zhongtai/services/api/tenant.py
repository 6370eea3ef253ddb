"""The API's tenant binding: one API instance serves one tenant, the namespace of its settings (docs/security.md).

Every name of tenant ``a`` starts with ``a.`` (config/namespace.py); an API started for ``a`` reads the Redis
keys under ``a.<redis.prefix>`` and refuses at start a prefix of any other tenant. With secured Redis the
store enforces the same line (the tenant's ``api`` user reaches only its keys); this check turns a
misconfiguration into a clear error at start instead of refused reads. API keys and their scopes are the
auth middleware's; a key belongs to the instance (the tenant) it was issued for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import Settings


class TenantError(ValueError):
    """The API was asked to serve keys outside its tenant."""


def tenant_prefix(settings: Settings, prefix: str | None) -> str:
    """The Redis prefix the API reads (``prefix``, default ``redis.prefix``), if it belongs to the settings'
    tenant; else :class:`TenantError` naming both."""
    chosen = prefix or settings.redis.prefix
    if settings.namespace and not chosen.startswith(settings.namespace + "."):
        raise TenantError(f"the API of tenant {settings.namespace!r} cannot serve the Redis prefix {chosen!r}: a "
                          f"tenant's keys start with '{settings.namespace}.'; start the API of the other tenant "
                          "with its own --namespace and users instead")
    return chosen
