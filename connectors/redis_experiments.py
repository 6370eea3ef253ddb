"""Redis layout of the experiment statistics: writer (from the job) and reader (CLI, dashboard).

Keys (prefix configurable, default ``zt``):

- ``{prefix}:exp:{key}:{variant}``: hash of one variant's sufficient statistics, absolute values
  from Flink state: ``units``, ``converted`` (integers), ``rev_sum``, ``cov_sum`` (2 decimals),
  ``rev_sumsq``, ``cov_sumsq``, ``cov_rev_sum`` (4 decimals), as exact decimal strings;
- ``{prefix}:exp:{key}``: meta hash of the definition the job measures: ``definition`` (JSON,
  ``ExperimentDefinition.to_dict``), ``version``, ``unit``, ``variations`` (JSON list).

Every write is an ``HSET`` of absolute values (DESIGN.md): replaying a batch after a failure writes
the same values again, never adds to them. Each variant key is produced by one Flink subtask in
order, so the last write is the newest state.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from connectors.redis_clients import execute_scripted, queue_script, redis_client
from operators.experiments.definitions import DefinitionError, ExperimentDefinition, definition_from_mapping
from operators.experiments.stats import VariantStats

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import RedisSettings

logger = logging.getLogger(__name__)

#: Hash fields of a variant key, in the order of ``pipelines.experiment_stats.EXPERIMENT_STORE_COLUMNS[2:]``.
STAT_FIELDS = ("units", "converted", "rev_sum", "rev_sumsq", "cov_sum", "cov_sumsq", "cov_rev_sum")
_Q2, _Q4 = Decimal("0.01"), Decimal("0.0001")
_SCALES = {"rev_sum": _Q2, "cov_sum": _Q2, "rev_sumsq": _Q4, "cov_sumsq": _Q4, "cov_rev_sum": _Q4}


@dataclass(frozen=True, slots=True)
class ExperimentRow:
    """One upsert of ``{prefix}_store_rows`` (pipelines/experiment_stats.py): absolute per-variant values."""

    exp_key: str
    variant: str
    units: int
    converted: int
    rev_sum: Decimal
    rev_sumsq: Decimal
    cov_sum: Decimal
    cov_sumsq: Decimal
    cov_rev_sum: Decimal

    def fields(self) -> dict[str, str]:
        out = {"units": str(int(self.units)), "converted": str(int(self.converted))}
        for name, q in _SCALES.items():
            out[name] = str(Decimal(getattr(self, name) or 0).quantize(q))
        return out


def stats_from_hash(h: dict[str, str]) -> VariantStats:
    """A variant hash as :class:`VariantStats` (missing fields are 0)."""

    def num(name: str) -> float:
        return float(Decimal(h.get(name) or "0"))

    return VariantStats(
        n=int(h.get("units") or 0),
        conversions=int(h.get("converted") or 0),
        sum_y=num("rev_sum"),
        sum_y2=num("rev_sumsq"),
        sum_x=num("cov_sum"),
        sum_x2=num("cov_sumsq"),
        sum_xy=num("cov_rev_sum"),
    )


class RedisExperiments:
    """Batched, idempotent writer and reader of the ``{prefix}:exp:*`` keys.

    Create it where it is used (inside a Flink function on the worker, or in the CLI): it holds a
    connection.
    """

    def __init__(self, cfg: RedisSettings, prefix: str | None = None) -> None:
        self.prefix = prefix or cfg.prefix
        self.client = redis_client(cfg)

    # ---- keys -------------------------------------------------------------------------------------
    def meta_key(self, key: str) -> str:
        return f"{self.prefix}:exp:{key}"

    def variant_key(self, key: str, variant: str) -> str:
        return f"{self.prefix}:exp:{key}:{variant}"

    # ---- writing ----------------------------------------------------------------------------------
    def write(self, rows: Sequence[ExperimentRow]) -> int:
        """HSET each row's absolute values, one pipelined round trip. Returns the rows written."""
        if not rows:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for r in rows:
            pipe.hset(self.variant_key(r.exp_key, r.variant), mapping=r.fields())
        pipe.execute()
        return len(rows)

    def write_meta(self, definitions: Sequence[ExperimentDefinition]) -> None:
        """Record the definitions being measured (absolute, idempotent)."""
        pipe = self.client.pipeline(transaction=False)
        for d in definitions:
            pipe.hset(self.meta_key(d.key), mapping={
                "definition": json.dumps(d.to_dict(), ensure_ascii=False, sort_keys=True),
                "version": d.version,
                "unit": d.unit,
                "variations": json.dumps(list(d.variations), ensure_ascii=False),
            })  # fmt: skip
        pipe.execute()

    _GUARDED_META = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'version') or '-1')
if tonumber(ARGV[1]) < cur then return 0 end
if ARGV[2] == '' then
  redis.call('HSET', KEYS[1], 'version', ARGV[1], 'status', 'deleted')
else
  redis.call('HSET', KEYS[1], 'version', ARGV[1], 'status', 'running', 'definition', ARGV[2], 'unit', ARGV[3],
             'variations', ARGV[4])
end
return 1"""

    def write_definition_rows(self, rows: Sequence[tuple[str, str]]) -> int:
        """Record run-time definitions (``operators.experiments.control.packed_row``) in the meta
        hashes, guarded by version: an older version never overwrites a newer one, the same version
        rewrites the same values (replay-safe). A deleted key keeps its last definition, ``status deleted``."""
        from operators.experiments.control import unpack_row

        script = self.client.register_script(self._GUARDED_META)

        def fill(pipe: Any) -> None:
            for key, packed in rows:
                version, record = unpack_row(packed)
                if record is None:
                    queue_script(pipe, script, [self.meta_key(key)], [version, "", "", ""])
                else:
                    d = record["definition"]
                    queue_script(pipe, script, [self.meta_key(key)], [
                        version, json.dumps(d, ensure_ascii=False, sort_keys=True), d["unit"],
                        json.dumps([v["key"] for v in d["variants"]], ensure_ascii=False)])  # fmt: skip

        execute_scripted(self.client, [script], fill)
        return len(rows)

    # ---- reading ----------------------------------------------------------------------------------
    def definition(self, key: str) -> ExperimentDefinition | None:
        """The definition recorded in the meta hash, or None when there is none."""
        raw = self.client.hget(self.meta_key(key), "definition")
        if raw is None:
            return None
        try:
            return definition_from_mapping(json.loads(raw), source=self.meta_key(key))
        except (ValueError, DefinitionError) as e:
            raise ValueError(f"experiment {key!r}: the meta hash {self.meta_key(key)} holds a bad definition: {e}; "
                             "republish it with `zhongtai experiment publish FILE`") from None  # fmt: skip

    def variants(self, key: str) -> list[str]:
        """Variants with a statistics hash (from the meta hash when present, else by scanning)."""
        raw = self.client.hget(self.meta_key(key), "variations")
        if raw is not None:
            return list(json.loads(raw))
        head = self.variant_key(key, "")
        return sorted(k[len(head):] for k in self.client.scan_iter(match=head + "*", count=1000))

    def read_stats(self, key: str, variants: Sequence[str] | None = None) -> dict[str, VariantStats]:
        """Per-variant sufficient statistics of experiment ``key`` (variants with no hash are left out),
        shaped for ``operators.experiments.report.experiment_report``."""
        names = list(variants) if variants is not None else self.variants(key)
        pipe = self.client.pipeline(transaction=False)
        for v in names:
            pipe.hgetall(self.variant_key(key, v))
        return {v: stats_from_hash(h) for v, h in zip(names, pipe.execute(), strict=True) if h}

    def raw(self, key: str, variant: str) -> dict[str, str]:
        return self.client.hgetall(self.variant_key(key, variant))

    def delete_experiment(self, key: str) -> int:
        """Delete the meta hash and every variant hash of ``key`` (reset before a new run)."""
        keys = [self.meta_key(key), *self.client.scan_iter(match=self.variant_key(key, "*"), count=1000)]
        return int(self.client.delete(*keys))

    def close(self) -> None:
        self.client.close()


class RedisPersonTags:
    """Read-only: the live tag sets of persons (``{prefix}:tags:{pid}``, written by the event job's store)."""

    def __init__(self, cfg: RedisSettings, prefix: str | None = None) -> None:
        self.prefix = prefix or cfg.prefix
        self.client = redis_client(cfg)

    def tags_of(self, persons: Sequence[str]) -> dict[str, frozenset[str]]:
        pipe = self.client.pipeline(transaction=False)
        for p in persons:
            pipe.smembers(f"{self.prefix}:tags:{p}")
        return {p: frozenset(t) for p, t in zip(persons, pipe.execute(), strict=True)}
