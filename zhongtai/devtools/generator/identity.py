"""Identity noise and the real persons behind the stream (ground truth of the identity graph).

Options (``GeneratorConfig``; all 0 by default, then the stream is byte-for-byte what it was without
them; the default noise level is ``model.IDENTITY_NOISE``):

* ``shared_device_share``: that share of persons owns a household device (their first one) which
  1–4 other persons also use — same ``device_id`` and ``cookie_id``; they log in on it too.
* ``kiosks`` / ``kiosk_share``: store kiosks; that share of web sessions (of any person) runs on a
  kiosk's device and cookie instead of the person's own.
* ``junk_id_share``: that share of valid events carries a junk value (:data:`JUNK`) for one identifier
  type, added or replacing the real one — never the event's only identifier, so the event stays
  valid whether or not the decode step counts junk as an identifier.
* ``late_share``: that share of events arrives 10 min – ``allowed_lateness / 2`` after its event time.

Every noise draw comes from its own generator (:func:`noise_rng`), after the draws of the plain
stream, so switching noise on changes only what the noise touches.

Ground truth (:func:`identity_truth`): identifier (``type:value`` as stored, phone/e-mail
pseudonymised) → real person label ``person<i>``; a shared device belongs to its owner, a kiosk's
device and cookie to the pseudo-person ``kiosk<k>``; junk values belong to nobody.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np

from config.settings import PiiSettings
from operators.pii import pseudonymise

from .model import GeneratorConfig
from .population import Person, _uuid, make_persons

#: (type, value) of the junk identifiers the noise adds; all on the default blocklist.
JUNK: tuple[tuple[str, str], ...] = (
    ("device_id", "0"),
    ("device_id", "00000000-0000-0000-0000-000000000000"),
    ("cookie_id", "undefined"),
    ("cookie_id", "null"),
    ("openid", "null"),
    ("openid", "undefined"),
    ("user_id", "-1"),
    ("email", "null"),
    ("device_id", "ffffffff-ffff-ffff-ffff-ffffffffffff"),
)


def noise_rng(cfg: GeneratorConfig) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([cfg.seed, 0x1D]))


def kiosk_devices(cfg: GeneratorConfig) -> tuple[str, ...]:
    """Device ids of the kiosks (derived from the seed; no random draws)."""
    return tuple(
        _uuid(hashlib.sha256(f"kiosk:{cfg.seed}:{k}".encode()).digest()[:16]) for k in range(cfg.kiosks)
    )


def cookie_of(device: str) -> str:
    """The cookie of a browser on ``device`` (the population's rule)."""
    return "ck_" + device.replace("-", "")[:20]


def share_devices(
    persons: list[Person], cfg: GeneratorConfig, rng: np.random.Generator
) -> tuple[list[Person], dict[str, int]]:
    """Households: persons with their first device shared; returns (persons, shared device → owner)."""
    n = len(persons)
    owners = np.flatnonzero(rng.random(n) < cfg.shared_device_share)
    sizes = rng.integers(1, 5, len(owners))
    out = list(persons)
    owner_of: dict[str, int] = {}
    for o, k in zip(owners.tolist(), sizes.tolist(), strict=True):
        device = persons[o].devices[0]
        owner_of[device] = o
        others = rng.choice(n, min(k + 1, n), replace=False).tolist()
        for m in [m for m in others if m != o][:k]:
            p = out[m]
            if device not in p.devices:
                out[m] = replace(p, devices=(*p.devices, device), cookies=(*p.cookies, cookie_of(device)))
    return out, owner_of


def make_population(
    cfg: GeneratorConfig, rng: np.random.Generator, noise: np.random.Generator | None
) -> tuple[list[Person], dict[str, int]]:
    """The persons of ``cfg`` drawn from ``rng`` (the stream's generator, first draws), households
    from ``noise`` when ``shared_device_share`` is on; returns (persons, shared device → owner)."""
    persons = make_persons(
        rng,
        cfg.persons,
        cfg.partitions,
        logged_in_share=cfg.logged_in_share,
        phone_share=cfg.phone_share,
        email_share=cfg.email_share,
        openid_share=cfg.openid_share,
        unionid_share=cfg.unionid_share,
    )
    if cfg.shared_device_share and noise is not None:
        return share_devices(persons, cfg, noise)
    return persons, {}


def population(cfg: GeneratorConfig) -> tuple[list[Person], dict[str, int]]:
    """The persons exactly as ``stream.generate`` builds them (noise included) and shared-device owners."""
    return make_population(cfg, np.random.Generator(np.random.PCG64(cfg.seed)), noise_rng(cfg))


def identity_truth(cfg: GeneratorConfig, pii: PiiSettings | None = None) -> dict[str, str]:
    """Identifier → real person (see the module docstring); phone/e-mail keyed as the job stores them."""
    pii = pii or PiiSettings()
    secret, cc = pii.hmac_secret.get_secret_value(), pii.default_country_code
    persons, owner_of = population(cfg)
    truth: dict[str, str] = {}
    for i, p in enumerate(persons):
        label = f"person{i}"
        for d, c in zip(p.devices, p.cookies, strict=True):
            owner = owner_of.get(d, i)
            truth[f"device_id:{d}"] = truth[f"cookie_id:{c}"] = f"person{owner}"
        if p.user_id:
            truth[f"user_id:{p.user_id}"] = label
        if p.phones:
            truth["phone:" + pseudonymise("phone", p.phones[0], secret, cc)] = label
        if p.emails:
            truth["email:" + pseudonymise("email", p.emails[0], secret, cc)] = label
        if p.openid:
            truth[f"openid:{p.openid}"] = label
        if p.unionid:
            truth[f"unionid:{p.unionid}"] = label
    for k, d in enumerate(kiosk_devices(cfg)):
        truth[f"device_id:{d}"] = truth[f"cookie_id:{cookie_of(d)}"] = f"kiosk{k}"
    return truth


def linkable_truth(truth: dict[str, str], observations: object) -> dict[str, str]:
    """The true partition as far as evidence allows: identifiers of one real person are together only
    when that person's own links (pairs in one event, both truly theirs) connect them.

    Labels are ``<person>/<smallest identifier of the part>``. Identifiers not in ``truth`` (junk) are
    left out; links between identifiers of different real persons (shared device, kiosk) count for
    neither. This is the best any resolver can reach on the stream; ``truth`` itself also counts pairs
    that no event ever links (a second device only ever used anonymously).
    """
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for o in observations:  # type: ignore[attr-defined]
        by_person: dict[str, list[str]] = {}
        for t, v in o.ids:
            i = f"{t}:{v}"
            p = truth.get(i)
            if p is not None:
                parent.setdefault(i, i)
                by_person.setdefault(p, []).append(i)
        for group in by_person.values():
            for x in group[1:]:
                a, b = find(group[0]), find(x)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return {i: f"{truth[i]}/{find(i)}" for i in parent}
