"""The plan of the stream as numpy columns: sessions, event times, arrival times, faults, order.

:func:`make_plan` draws, from one seeded generator and in a fixed order, everything about every
record except its bytes (``stream.py`` serialises the plan lazily, in chunks). The plan keeps about
85 bytes per record: generating 1M records peaks at ~190 MB resident for the whole process.

Timing model
  * Each person has sessions of 3–30 events, gaps 1 s + Exp(20 s) capped at 150 s, placed so the
    whole session falls inside ``[start_ms, start_ms + span_ms)``.
  * Arrival (Kafka record timestamp) = event time + delay: U[0, 3 s] for 99 % of the events, a
    log-uniform tail up to min(10 min, lateness/4) for the rest.
  * Emission order: by arrival + U[0, 1.5 s) jitter, so record timestamps within a partition are out of
    order by up to ~1.5 s, and event times by the delay on top.

Fault placement: every fault class gets exactly ``round(rate × events)`` records; DLQ faults replace
plain events, duplicates are extra records placed 2 s – min(5 min, lateness/4) after their original
(same key, hence same topic and partition).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import DLQ_REASONS, EVENT_TYPES, SOURCES, GeneratorConfig

# Kind codes of the plan: 0 ok, 1..16 the DLQ reasons in check order, then duplicates and edges.
OK = 0
CODE = {r: i + 1 for i, r in enumerate(DLQ_REASONS)}
DUP_EXACT = 20
DUP_CONFLICT = 21
EDGE_BASE = 30
#: Valid boundary cases (kind "ok"); see ``faults.apply_edge``.
EDGES: tuple[str, ...] = (
    "exact_max_bytes",
    "event_id_128_chars",
    "event_type_64_chars",
    "delay_equals_lateness",
    "ts_equals_skew",
    "source_missing",
    "campaign_empty",
    "channel_empty",
    "price_half_up",
    "qty_and_price_as_strings",
    "empty_stronger_ids",
    "unknown_id_type",
    "price_integer",
)
EDGE = {e: EDGE_BASE + i for i, e in enumerate(EDGES)}

#: Which part of the event a DLQ reason is about; a compound fault breaks a later check on another part.
_FIELD = {
    "oversized": "size",
    "not_utf8": "utf8",
    "malformed_json": "json",
    "missing_field:event_id": "event_id",
    "wrong_type:event_id": "event_id",
    "missing_field:event_type": "event_type",
    "wrong_type:event_type": "event_type",
    "missing_field:ts": "ts",
    "wrong_type:ts": "ts",
    "future_ts": "ts",
    "late": "ts",
    "missing_field:ids": "ids",
    "wrong_type:ids": "ids",
    "no_identifier": "ids",
    "wrong_type:props.price": "price",
    "wrong_type:props.qty": "qty",
}
#: No later check on another field exists for these.
_NO_EXTRAS = {"future_ts", "late"}

ET = {t: i for i, t in enumerate(EVENT_TYPES)}
SRC = {s: i for i, s in enumerate(SOURCES)}
_SOURCE_P = np.array([0.42, 0.38, 0.08, 0.06, 0.06])
#: Event-type mix per source, columns in EVENT_TYPES order.
_TYPE_P = np.array(
    [
        [0.58, 0.12, 0.035, 0.01, 0.04, 0.195, 0.02],  # web
        [0.55, 0.13, 0.045, 0.01, 0.05, 0.195, 0.02],  # app
        [0.35, 0.10, 0.30, 0.03, 0.05, 0.07, 0.10],  # store
        [0.30, 0.02, 0.03, 0.05, 0.10, 0.40, 0.10],  # crm
        [0.40, 0.05, 0.05, 0.05, 0.20, 0.15, 0.10],  # cs
    ]
)
_TYPE_P = _TYPE_P / _TYPE_P.sum(axis=1, keepdims=True)

# Bits of ``idmask``: which identifiers an event carries.
ID_DEVICE, ID_COOKIE, ID_USER, ID_PHONE, ID_EMAIL, ID_OPENID, ID_UNIONID = (1 << i for i in range(7))

#: ``ts_fmt``: 0 int ms; ISO-8601 with offset minutes: 1 Z .fff, 2 +08:00 .fff, 3 Z no fraction,
#: 4 +05:30 .fff, 5 -05:00 .fff.
TS_OFFSET_MIN = (0, 0, 480, 0, 330, -300)


@dataclass(frozen=True)
class Limits:
    """The job limits the faults are sized against (``config.JobSettings``)."""

    max_event_bytes: int
    max_future_skew_ms: int
    allowed_lateness_ms: int

    def __post_init__(self) -> None:
        if self.max_event_bytes < 2_048:
            raise ValueError("the generator needs job.max_event_bytes ≥ 2048 (valid events are up to ~1 KB)")
        if self.allowed_lateness_ms < 60_000:
            raise ValueError("the generator needs job.allowed_lateness_ms ≥ 60000 to place duplicates")


@dataclass(frozen=True)
class Plan:
    """Columns of the ``n_base`` base events (index ``i``) and of the emitted rows (index ``r``)."""

    n_base: int
    # base events
    person: np.ndarray
    source: np.ndarray
    device: np.ndarray
    campaign: np.ndarray  # -1: none
    channel: np.ndarray  # -1: no props.channel; else index into cfg.channels
    etype: np.ndarray
    item: np.ndarray
    qty: np.ndarray
    qty_fmt: np.ndarray  # 0 int, 1 absent (qty is 1), 2 string
    price_fmt: np.ndarray  # -1 absent, 0 number, 1 string, 2 number with 3 decimals
    price_milli: np.ndarray  # price in 1/1000 yuan
    ts: np.ndarray
    ts_fmt: np.ndarray
    idmask: np.ndarray
    phone_form: np.ndarray
    email_form: np.ndarray
    order_no: np.ndarray
    salt: np.ndarray  # per-event seed of the fault/edge mutation
    event_ids: bytes  # 16 random bytes per base event
    # rows, in emission order
    row_src: np.ndarray  # base event a row is (a copy of)
    row_code: np.ndarray  # OK, CODE[reason], DUP_*, EDGE[...]
    row_extra: np.ndarray  # 0 or the CODE of a later check the row also breaks
    row_rec: np.ndarray  # Kafka record timestamp
    # identity noise (None when off; see identity.py)
    kiosk: np.ndarray | None = None  # -1 or the kiosk whose device/cookie the event uses
    junk: np.ndarray | None = None  # -1 or the index into identity.JUNK the event carries


def _session_lengths(rng: np.random.Generator, n: int) -> np.ndarray:
    lengths = rng.integers(3, 31, n // 16 + 16)
    while lengths.sum() < n:
        lengths = np.concatenate([lengths, rng.integers(3, 31, n // 16 + 16)])
    cum = np.cumsum(lengths)
    s = int(np.searchsorted(cum, n)) + 1
    lengths = lengths[:s].copy()
    lengths[-1] -= int(cum[s - 1]) - n
    return lengths


def _types_by_source(rng: np.random.Generator, source: np.ndarray) -> np.ndarray:
    """One event-type draw per event from its source's mix (``_TYPE_P``)."""
    etype = np.empty(len(source), dtype=np.int8)
    for s in range(len(SOURCES)):
        idx = np.flatnonzero(source == s)
        etype[idx] = rng.choice(len(EVENT_TYPES), len(idx), p=_TYPE_P[s])
    return etype


def make_plan(
    cfg: GeneratorConfig,
    limits: Limits,
    person_attrs: dict[str, np.ndarray],
    rng: np.random.Generator,
    noise: np.random.Generator | None = None,
) -> Plan:
    """The plan; ``noise`` (``identity.noise_rng``) draws the identity noise when ``cfg`` asks for it."""
    counts = cfg.fault_counts()
    n_dup = counts["dup_exact"] + counts["dup_conflict"]
    n_base = cfg.events - n_dup
    n_edge = round(cfg.edge_rate * cfg.events)
    n_dlq = sum(counts[r] for r in DLQ_REASONS)
    if n_dlq + n_edge + n_dup > n_base:
        raise ValueError(f"{cfg.events} events leave no room for {n_dlq + n_edge + n_dup} faults")

    # --- sessions -------------------------------------------------------------------------------
    lengths = _session_lengths(rng, n_base)
    n_sess = len(lengths)
    activity = rng.lognormal(0.0, 1.0, cfg.persons)
    s_person = rng.choice(cfg.persons, n_sess, p=activity / activity.sum()).astype(np.int32)
    s_source = rng.choice(len(SOURCES), n_sess, p=_SOURCE_P).astype(np.int8)
    s_device = (rng.random(n_sess) * person_attrs["devices"][s_person]).astype(np.int8)
    s_logged = person_attrs["user"][s_person] & (rng.random(n_sess) < 0.7)
    s_campaign = np.where(rng.random(n_sess) < 0.45, rng.integers(0, cfg.campaigns, n_sess), -1).astype(
        np.int16
    )
    chan_of_campaign = np.arange(cfg.campaigns) % len(cfg.channels)
    chan_of_source = np.array([cfg.channels.index(s) if s in cfg.channels else -1 for s in SOURCES])
    s_channel = np.where(
        s_campaign >= 0,
        np.where(rng.random(n_sess) < 0.8, chan_of_campaign[np.maximum(s_campaign, 0)], -1),
        np.where(rng.random(n_sess) < 0.1, chan_of_source[s_source], -1),
    ).astype(np.int16)

    sess = np.repeat(np.arange(n_sess, dtype=np.int32), lengths)
    first = np.zeros(n_base, dtype=bool)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    first[starts] = True

    # --- event times ------------------------------------------------------------------------------
    gaps = np.minimum(1_000 + rng.exponential(20_000, n_base), 150_000).astype(np.int64)
    gaps[first] = 0
    cum = np.cumsum(gaps)
    offset = cum - cum[starts][sess]
    dur = offset[np.cumsum(lengths) - 1]
    room = np.maximum(cfg.span_ms - dur, 1)
    s_start = cfg.start_ms + (rng.random(n_sess) * room).astype(np.int64)
    ts = np.minimum(s_start[sess] + offset, cfg.start_ms + cfg.span_ms - 1)

    iso = cfg.iso_ts_share
    ts_fmt = rng.choice(
        6, n_base, p=[1 - iso, 0.5 * iso, 0.3 * iso, 0.1 * iso, 0.05 * iso, 0.05 * iso]
    ).astype(np.int8)
    ts = np.where(ts_fmt == 3, ts - ts % 1_000, ts)

    tail_max = min(600_000, limits.allowed_lateness_ms // 4)
    tail = np.exp(rng.uniform(np.log(3_000), np.log(max(tail_max, 3_001)), n_base)).astype(np.int64)
    delay = np.where(rng.random(n_base) < 0.99, rng.integers(0, min(3_000, tail_max) + 1, n_base), tail)
    rec = ts + delay
    del gaps, cum, offset, tail, delay
    if cfg.late_share and noise is not None:
        late_ix = np.flatnonzero(noise.random(n_base) < cfg.late_share)
        hi = max(limits.allowed_lateness_ms // 2, tail_max + 1)
        rec[late_ix] = ts[late_ix] + noise.integers(tail_max, hi, len(late_ix))

    # --- what happens ------------------------------------------------------------------------------
    person = s_person[sess]
    source = s_source[sess]
    etype = _types_by_source(rng, source)
    logged = s_logged[sess]
    etype = np.where(first & logged & (rng.random(n_base) < 0.5), ET["login"], etype).astype(np.int8)
    campaign = s_campaign[sess]
    needs_campaign = (etype == ET["exposure"]) | (etype == ET["coupon_redeem"])
    campaign = np.where(
        (campaign < 0) & needs_campaign, rng.integers(0, cfg.campaigns, n_base, dtype=np.int16), campaign
    )
    del needs_campaign
    channel = s_channel[sess]

    pop = 1.0 / (np.arange(cfg.items) + 10.0)
    item = rng.choice(cfg.items, n_base, p=pop / pop.sum()).astype(np.int32)
    qty = rng.choice(np.array([1, 2, 3], dtype=np.int8), n_base, p=[0.75, 0.18, 0.07])
    qty_fmt = np.where(
        (qty == 1) & (rng.random(n_base) < 0.3), 1, np.where(rng.random(n_base) < 0.03, 2, 0)
    ).astype(np.int8)
    has_price = (
        (etype == ET["add_to_cart"])
        | (etype == ET["purchase"])
        | ((etype == ET["page_view"]) & (rng.random(n_base) < 0.3))
    )
    u = rng.random(n_base)
    price_fmt = np.where(has_price, np.where(u < 0.06, 1, np.where(u > 0.995, 2, 0)), -1).astype(np.int8)
    del u, has_price
    price_milli = (
        person_attrs["item_cents"][item] * 10
        + np.where(price_fmt == 2, rng.choice(np.array([5, 5, 4, 6]), n_base), 0)
    ).astype(np.int32)

    idmask = _idmasks(rng, person_attrs, person, source, etype, logged)
    device = s_device[sess]
    kiosk = junk = None
    if noise is not None and cfg.kiosk_share:
        s_kiosk = np.where(
            (s_source == SRC["web"]) & (noise.random(n_sess) < cfg.kiosk_share),
            noise.integers(0, max(cfg.kiosks, 1), n_sess),
            -1,
        ).astype(np.int16)
        kiosk = s_kiosk[sess]
    if noise is not None and cfg.junk_id_share:
        from .identity import JUNK

        junk = np.where(
            noise.random(n_base) < cfg.junk_id_share, noise.integers(0, len(JUNK), n_base), -1
        ).astype(np.int8)
    del sess, logged, first

    # --- faults ----------------------------------------------------------------------------------
    code = np.zeros(n_base, dtype=np.int16)
    perm = rng.permutation(n_base)
    pos = 0
    for reason in DLQ_REASONS:
        code[perm[pos : pos + counts[reason]]] = CODE[reason]
        pos += counts[reason]
    code[perm[pos : pos + n_edge]] = EDGE_BASE + np.arange(n_edge) % len(EDGES)
    pos += n_edge
    exact = perm[pos : pos + counts["dup_exact"]]
    pos += counts["dup_exact"]
    conflict = perm[pos : pos + counts["dup_conflict"]]
    originals = np.concatenate([exact, conflict]).astype(np.int32)
    n_exact = len(exact)
    del perm, exact, conflict

    extra = _compound(rng, code, cfg.compound_share)
    salt = rng.integers(0, 2**31, n_base, dtype=np.int32)

    # Late: arrives allowed_lateness + 1 h (a fifth: + 1 ms) after its event time.
    late = np.flatnonzero((code == CODE["late"]) | (extra == CODE["late"]))
    rec[late] = ts[late] + limits.allowed_lateness_ms + np.where(rng.random(len(late)) < 0.2, 1, 3_600_000)
    edge = np.flatnonzero(code == EDGE["delay_equals_lateness"])
    rec[edge] = ts[edge] + limits.allowed_lateness_ms
    # Future: event time 1 day (a fifth: skew + 1 ms) ahead of the record timestamp.
    future = np.flatnonzero((code == CODE["future_ts"]) | (extra == CODE["future_ts"]))
    ts[future] = rec[future] + np.where(
        rng.random(len(future)) < 0.2, limits.max_future_skew_ms + 1, 86_400_000
    )
    edge = np.flatnonzero(code == EDGE["ts_equals_skew"])
    ts[edge] = rec[edge] + limits.max_future_skew_ms
    emit = rec + rng.integers(0, 1_500, n_base)

    # --- duplicates and the emission order ----------------------------------------------------------
    dup_gap = rng.integers(
        2_000, max(min(300_000, limits.allowed_lateness_ms // 4), 2_001) + 1, len(originals)
    )
    row_src = np.concatenate([np.arange(n_base, dtype=np.int32), originals])
    row_code = np.concatenate(
        [
            code,
            np.full(n_exact, DUP_EXACT, np.int16),
            np.full(len(originals) - n_exact, DUP_CONFLICT, np.int16),
        ]
    )
    row_extra = np.concatenate([extra, np.zeros(len(originals), np.int16)])
    row_rec = np.concatenate([rec, rec[originals] + dup_gap])
    row_emit = np.concatenate([emit, emit[originals] + dup_gap])
    del emit
    order = np.argsort(row_emit, kind="stable")
    del row_emit

    return Plan(
        n_base=n_base,
        person=person,
        source=source,
        device=device,
        campaign=campaign,
        channel=channel,
        etype=etype,
        item=item,
        qty=qty,
        qty_fmt=qty_fmt,
        price_fmt=price_fmt,
        price_milli=price_milli,
        ts=ts,
        ts_fmt=ts_fmt,
        idmask=idmask,
        phone_form=rng.integers(0, 8, n_base, dtype=np.int8),
        email_form=rng.integers(0, 5, n_base, dtype=np.int8),
        order_no=rng.integers(10**11, 10**12, n_base),
        salt=salt,
        event_ids=rng.bytes(16 * n_base),
        row_src=row_src[order].astype(np.int32),
        row_code=row_code[order],
        row_extra=row_extra[order],
        row_rec=row_rec[order],
        kiosk=kiosk,
        junk=junk,
    )


def _idmasks(
    rng: np.random.Generator,
    attrs: dict[str, np.ndarray],
    person: np.ndarray,
    source: np.ndarray,
    etype: np.ndarray,
    logged: np.ndarray,
) -> np.ndarray:
    """Which identifiers each event carries, by source (see the module docstring of stream.py)."""
    n = len(person)
    has_user = attrs["user"][person]
    has_phone = attrs["phone"][person]
    has_email = attrs["email"][person]
    has_openid = attrs["openid"][person]
    has_unionid = attrs["unionid"][person]
    r = [rng.random(n) for _ in range(4)]
    web, app = source == SRC["web"], source == SRC["app"]
    store, crm, cs = source == SRC["store"], source == SRC["crm"], source == SRC["cs"]
    online = web | app
    contact = online & ((etype == ET["register"]) | (etype == ET["purchase"]))

    user = (
        (online & logged)
        | (store & has_user)
        | (crm & has_user & (r[0] < 0.5))
        | (cs & has_user & (r[0] < 0.3))
    )
    phone = has_phone & ((contact & (r[1] < 0.5)) | (store & (r[1] < 0.9)) | (crm & (r[1] < 0.5)) | cs)
    email = has_email & ((contact & (r[2] < 0.4)) | crm)
    openid = app & has_openid & (r[3] < 0.8)
    unionid = openid & has_unionid
    device = online | ~(user | phone | email)
    mask = (
        (device * ID_DEVICE)
        | (web * ID_COOKIE)
        | (user * ID_USER)
        | (phone * ID_PHONE)
        | (email * ID_EMAIL)
        | (openid * ID_OPENID)
        | (unionid * ID_UNIONID)
    )
    return mask.astype(np.int8)


def _compound(rng: np.random.Generator, code: np.ndarray, share: float) -> np.ndarray:
    """For a ``share`` of the DLQ rows, the code of one later check on another field (else 0)."""
    extra = np.zeros(len(code), dtype=np.int16)
    rows = np.flatnonzero((code >= 1) & (code <= len(DLQ_REASONS)))
    pick = rng.random(len(rows)) < share
    choice = rng.random(len(rows))
    for r, p, c in zip(rows, pick, choice, strict=True):
        reason = DLQ_REASONS[code[r] - 1]
        if not p or reason in _NO_EXTRAS:
            continue
        later = [j for j in DLQ_REASONS[code[r] :] if _FIELD[j] != _FIELD[reason]]
        if later:
            extra[r] = CODE[later[int(c * len(later))]]
    return extra
