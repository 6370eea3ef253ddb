"""Experiment definitions: YAML files, run-time control messages, and the unit -> variation call.

Pure: no pyflink, no clients, no clock (``now_ms`` is an argument where time matters).

A definition (:class:`ExperimentDefinition`) wraps the assignment part (:class:`~.assignment.Experiment`:
key, hash seed, hash version, unit, coverage, variations with weights, namespace, start/stop) with
what the stream needs to measure it: the event types at which the stream itself assigns a unit
(``assign_on``), the conversion metric (event type + window after exposure), the revenue metric
(sum of ``amount`` of an event type after exposure) and the CUPED covariate (the same revenue in
the ``covariate_days`` before exposure). ``targeting`` is a tag expression (``operators.expr``), kept
as text and checked with ``compile_expr`` (skipped when that module is not importable).

YAML (``config/experiments.yaml``)::

    experiments:
      - key: coupon-value
        version: 1
        hash_seed: coupon-value-2026      # default: key
        hash_version: 2                   # GrowthBook's unbiased hash (1 = legacy)
        unit: person                      # person | device
        coverage: 1.0
        variants: [{key: coupon10, weight: 0.5}, {key: coupon20, weight: 0.5}]
        namespace: {name: coupons, start: 0.0, end: 0.5}   # or [coupons, 0.0, 0.5]
        targeting: null
        start: 2026-11-01T00:00:00Z       # epoch ms or ISO 8601; null = open
        stop: null
        assign_on: [register]             # the stream assigns at these events; [] = app exposures only
        conversion: {event_type: coupon_redeem, window: 7d}
        revenue: {event_type: purchase, window: 7d}
        cuped: {covariate_days: 30}

Errors name the file, the line and the field (``config/experiments.yaml:12: experiments[0].coverage:
...``); control messages name the message instead of a file.

Run time: :meth:`ExperimentRegistry.apply` takes one control message
``{"kind": "experiment", "op": "upsert"|"stop"|"delete", "key": ..., "version": n, "definition": {...}}``
and returns the new registry and a :class:`ControlResult`. A message whose version is not above
the key's last accepted version (deletes included) is stale; a stale or broken message is
rejected with its reason and the registry is returned unchanged.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .assignment import Experiment
from .assignment import assign as _assign

__all__ = [
    "ControlResult",
    "DefinitionError",
    "ExperimentDefinition",
    "ExperimentRegistry",
    "MetricSpec",
    "assign",
    "control_message",
    "definition_from_mapping",
    "load_definitions",
    "parse_definitions",
    "validate_file",
]

#: ``item``: a pricing experiment assigns items, never persons (docs/pricing.md); its statistics run only in a
#: job with ``pricing.enabled``.
UNITS = ("person", "device", "item")
#: The stream encodes a variation index in 10 bits (pipelines/experiment_stats.py).
MAX_VARIANTS = 1024
CONTROL_KIND = "experiment"
CONTROL_OPS = ("upsert", "stop", "delete")
_DAY_MS = 86_400_000
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_DURATION_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": _DAY_MS}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


class DefinitionError(ValueError):
    """One or more definition problems; ``errors`` lists them, one ``where: field: what to do`` each."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """An event type counted from the unit's first exposure on, for ``window_ms`` (None = no end).

    An event at exactly the exposure time counts as post-exposure.
    """

    event_type: str
    window_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ExperimentDefinition:
    """One experiment: assignment (``experiment``) plus what the stream measures.

    ``assign_on``: event types at which the stream assigns a unit that has no exposure event yet
    (its first such event is its exposure); empty = exposures come only from apps. ``conversion``:
    a unit converted when it has one such event in the window after its first exposure.
    ``revenue``: per unit, the sum of ``amount`` of such events in the window after exposure.
    ``covariate_days``: CUPED covariate = the same revenue sum in the days before exposure (0 = none).
    """

    experiment: Experiment
    version: int = 1
    targeting: str | None = None
    assign_on: tuple[str, ...] = ()
    conversion: MetricSpec = MetricSpec("purchase")
    revenue: MetricSpec = MetricSpec("purchase")
    covariate_days: int = 0
    _bucketing: Experiment = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "assign_on", tuple(self.assign_on))
        # The start/stop window is applied to event time by the stream (pipelines/experiment_stats.py);
        # the unit -> variation choice itself is timeless, as in an SDK.
        object.__setattr__(self, "_bucketing", dataclasses.replace(self.experiment, start_ms=None, stop_ms=None))

    @property
    def key(self) -> str:
        return self.experiment.key

    @property
    def variations(self) -> tuple[str, ...]:
        return self.experiment.variations

    @property
    def unit(self) -> str:
        return self.experiment.unit

    @property
    def covariate_ms(self) -> int:
        return self.covariate_days * _DAY_MS

    def to_dict(self) -> dict[str, Any]:
        """The YAML/JSON form (what :func:`definition_from_mapping` reads back to an equal definition)."""
        e = self.experiment
        weights = e.weights or (None,) * len(e.variations)
        out: dict[str, Any] = {
            "key": e.key,
            "version": self.version,
            "hash_seed": e.hash_seed or None,
            "hash_version": e.hash_version,
            "unit": e.unit,
            "coverage": e.coverage,
            "variants": [
                {"key": v} if w is None else {"key": v, "weight": w} for v, w in zip(e.variations, weights)
            ],
            "namespace": None if e.namespace is None else list(e.namespace),
            "targeting": self.targeting,
            "start": e.start_ms,
            "stop": e.stop_ms,
            "assign_on": list(self.assign_on),
            "conversion": {"event_type": self.conversion.event_type, "window": self.conversion.window_ms},
            "revenue": {"event_type": self.revenue.event_type, "window": self.revenue.window_ms},
            "cuped": {"covariate_days": self.covariate_days},
        }
        return out


def assign(defn: ExperimentDefinition, unit_id: object, now_ms: int | None = None) -> int | None:
    """The unit's variation index, or None when the unit is not in the experiment.

    Exactly :func:`operators.experiments.assignment.assign` (GrowthBook's hash, namespace and
    coverage). With ``now_ms`` None the start/stop window is not checked (the stream checks it on
    the event's time); with ``now_ms`` given, a unit outside [start, stop) gets None. Targeting is
    not evaluated here: it needs the unit's tags (``operators.experiments.control.eligible``).
    """
    exp = defn._bucketing if now_ms is None else defn.experiment
    result = _assign(exp, unit_id, 0 if now_ms is None else now_ms)
    return None if result is None else result.variation_id


# ---- parsing ------------------------------------------------------------------------------------


class _LocatedDict(dict):
    """A YAML mapping that remembers its line and the line of each key (1-based)."""

    line: int | None = None
    key_lines: dict[Any, int]
    value_starts: dict[Any, tuple[int, int]]  # (line, column) where the value's text starts


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_located(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _LocatedDict:
    out = _LocatedDict(loader.construct_mapping(node, deep=True))
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    out.value_starts = {}
    for k, v in node.value:
        key = loader.construct_object(k, deep=True)
        out.key_lines[key] = k.start_mark.line + 1
        quoted = isinstance(v, yaml.ScalarNode) and v.style in ("'", '"')
        out.value_starts[key] = (v.start_mark.line + 1, v.start_mark.column + 1 + (1 if quoted else 0))
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_located)


@dataclass
class _Problems:
    """Collects ``source:line: path: message`` lines while one document is read."""

    source: str
    errors: list[str] = field(default_factory=list)

    def add(self, where: Mapping[str, Any] | None, key: str | None, path: str, message: str) -> None:
        line = None
        if isinstance(where, _LocatedDict):
            line = where.key_lines.get(key, where.line) if key is not None else where.line
        loc = f"{self.source}:{line}" if line is not None else self.source
        self.errors.append(f"{loc}: {path}: {message}")


_FIELDS = (
    "key", "version", "hash_seed", "hash_version", "unit", "coverage", "variants", "namespace", "targeting",
    "start", "stop", "assign_on", "conversion", "revenue", "cuped",
)  # fmt: skip


def _time_ms(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be epoch milliseconds or an ISO 8601 time")  # noqa: TRY004 - a validation message
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.strip())
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("an ISO 8601 time needs a time zone (e.g. 2026-11-01T00:00:00Z)")
        return int(value.timestamp() * 1000)
    if isinstance(value, dt.date):
        return int(dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).timestamp() * 1000)
    raise ValueError("must be epoch milliseconds or an ISO 8601 time")


def _duration_ms(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        ms = value
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        ms = int(m.group(1)) * _DURATION_MS[m.group(2)]
    else:
        raise ValueError("must be milliseconds or a duration such as 500ms, 30m, 12h, 7d")
    if ms <= 0:
        raise ValueError("must be positive (leave it out for no window)")
    return ms


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"must be a number, got {value!r}")
    return float(value)


def _event_type(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(f"must be an event type name (letters, digits, _ . -), got {value!r}")
    return value


def _metric(raw: Any, default: MetricSpec, path: str, p: _Problems, parent: Any, key: str) -> MetricSpec:
    if raw is None:
        return default
    if isinstance(raw, str):
        raw = {"event_type": raw}
    if not isinstance(raw, Mapping):
        p.add(parent, key, path, "must be {event_type: ..., window: ...} or an event type")
        return default
    unknown = set(raw) - {"event_type", "window"}
    if unknown:
        p.add(raw, min(unknown), f"{path}.{min(unknown)}", "unknown field; known: event_type, window")
    spec = default
    try:
        spec = MetricSpec(_event_type(raw.get("event_type", default.event_type)), spec.window_ms)
    except ValueError as e:
        p.add(raw, "event_type", f"{path}.event_type", str(e))
    if raw.get("window") is not None:
        try:
            spec = MetricSpec(spec.event_type, _duration_ms(raw["window"]))
        except ValueError as e:
            p.add(raw, "window", f"{path}.window", str(e))
    return spec


def _variants(raw: Any, path: str, p: _Problems, parent: Any) -> tuple[tuple[str, ...], tuple[float, ...] | None]:
    if not isinstance(raw, list) or not 2 <= len(raw) <= MAX_VARIANTS:
        p.add(parent, "variants", path,
              f"needs a list of 2 to {MAX_VARIANTS} variants ({{key: ..., weight: ...}}), control first")
        return (), None
    keys: list[str] = []
    weights: list[float | None] = []
    for i, v in enumerate(raw):
        vpath = f"{path}[{i}]"
        if isinstance(v, str):
            v = {"key": v}
        if not isinstance(v, Mapping):
            p.add(parent, "variants", vpath, "must be {key: name, weight: w} or a name")
            continue
        unknown = set(v) - {"key", "weight"}
        if unknown:
            p.add(v, min(unknown), f"{vpath}.{min(unknown)}", "unknown field; known: key, weight")
        k = v.get("key")
        if not isinstance(k, str) or not _NAME.match(k):
            p.add(v, "key", f"{vpath}.key", f"must be a name (letters, digits, _ . -), got {k!r}")
        elif k in keys:
            p.add(v, "key", f"{vpath}.key", f"duplicate variant {k!r}: variant keys must be distinct")
        else:
            keys.append(k)
        w = v.get("weight")
        if w is not None:
            try:
                w = _number(w)
                if w < 0:
                    raise ValueError("must be >= 0")
            except ValueError as e:
                p.add(v, "weight", f"{vpath}.weight", str(e))
                return tuple(keys), None
        weights.append(w)
    given = [w for w in weights if w is not None]
    if given and len(given) != len(raw):
        p.add(parent, "variants", path, "give a weight to every variant or to none (equal split)")
        return tuple(keys), None
    if given and abs(sum(given) - 1.0) > 0.01:
        p.add(parent, "variants", path, f"weights {given} sum to {sum(given):g}; they must sum to 1")
        return tuple(keys), None
    return tuple(keys), tuple(given) if given else None


def _namespace(raw: Any, path: str, p: _Problems, parent: Any) -> tuple[str, float, float] | None:
    if raw is None:
        return None
    if isinstance(raw, Mapping):
        unknown = set(raw) - {"name", "start", "end"}
        if unknown:
            p.add(raw, min(unknown), f"{path}.{min(unknown)}", "unknown field; known: name, start, end")
        raw = [raw.get("name"), raw.get("start"), raw.get("end")]
    if not isinstance(raw, list) or len(raw) != 3:
        p.add(parent, "namespace", path, "must be {name: ..., start: s, end: e} or [name, start, end]")
        return None
    name, start, end = raw
    try:
        start, end = _number(start), _number(end)
    except ValueError as e:
        p.add(parent, "namespace", path, f"start and end {e}")
        return None
    if not isinstance(name, str) or not name or not 0.0 <= start < end <= 1.0:
        p.add(parent, "namespace", path, f"needs a name and 0 <= start < end <= 1, got {raw!r}")
        return None
    return (name, start, end)


def _targeting(raw: Any, path: str, p: _Problems, parent: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip():
        p.add(parent, "targeting", path, "must be a tag expression (text) or null")
        return None
    try:
        from operators.expr import ExprError, compile_expr
    except ImportError:  # the expression language is not in this tree: kept as text
        return raw
    line, column = 1, 1
    if isinstance(parent, _LocatedDict):
        line, column = parent.value_starts.get("targeting", (1, 1))
    try:
        compile_expr(raw, source=p.source, line=line, column=column)
    except ExprError as e:
        p.errors.append(f"{e.source}:{e.line}:{e.column}: {path}: does not compile: {e.message}")
    return raw


def _int(raw: Any, default: int, minimum: int, path: str, p: _Problems, parent: Any, key: str) -> int:
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < minimum:
        p.add(parent, key, path, f"must be a whole number >= {minimum}, got {raw!r}")
        return default
    return raw


def _definition(raw: Any, path: str, p: _Problems) -> ExperimentDefinition | None:
    """One definition from a mapping, or None with the problems recorded in ``p``."""
    if not isinstance(raw, Mapping):
        p.add(None, None, path, "must be a mapping with at least key and variants")
        return None
    before = len(p.errors)
    for k in raw:
        if k not in _FIELDS:
            p.add(raw, k, f"{path}.{k}", f"unknown field; known: {', '.join(_FIELDS)}")
    key = raw.get("key")
    if not isinstance(key, str) or not _NAME.match(key):
        p.add(raw, "key", f"{path}.key", f"must be a name (letters, digits, _ . -; up to 100), got {key!r}")
        key = "?"
    version = _int(raw.get("version"), 1, 0, f"{path}.version", p, raw, "version")
    hash_version = raw.get("hash_version", 2)
    if hash_version not in (1, 2) or isinstance(hash_version, bool):
        p.add(raw, "hash_version", f"{path}.hash_version", f"must be 2 (GrowthBook's unbiased hash) or 1, got {hash_version!r}")
        hash_version = 2
    seed = raw.get("hash_seed") or ""
    if not isinstance(seed, str):
        p.add(raw, "hash_seed", f"{path}.hash_seed", f"must be text, got {seed!r}")
        seed = ""
    unit = raw.get("unit", "person")
    if unit not in UNITS:
        p.add(raw, "unit", f"{path}.unit", f"must be one of {', '.join(UNITS)}, got {unit!r}")
        unit = "person"
    coverage = 1.0
    if raw.get("coverage") is not None:
        try:
            coverage = _number(raw["coverage"])
            if not 0.0 <= coverage <= 1.0:
                raise ValueError(f"must be within [0, 1], got {coverage:g}")
        except ValueError as e:
            p.add(raw, "coverage", f"{path}.coverage", str(e))
            coverage = 1.0
    variations, weights = _variants(raw.get("variants"), f"{path}.variants", p, raw)
    namespace = _namespace(raw.get("namespace"), f"{path}.namespace", p, raw)
    targeting = _targeting(raw.get("targeting"), f"{path}.targeting", p, raw)
    times: dict[str, int | None] = {"start": None, "stop": None}
    for k in times:
        if raw.get(k) is not None:
            try:
                times[k] = _time_ms(raw[k])
            except ValueError as e:
                p.add(raw, k, f"{path}.{k}", str(e))
    if times["start"] is not None and times["stop"] is not None and times["stop"] <= times["start"]:
        p.add(raw, "stop", f"{path}.stop", "must be after start")
    assign_on: tuple[str, ...] = ()
    raw_on = raw.get("assign_on") or []
    if not isinstance(raw_on, list):
        p.add(raw, "assign_on", f"{path}.assign_on", "must be a list of event types ([] = app exposures only)")
    else:
        try:
            assign_on = tuple(dict.fromkeys(_event_type(e) for e in raw_on))
        except ValueError as e:
            p.add(raw, "assign_on", f"{path}.assign_on", str(e))
        if "exposure" in assign_on:
            p.add(raw, "assign_on", f"{path}.assign_on", "exposure events carry their own variation; remove it")
    if assign_on and targeting is not None and unit != "person":
        p.add(raw, "assign_on", f"{path}.assign_on",
              "the stream evaluates targeting on person tags only: use unit person, or leave assign_on "
              "empty so that only app exposures (targeted by the app) count")  # fmt: skip
    conversion = _metric(raw.get("conversion"), MetricSpec("purchase"), f"{path}.conversion", p, raw, "conversion")
    revenue = _metric(raw.get("revenue"), MetricSpec("purchase"), f"{path}.revenue", p, raw, "revenue")
    covariate_days = 0
    cuped = raw.get("cuped")
    if cuped is not None:
        if not isinstance(cuped, Mapping) or set(cuped) - {"covariate_days"}:
            p.add(raw, "cuped", f"{path}.cuped", "must be {covariate_days: N} (pre-exposure revenue over N days)")
        else:
            covariate_days = _int(cuped.get("covariate_days"), 0, 0, f"{path}.cuped.covariate_days", p, cuped,
                                  "covariate_days")  # fmt: skip
    if len(p.errors) > before:
        return None
    try:
        experiment = Experiment(
            key=key, variations=variations, weights=weights, coverage=coverage, hash_seed=seed, unit=unit,
            namespace=namespace, hash_version=hash_version, start_ms=times["start"], stop_ms=times["stop"],
        )  # fmt: skip
    except ValueError as e:  # the assignment core's own checks (kept as a second line)
        p.add(raw, None, path, str(e))
        return None
    return ExperimentDefinition(experiment, version, targeting, assign_on, conversion, revenue, covariate_days)


def _overlaps(defs: Iterable[ExperimentDefinition]) -> list[str]:
    """Experiments of one namespace whose [start, end) slices overlap (not mutually exclusive)."""
    out = []
    seen: list[ExperimentDefinition] = []
    for d in defs:
        ns = d.experiment.namespace
        if ns is not None:
            for o in seen:
                other = o.experiment.namespace
                if other is not None and other[0] == ns[0] and ns[1] < other[2] and other[1] < ns[2]:
                    out.append(
                        f"namespace {ns[0]!r}: {d.key!r} [{ns[1]:g}, {ns[2]:g}) overlaps {o.key!r} "
                        f"[{other[1]:g}, {other[2]:g}); give experiments of one namespace disjoint slices"
                    )
        seen.append(d)
    return out


def definition_from_mapping(raw: Any, source: str = "definition", path: str = "definition") -> ExperimentDefinition:
    """One definition from a mapping (JSON / YAML); raises :class:`DefinitionError`."""
    p = _Problems(source)
    defn = _definition(raw, path, p)
    if defn is None:
        raise DefinitionError(p.errors)
    return defn


def parse_definitions(text: str, source: str = "<text>") -> tuple[ExperimentDefinition, ...]:
    """Definitions from YAML text (``experiments: [...]``); raises :class:`DefinitionError` listing every problem."""
    try:
        doc = yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass
    except yaml.YAMLError as e:
        raise DefinitionError([f"{source}: not valid YAML: {e}"]) from None
    p = _Problems(source)
    if not isinstance(doc, Mapping) or not isinstance(doc.get("experiments"), list):
        p.add(doc if isinstance(doc, Mapping) else None, "experiments", "experiments",
              "the file must hold `experiments:` with a list of definitions")  # fmt: skip
        raise DefinitionError(p.errors)
    defs: list[ExperimentDefinition] = []
    keys: dict[str, int] = {}
    for i, raw in enumerate(doc["experiments"]):
        d = _definition(raw, f"experiments[{i}]", p)
        if d is None:
            continue
        if d.key in keys:
            p.add(raw, "key", f"experiments[{i}].key", f"duplicate key {d.key!r} (also experiments[{keys[d.key]}])")
            continue
        keys[d.key] = i
        defs.append(d)
    for msg in _overlaps(defs):
        p.errors.append(f"{source}: {msg}")
    if p.errors:
        raise DefinitionError(p.errors)
    return tuple(defs)


def load_definitions(path: str | Path) -> tuple[ExperimentDefinition, ...]:
    """Definitions from a YAML file; raises :class:`DefinitionError` naming file, line and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DefinitionError([f"{path}: cannot read the experiments file: {e.strerror}"]) from None
    return parse_definitions(text, str(path))


def validate_file(path: str | Path) -> list[str]:
    """Every problem of a definitions file (empty when it is valid)."""
    try:
        load_definitions(path)
    except DefinitionError as e:
        return list(e.errors)
    return []


# ---- run time: control messages ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ControlResult:
    """What happened to one control message (``reason`` says why it was rejected)."""

    key: str
    op: str
    version: int | None
    accepted: bool
    reason: str | None = None


def control_message(op: str, key: str, version: int, definition: ExperimentDefinition | None = None,
                    stop_ms: int | None = None) -> dict[str, Any]:  # fmt: skip
    """A control message for the ``zt.control`` topic (JSON-ready)."""
    msg: dict[str, Any] = {"kind": CONTROL_KIND, "op": op, "key": key, "version": version}
    if definition is not None:
        msg["definition"] = definition.to_dict()
    if stop_ms is not None:
        msg["stop_ms"] = stop_ms
    return msg


@dataclass(frozen=True)
class ExperimentRegistry:
    """The live definitions and the last accepted version of every key (deleted keys included).

    Immutable: :meth:`apply` returns a new registry. ``definitions`` maps key -> definition;
    ``versions`` maps key -> last accepted version, so a replayed old message can neither roll a
    definition back nor bring a deleted experiment back.
    """

    definitions: Mapping[str, ExperimentDefinition] = field(default_factory=dict)
    versions: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, definitions: Iterable[ExperimentDefinition]) -> ExperimentRegistry:
        defs = {d.key: d for d in definitions}
        return cls(defs, {k: d.version for k, d in defs.items()})

    def running(self) -> tuple[ExperimentDefinition, ...]:
        """Definitions sorted by key (stable statement generation)."""
        return tuple(self.definitions[k] for k in sorted(self.definitions))

    def _reject(self, key: str, op: str, version: Any, reason: str) -> tuple[ExperimentRegistry, ControlResult]:
        return self, ControlResult(str(key), str(op), version if isinstance(version, int) else None, False, reason)

    def apply(self, message: Mapping[str, Any], now_ms: int) -> tuple[ExperimentRegistry, ControlResult]:
        """Apply one control message; ``now_ms`` is the stop time of a ``stop`` without ``stop_ms``."""
        if not isinstance(message, Mapping):
            return self._reject("?", "?", None, "control message must be a JSON object")
        op, key, version = message.get("op"), message.get("key"), message.get("version")
        where = f"control message {op} {key!r} v{version}"
        if message.get("kind") != CONTROL_KIND:
            return self._reject(str(key), str(op), version, f"{where}: kind must be {CONTROL_KIND!r}")
        if op not in CONTROL_OPS:
            return self._reject(str(key), str(op), version, f"{where}: op must be one of {', '.join(CONTROL_OPS)}")
        if not isinstance(key, str) or not key:
            return self._reject("?", op, version, f"{where}: key must be a non-empty string")
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            return self._reject(key, op, version, f"{where}: version must be a whole number >= 0")
        current = self.versions.get(key)
        if current is not None and version <= current:
            return self._reject(key, op, version,
                                f"{where}: stale, {key!r} is at version {current}; send a version above {current}")
        if op == "upsert":
            return self._upsert(message, key, version, where)
        old = self.definitions.get(key)
        if old is None:
            return self._reject(key, op, version, f"{where}: no running experiment {key!r}")
        defs = dict(self.definitions)
        if op == "delete":
            del defs[key]
        else:
            stop_ms = message.get("stop_ms", now_ms)
            if isinstance(stop_ms, bool) or not isinstance(stop_ms, int):
                return self._reject(key, op, version, f"{where}: stop_ms must be epoch milliseconds")
            exp = old.experiment
            if exp.start_ms is not None and stop_ms < exp.start_ms:
                return self._reject(key, op, version, f"{where}: stop_ms {stop_ms} is before the start {exp.start_ms}")
            if exp.stop_ms is not None:
                stop_ms = min(stop_ms, exp.stop_ms)
            defs[key] = dataclasses.replace(old, experiment=dataclasses.replace(exp, stop_ms=stop_ms), version=version)
        return ExperimentRegistry(defs, {**self.versions, key: version}), ControlResult(key, op, version, True)

    def _upsert(self, message: Mapping[str, Any], key: str, version: int, where: str
                ) -> tuple[ExperimentRegistry, ControlResult]:  # fmt: skip
        raw = message.get("definition")
        if not isinstance(raw, Mapping):
            return self._reject(key, "upsert", version, f"{where}: upsert needs a definition object")
        if raw.get("key", key) != key:
            return self._reject(key, "upsert", version, f"{where}: definition.key {raw.get('key')!r} is not {key!r}")
        try:
            defn = definition_from_mapping({**raw, "key": key, "version": version}, where, "definition")
        except DefinitionError as e:
            return self._reject(key, "upsert", version, "; ".join(e.errors))
        running = self.definitions.get(key)
        if running is not None and (running.variations, running.unit) != (defn.variations, defn.unit):
            return self._reject(key, "upsert", version,
                                f"{where}: the variants and the unit of a running experiment cannot change (its "
                                f"units keep their variation index); stop it and start a new key")  # fmt: skip
        others = [d for k, d in self.definitions.items() if k != key]
        overlap = _overlaps([*others, defn])
        if overlap:
            return self._reject(key, "upsert", version, f"{where}: {overlap[0]}")
        defs = {**self.definitions, key: defn}
        return ExperimentRegistry(defs, {**self.versions, key: version}), ControlResult(key, "upsert", version, True)
