"""The seeded, deterministic synthetic clickstream: :func:`generate` yields Kafka :class:`Record` s.

Contract
  * ``generate(cfg, limits)`` yields exactly ``cfg.events`` records; the same ``cfg`` and limits
    always give the same records, byte for byte (numpy ``PCG64`` + ``random.Random`` per fault).
  * Records come in emission order. Each record's ``partition`` is ``crc32(key) % cfg.partitions``
    and its topic is ``cfg.topic_for(source)``; producing them in this order makes the stream order of
    the records of one (topic, partition) their offset order.
  * ``kind`` is ``"ok"`` for a valid event read first, ``"dup"`` for a valid re-use of an earlier
    event_id (same topic and partition, after the original), else the DLQ reason of
    docs/semantics.md. Valid events read first (``ok``) have event times in
    ``[start_ms, start_ms + span_ms)``, except the boundary case ``ts_equals_skew`` (≤ skew later).

Identifiers per event (``timeline._idmasks``): web → device_id + cookie_id, app → device_id and
often openid (+ unionid); logged-in sessions add user_id; web/app register and purchase events add
phone / e-mail some of the time; store → user_id (members) and/or phone; crm → e-mail, phone,
user_id; cs → phone. Events that would have none fall back to device_id. Phone and e-mail are raw,
in one of several spellings per event (``population.phone_spellings``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson

from config.settings import JobSettings

from . import faults
from .identity import JUNK, cookie_of, kiosk_devices, make_population, noise_rng
from .model import DLQ_REASONS, EVENT_TYPES, SOURCES, GeneratorConfig, Record
from .population import STORES, make_campaigns, make_catalogue
from .timeline import (
    CODE,
    DUP_CONFLICT,
    DUP_EXACT,
    EDGE_BASE,
    EDGES,
    ID_COOKIE,
    ID_DEVICE,
    ID_EMAIL,
    ID_OPENID,
    ID_PHONE,
    ID_UNIONID,
    ID_USER,
    OK,
    TS_OFFSET_MIN,
    Limits,
    make_plan,
)

__all__ = ["generate", "limits_of"]

_CHUNK = 65_536
_SUFFIX = ("Z", "Z", "+08:00", "Z", "+05:30", "-05:00")
_PURCHASE, _CART, _VIEW, _EXPOSURE, _COUPON = (
    EVENT_TYPES.index(t) for t in ("purchase", "add_to_cart", "page_view", "exposure", "coupon_redeem")
)
_LOGIN, _REGISTER = EVENT_TYPES.index("login"), EVENT_TYPES.index("register")
_STORE = SOURCES.index("store")
_SLOTS = ("home_banner", "search_top", "feed_card", "push_landing")
_METHODS = ("password", "sms_code", "wechat", "qr_scan")
_REASON_OF_CODE = {c: r for r, c in CODE.items()}


def limits_of(job: JobSettings | None) -> Limits:
    job = job or JobSettings()
    return Limits(job.max_event_bytes, job.max_future_skew_ms, job.allowed_lateness_ms)


def iso_ts(ts: int, fmt: int) -> str:
    """``ts`` as ISO-8601 in the offset of ``fmt`` (see ``timeline.TS_OFFSET_MIN``)."""
    if fmt == 3 and ts % 1_000:
        fmt = 1
    sec, ms = divmod(ts + TS_OFFSET_MIN[fmt] * 60_000, 1_000)
    t = time.gmtime(sec)
    frac = "" if fmt == 3 else f".{ms:03d}"
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:"
        f"{t.tm_sec:02d}{frac}{_SUFFIX[fmt]}"
    )


def _price_value(milli: int, fmt: int) -> Any:
    if fmt == 1:
        return f"{milli // 1000}.{milli % 1000 // 10:02d}"
    return milli / 1000


def generate(cfg: GeneratorConfig, job: JobSettings | None = None) -> Iterator[Record]:
    """Yield the stream described by ``cfg``, with faults sized against ``job``'s limits."""
    limits = limits_of(job)
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    noise = noise_rng(cfg) if cfg.identity_noise else None
    persons, _ = make_population(cfg, rng, noise)
    items = make_catalogue(rng, cfg.items)
    campaigns = make_campaigns(cfg.campaigns, cfg.channels)
    attrs = {
        "devices": np.array([len(p.devices) for p in persons]),
        "user": np.array([p.user_id is not None for p in persons]),
        "phone": np.array([p.phones is not None for p in persons]),
        "email": np.array([p.emails is not None for p in persons]),
        "openid": np.array([p.openid is not None for p in persons]),
        "unionid": np.array([p.unionid is not None for p in persons]),
        "item_cents": np.array([it.price_cents for it in items], dtype=np.int64),
    }
    plan = make_plan(cfg, limits, attrs, rng, noise)
    yield from _serialise(cfg, limits, plan, persons, items, campaigns)


def _serialise(
    cfg: GeneratorConfig,
    limits: Limits,
    plan: Any,
    persons: list[Any],
    items: list[Any],
    campaigns: list[Any],
) -> Iterator[Record]:
    dumps = orjson.dumps
    topics = [cfg.topic_for(s) for s in SOURCES]
    campaign_ids = [c.campaign_id for c in campaigns]
    channels = cfg.channels
    max_bytes = limits.max_event_bytes
    eids = plan.event_ids
    seed = cfg.seed
    cache: dict[int, bytes] = {}  # bytes of originals that an exact duplicate re-sends
    dup_exact_src = set(plan.row_src[plan.row_code == DUP_EXACT].tolist())

    kiosks = kiosk_devices(cfg)
    kiosk_cookies = tuple(cookie_of(d) for d in kiosks)
    n_rows = len(plan.row_src)
    for lo in range(0, n_rows, _CHUNK):
        rows = slice(lo, min(lo + _CHUNK, n_rows))
        src = plan.row_src[rows]
        cols = zip(
            src.tolist(),
            plan.row_code[rows].tolist(),
            plan.row_extra[rows].tolist(),
            plan.row_rec[rows].tolist(),
            plan.person[src].tolist(),
            plan.source[src].tolist(),
            plan.device[src].tolist(),
            plan.campaign[src].tolist(),
            plan.channel[src].tolist(),
            plan.etype[src].tolist(),
            plan.item[src].tolist(),
            plan.qty[src].tolist(),
            plan.qty_fmt[src].tolist(),
            plan.price_fmt[src].tolist(),
            plan.price_milli[src].tolist(),
            plan.ts[src].tolist(),
            plan.ts_fmt[src].tolist(),
            plan.idmask[src].tolist(),
            plan.phone_form[src].tolist(),
            plan.email_form[src].tolist(),
            plan.order_no[src].tolist(),
            plan.salt[src].tolist(),
            plan.kiosk[src].tolist() if plan.kiosk is not None else [-1] * len(src),
            plan.junk[src].tolist() if plan.junk is not None else [-1] * len(src),
            strict=True,
        )
        for (
            i,
            code,
            extra,
            rec,
            pi,
            si,
            dev,
            camp,
            chan,
            et,
            it,
            qty,
            qty_fmt,
            price_fmt,
            milli,
            ts,
            ts_fmt,
            mask,
            phone_form,
            email_form,
            order_no,
            salt,
            kiosk,
            junk,
        ) in cols:
            person = persons[pi]
            if code == DUP_EXACT:
                yield Record(topics[si], person.partition, person.key, cache.pop(i), rec, "dup")
                continue
            h = eids[16 * i : 16 * i + 16].hex()
            ids: dict[str, str] = {}
            if mask & ID_USER:
                ids["user_id"] = person.user_id
            if mask & ID_DEVICE:
                ids["device_id"] = person.devices[dev]
            if mask & ID_COOKIE:
                ids["cookie_id"] = person.cookies[dev]
            if kiosk >= 0:
                ids["device_id"], ids["cookie_id"] = kiosks[kiosk], kiosk_cookies[kiosk]
            if mask & ID_OPENID:
                ids["openid"] = person.openid
            if mask & ID_UNIONID:
                ids["unionid"] = person.unionid
            if mask & ID_PHONE:
                ids["phone"] = person.phones[phone_form]
            if mask & ID_EMAIL:
                ids["email"] = person.emails[email_form]
            props: dict[str, Any] = {}
            if camp >= 0:
                props["campaign_id"] = campaign_ids[camp]
            if chan >= 0:
                props["channel"] = channels[chan]
            item = items[it]
            if et == _VIEW:
                props["page"] = "/item/" + item.item_id
                props["title"] = item.title
            if et in (_VIEW, _CART, _PURCHASE, _EXPOSURE):
                props["item_id"] = item.item_id
                props["category"] = item.category
            if price_fmt >= 0:
                props["price"] = _price_value(milli, price_fmt)
            if et == _CART or et == _PURCHASE:
                if qty_fmt == 0:
                    props["qty"] = qty
                elif qty_fmt == 2:
                    props["qty"] = str(qty)
                if et == _PURCHASE:
                    props["order_id"] = f"SO{order_no}"
            elif et == _EXPOSURE:
                props["slot"] = _SLOTS[order_no % 4]
            elif et == _COUPON:
                props["coupon_id"] = f"cp-{order_no % 100_000:05d}"
            elif et == _LOGIN or et == _REGISTER:
                props["method"] = _METHODS[order_no % 4]
            if si == _STORE:
                props["store_id"], props["store_name"] = STORES[order_no % len(STORES)]
            d = {
                "event_id": f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",
                "event_type": EVENT_TYPES[et],
                "ts": ts if ts_fmt == 0 else iso_ts(ts, ts_fmt),
                "source": SOURCES[si],
                "ids": ids,
                "props": props,
            }
            if code == OK:
                if junk >= 0:
                    jt, jv = JUNK[junk]
                    if jt not in ids or len(ids) > 1:  # never the event's only identifier
                        ids[jt] = jv
                value = dumps(d)
                if len(value) > max_bytes:
                    raise AssertionError(f"a valid event grew to {len(value)} bytes > {max_bytes}")
                if i in dup_exact_src:
                    cache[i] = value
                kind = "ok"
            elif code == DUP_CONFLICT:
                faults.conflict(d, random.Random(seed * 1_000_003 + i), ts, rec - ts)
                value = dumps(d)
                kind = "dup"
            elif code >= EDGE_BASE:
                rnd = random.Random(seed * 1_000_003 + salt)
                value = faults.apply_edge(EDGES[code - EDGE_BASE], d, rnd, milli // 10, max_bytes) or dumps(d)
                kind = "ok"
            else:
                kind = _REASON_OF_CODE[code]
                value = _broken(
                    d, kind, _REASON_OF_CODE.get(extra), random.Random(seed * 1_000_003 + salt), ts, max_bytes
                )
            yield Record(topics[si], person.partition, person.key, value, rec, kind)


_BYTE_LEVEL = ("oversized", "not_utf8", "malformed_json")


def _broken(
    d: dict[str, Any], reason: str, extra: str | None, rnd: random.Random, ts: int, max_bytes: int
) -> bytes:
    """The bytes of ``d`` made to fail ``reason`` (and, if given, the later check ``extra`` too)."""
    if extra in faults.PAYLOAD_MUTATORS:
        faults.PAYLOAD_MUTATORS[extra](d, rnd, ts)
    if reason in faults.PAYLOAD_MUTATORS:
        faults.PAYLOAD_MUTATORS[reason](d, rnd, ts)
        return orjson.dumps(d)
    if reason not in _BYTE_LEVEL:  # future_ts, late: the timeline moved ts or the record timestamp
        return orjson.dumps(d)
    if "not_utf8" in (reason, extra):
        faults.prepare_not_utf8(d)
    if "malformed_json" in (reason, extra):
        faults.prepare_malformed(d)
    if reason == "oversized" and extra not in _BYTE_LEVEL:
        return faults.oversize(None, d, rnd, max_bytes)
    v = orjson.dumps(d)
    if "malformed_json" in (reason, extra):
        v = faults.break_json(v, d, rnd)
    if "not_utf8" in (reason, extra):
        v = faults.break_utf8(v, rnd)
    if reason == "oversized":
        v = faults.oversize(v, d, rnd, max_bytes)
    return v


assert set(_BYTE_LEVEL) | set(faults.PAYLOAD_MUTATORS) | {"future_ts", "late"} == set(DLQ_REASONS)
