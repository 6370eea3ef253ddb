"""Guard rails of the identity graph: identifier types and their priority, per-person limits, shareable
types, junk values.

Pure (no pyflink). :class:`IdentityRules` is built once from ``config.settings.IdentitySettings``
(:meth:`IdentityRules.from_settings`) and passed to every step and control call (``graph``, ``control``).

Identifiers are written ``"<type>:<value>"`` everywhere (the value as stored: phone and e-mail are
already the keyed HMAC of ``operators.pii``). Besides the static configuration the rules carry the
*dynamic* overlay set by control messages (``graph.apply_control``): identifiers that are blocked
(ignored as if never seen) and identifiers that are isolated (kept, but never linked to anything).
The resolution is a function of the observations and these rules; changing the overlay re-resolves
the affected component (``graph.control``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from config.settings import IdentitySettings
from operators.pii import ASCII_SPACE, PII_TYPES, pseudonymise

if TYPE_CHECKING:  # pragma: no cover
    from config.schema import EventSchema
    from config.settings import PiiSettings

#: The defaults of the ``identity:`` config section (config/settings.py is the one place they are written).
_DEFAULTS = IdentitySettings()
DEFAULT_PRIORITY: tuple[str, ...] = _DEFAULTS.priority
DEFAULT_LIMITS: Mapping[str, int] = dict(_DEFAULTS.max_per_person)
DEFAULT_BLOCKED_VALUES: tuple[str, ...] = _DEFAULTS.blocklist_values
DEFAULT_BLOCKED_PATTERNS: tuple[str, ...] = _DEFAULTS.blocklist_patterns
DEFAULT_SHAREABLE: tuple[str, ...] = _DEFAULTS.shareable_types


def identifier(id_type: str, value: str) -> str:
    """The one spelling of an identifier: ``"<type>:<value>"``."""
    return f"{id_type}:{value}"


def split_identifier(ident: str) -> tuple[str, str]:
    """``"device_id:abc"`` → ``("device_id", "abc")``; ValueError naming the input when there is no ``:``."""
    id_type, sep, value = ident.partition(":")
    if not sep or not id_type:
        raise ValueError(f"identifier {ident!r} is not of the form '<type>:<value>' (e.g. 'device_id:abc')")
    return id_type, value


@dataclass(frozen=True)
class IdentityRules:
    """Identifier types strongest first, per-type limits, blocklist, and the dynamic control overlay.

    ``rank[t]`` is the position of type ``t`` in ``priority`` (0 = strongest); types not listed are
    not identifiers and are ignored. ``limits[t]`` is the most identifiers of type ``t`` one person
    may hold. ``shareable`` are the types several people can use (devices, browsers): a link through
    one may not merge two persons that both hold an identifier of the same other type (see
    :meth:`refusal`; shareable types that are not in ``priority`` play no role).
    ``blocked_hashes`` holds, for phone/e-mail, the stored (hashed) form of each blocked value, so
    junk is also recognised after pseudonymisation (patterns cannot be: check raw values with
    :meth:`is_blocked_raw` before hashing).
    """

    priority: tuple[str, ...] = DEFAULT_PRIORITY
    limits: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    blocked_values: frozenset[str] = frozenset(v.strip().lower() for v in DEFAULT_BLOCKED_VALUES)
    blocked_patterns: tuple[str, ...] = DEFAULT_BLOCKED_PATTERNS
    blocked_hashes: frozenset[str] = frozenset()
    #: Types stored as a keyed hash (phone, e-mail, and custom types declared ``hashed``): their stored
    #: values are compared with ``blocked_hashes``.
    hashed_types: frozenset[str] = PII_TYPES
    shareable: frozenset[str] = frozenset(DEFAULT_SHAREABLE)
    #: Dynamic overlay (control messages): identifiers ignored entirely / kept but never linked.
    blocked_identifiers: frozenset[str] = frozenset()
    isolated_identifiers: frozenset[str] = frozenset()
    rank: Mapping[str, int] = field(init=False, repr=False, compare=False)
    #: Type ranks: shareable ones, and the others (a shared identifier cannot bridge two of these).
    shareable_ranks: frozenset[int] = field(init=False, repr=False, compare=False)
    _owned_ranks: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _limit_seq: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.priority or len(set(self.priority)) != len(self.priority):
            raise ValueError(f"identity.priority {self.priority!r}: list each identifier type once")
        missing = [t for t in self.priority if t not in self.limits]
        if missing:
            raise ValueError(
                f"identity.max_per_person has no limit for {missing}: add one per type of identity.priority"
            )
        bad = {t: n for t, n in self.limits.items() if not isinstance(n, int) or n < 1}
        if bad:
            raise ValueError(f"identity.max_per_person {bad}: limits must be whole numbers ≥ 1")
        for p in self.blocked_patterns:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(
                    f"identity.blocklist_patterns: {p!r} is not a regular expression ({e})"
                ) from None
        object.__setattr__(self, "limits", dict(self.limits))
        object.__setattr__(self, "shareable", frozenset(self.shareable))
        object.__setattr__(self, "rank", {t: i for i, t in enumerate(self.priority)})
        shareable_ranks = frozenset(self.rank[t] for t in self.shareable if t in self.rank)
        object.__setattr__(self, "shareable_ranks", shareable_ranks)
        owned = tuple(r for r in range(len(self.priority)) if r not in self.shareable_ranks)
        object.__setattr__(self, "_owned_ranks", owned)
        object.__setattr__(self, "_limit_seq", tuple(self.limits[t] for t in self.priority))
        joined = "|".join(f"(?:{p})" for p in self.blocked_patterns)
        object.__setattr__(self, "_regex", re.compile(joined, re.DOTALL) if joined else None)

    @classmethod
    def from_settings(cls, identity: IdentitySettings, pii: PiiSettings | None = None,
                      schema: EventSchema | None = None) -> IdentityRules:
        """Rules from the config tree; with ``pii`` the hashed forms of blocked values of the hashed types
        (phone, e-mail, custom types of ``schema`` declared ``hashed``) too."""
        values = frozenset(v.strip().lower() for v in identity.blocklist_values)
        hashes: frozenset[str] = frozenset()
        custom = schema.identifiers if schema is not None else {}
        hashed = PII_TYPES | {t for t, spec in custom.items() if spec.hashed}
        if pii is not None:
            secret, cc = pii.hmac_secret.get_secret_value(), pii.default_country_code
            hashes = frozenset(
                pseudonymise(t, v, secret, cc, custom) for t in hashed if t in identity.priority for v in values
            )
        return cls(
            priority=tuple(identity.priority),
            limits=dict(identity.max_per_person),
            blocked_values=values,
            blocked_patterns=tuple(identity.blocklist_patterns),
            blocked_hashes=hashes,
            hashed_types=frozenset(hashed),
            shareable=frozenset(identity.shareable_types),
        )

    # --- guard rails on a link ---------------------------------------------------------------------

    def refusal(self, x_rank: int, a: Sequence[int], b: Sequence[int]) -> str | None:
        """Why two persons must not merge through a link to an identifier of type rank ``x_rank``
        (the weaker end of the link, the one that is detached if refused), or None when they may.

        ``a``, ``b``: the two persons' identifier counts per type rank. ``limit:<type>``: together
        they would hold more of ``<type>`` than ``limits`` allows (first such type in priority order).
        ``shared:<type>``: the link's end is of a shareable type and both persons hold a ``<type>``
        identifier of a type that is not shareable (first such type): a tablet seen with two persons'
        phones is shared; it joins no one, whereas a second phone can still join through a direct
        link (one event with both phones, or a phone and the user_id).
        """
        for r, lim in enumerate(self._limit_seq):
            if a[r] + b[r] > lim:
                return "limit:" + self.priority[r]
        if x_rank in self.shareable_ranks:
            for r in self._owned_ranks:
                if a[r] and b[r]:
                    return "shared:" + self.priority[r]
        return None

    # --- junk values -----------------------------------------------------------------------------

    def is_blocked_raw(self, id_type: str, raw: str) -> bool:
        """True when the raw (not yet hashed) value is junk: a blocklisted value or pattern."""
        v = raw.strip(ASCII_SPACE).lower()  # ASCII white space, as the SQL decode trims
        if v in self.blocked_values:
            return True
        return self._regex is not None and self._regex.fullmatch(v) is not None

    def is_junk(self, id_type: str, value: str) -> bool:
        """Static junk: a blocklisted value or pattern, or the hashed form of a junk phone/e-mail."""
        if id_type in self.hashed_types and value in self.blocked_hashes:
            return True
        return self.is_blocked_raw(id_type, value)

    def is_blocked(self, id_type: str, value: str) -> bool:
        """True when the stored value must not be used as an identifier of ``id_type`` now:
        static junk (:meth:`is_junk`) or on the dynamic blocklist."""
        if self.is_junk(id_type, value):
            return True
        return bool(self.blocked_identifiers) and identifier(id_type, value) in self.blocked_identifiers

    # --- dynamic overlay ---------------------------------------------------------------------------

    def with_blocked(self, idents: Iterable[str]) -> IdentityRules:
        return replace(self, blocked_identifiers=self.blocked_identifiers | frozenset(idents))

    def with_isolated(self, idents: Iterable[str]) -> IdentityRules:
        return replace(self, isolated_identifiers=self.isolated_identifiers | frozenset(idents))

    def without(self, idents: Iterable[str]) -> IdentityRules:
        """The overlay minus ``idents`` (neither blocked nor isolated any more)."""
        s = frozenset(idents)
        return replace(
            self,
            blocked_identifiers=self.blocked_identifiers - s,
            isolated_identifiers=self.isolated_identifiers - s,
        )

    def clean_ids(self, ids: Iterable[tuple[str, str]]) -> tuple[str, ...]:
        """The identifiers an event's ``(type, value)`` pairs contribute, strongest first.

        Unknown types and static junk (:meth:`is_junk`) are dropped, duplicates collapse; identifiers
        on the *dynamic* blocklist are kept (the resolution skips them, so an ``unblock`` can bring
        them back). Order is (type rank, value): the canonical order of one observation's identifiers.
        """
        rank = self.rank
        keep = {(rank[t], v) for t, v in ids if t in rank and not self.is_junk(t, v)}
        return tuple(identifier(self.priority[r], v) for r, v in sorted(keep))

    def type_rank(self, ident: str) -> int:
        return self.rank[ident.partition(":")[0]]
