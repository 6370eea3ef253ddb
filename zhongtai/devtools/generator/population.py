"""Who and what the synthetic stream is about: persons, the catalogue and the campaigns.

Everything is drawn from the one seeded ``numpy.random.Generator`` passed in, in a fixed order, so a
seed fixes every identifier. Raw phone numbers and e-mail addresses come in several spellings per
person (spaces, dashes, ``+86``/``0086`` prefixes, mixed case, surrounding blanks) that all
normalise to one value under docs/semantics.md's PII rules.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

_FAMILY = ("wang", "li", "zhang", "liu", "chen", "yang", "zhao", "huang", "zhou", "wu", "xu", "sun")
_GIVEN = ("wei", "fang", "na", "min", "jing", "lei", "jun", "yang", "yan", "tao", "xin", "hui")
_DOMAINS = ("qq.com", "163.com", "126.com", "gmail.com", "example.com", "sina.com", "outlook.com")
_MOBILE_PREFIXES = ("130", "133", "135", "138", "139", "150", "158", "177", "186", "188", "199")
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

#: (id, English name, Chinese title used in ``props.title``)
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("apparel", "双十一预售 女装"),
    ("shoes", "运动鞋 限时折扣"),
    ("beauty", "美妆 满减"),
    ("digital", "数码 以旧换新"),
    ("home", "家居 新品"),
    ("food", "零食 第二件半价"),
    ("baby", "母婴 会员专享"),
    ("sports", "户外运动 清仓"),
)

STORES: tuple[tuple[str, str], ...] = (
    ("sh-001", "上海南京西路店"),
    ("bj-002", "北京三里屯店"),
    ("gz-003", "广州天河城店"),
    ("cd-004", "成都春熙路店"),
)


def phone_spellings(digits: str) -> tuple[str, ...]:
    """Ways people and systems write the 11-digit mainland mobile ``digits``; all normalise alike."""
    a, b, c = digits[:3], digits[3:7], digits[7:]
    return (
        digits,
        f"{a} {b} {c}",
        f"{a}-{b}-{c}",
        f"+86-{a}-{b}-{c}",
        f"+86 {digits}",
        f"0086 {digits}",
        f"(+86) {a} {b} {c}",
        f"86 {a} {b} {c}",
    )


def email_spellings(canonical: str) -> tuple[str, ...]:
    """Spellings of the lower-case ``canonical`` address that trim and lower-case back to it."""
    local, domain = canonical.split("@")
    return (
        canonical,
        f"{local.title()}@{domain.title()}",
        f" {local}@{domain.upper()} ",
        canonical.upper(),
        f"\t{canonical}",
    )


@dataclass(frozen=True, slots=True)
class Person:
    devices: tuple[str, ...]
    #: Kafka key of every record about this person: the first device id, UTF-8.
    key: bytes
    partition: int
    cookies: tuple[str, ...]
    user_id: str | None
    phones: tuple[str, ...] | None
    emails: tuple[str, ...] | None
    openid: str | None
    unionid: str | None


@dataclass(frozen=True, slots=True)
class Item:
    item_id: str
    category: str
    title: str
    price_cents: int


@dataclass(frozen=True, slots=True)
class Campaign:
    campaign_id: str
    channel: str


def _uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def make_persons(
    rng: np.random.Generator,
    n: int,
    partitions: int,
    *,
    logged_in_share: float,
    phone_share: float,
    email_share: float,
    openid_share: float,
    unionid_share: float,
) -> list[Person]:
    dev_count = rng.integers(1, 4, n)
    dev_raw = rng.bytes(16 * 3 * n)
    u = rng.random((n, 5))
    nums = rng.integers(0, 10**8, (n, 3))
    wx = rng.integers(0, 64, (n, 55))
    persons = []
    for p in range(n):
        devices = tuple(_uuid(dev_raw[(3 * p + d) * 16 : (3 * p + d + 1) * 16]) for d in range(dev_count[p]))
        key = devices[0].encode()
        user_id = f"u{nums[p, 0]:08d}" if u[p, 0] < logged_in_share else None
        phones = None
        if u[p, 1] < phone_share:
            pre = _MOBILE_PREFIXES[int(nums[p, 1]) % len(_MOBILE_PREFIXES)]
            phones = phone_spellings(f"{pre}{nums[p, 2]:08d}")
        emails = None
        if u[p, 2] < email_share:
            name = f"{_GIVEN[int(nums[p, 1]) % 12]}.{_FAMILY[int(nums[p, 2]) % 12]}{p}"
            emails = email_spellings(f"{name}@{_DOMAINS[int(nums[p, 0]) % len(_DOMAINS)]}")
        openid = unionid = None
        if u[p, 3] < openid_share:
            openid = "o" + "".join(_B64[i] for i in wx[p, :27])
            if u[p, 4] < unionid_share:
                unionid = "oU" + "".join(_B64[i] for i in wx[p, 27:53])
        persons.append(
            Person(
                devices=devices,
                key=key,
                partition=zlib.crc32(key) % partitions,
                cookies=tuple("ck_" + d.replace("-", "")[:20] for d in devices),
                user_id=user_id,
                phones=phones,
                emails=emails,
                openid=openid,
                unionid=unionid,
            )
        )
    return persons


def make_catalogue(rng: np.random.Generator, n: int) -> list[Item]:
    cats = rng.integers(0, len(CATEGORIES), n)
    # Log-normal prices around 150 yuan, whole yuan minus 1 fen or 10 fen half of the time.
    yuan = np.clip(np.round(rng.lognormal(np.log(150), 0.9, n)), 5, 9_999).astype(np.int64)
    cents = yuan * 100 - rng.choice(np.array([0, 1, 10]), n, p=[0.4, 0.4, 0.2])
    return [
        Item(f"sku{100000 + i}", CATEGORIES[cats[i]][0], CATEGORIES[cats[i]][1], int(cents[i]))
        for i in range(n)
    ]


def make_campaigns(n: int, channels: tuple[str, ...]) -> list[Campaign]:
    """Campaign ``k`` runs on ``channels[k % len(channels)]`` so every channel has a campaign."""
    return [Campaign(f"cmp-{k + 1:02d}", channels[k % len(channels)]) for k in range(n)]
