"""Rule-set operations shared by ``zhongtai rules`` and the REST API (docs/rules.md, docs/api.md).

The running rule set is never asked of the job: it is *computed* the way the job computes it. The job
starts from its rules file (``pipelines.actions.RULES_FILE`` or ``zhongtai run --rules-file``) and
applies every ``zt.control`` record whose ``kind`` is rule / pattern / journey / batch / policy with
:func:`operators.rules.registry.apply_control`, in topic order (the control topic has one partition).
:class:`RuleSetView` does exactly that with the same pure function, so ``list`` cannot drift from the
job as long as both start from the same file.

- :func:`check_document`: a YAML/JSON definitions document → the batch control message that publishes
  it (all or nothing), or :class:`~operators.rules.schema.DefinitionError` with every problem;
- :func:`control_message`: pause / resume / delete of one id;
- :meth:`RuleSetView.publish`: predicts the job's answer with ``apply_control`` against the folded
  rule set (a stale version or a dangling reference is refused before anything is sent, as
  :class:`Rejected`), then publishes through ``connectors.control``;
- :func:`wait_result`: the job's answer from ``kafka.topics.control_results`` (``None`` when none came).

Kafka is reached only through ``connectors.control``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from operators.rules.registry import ControlResult, RuleSet, apply_control, batch_for_document
from operators.rules.schema import DefinitionError, Definitions, load_text

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import Settings
    from connectors.control import TopicRecord
    from operators.rules.model import Journey, Pattern, Rule

KINDS = ("rule", "pattern", "journey")
#: What the job's rules operator takes from the control topic (``pipelines.person.RULE_CONTROL_KINDS``).
CONTROL_KINDS = (*KINDS, "batch", "policy")
OPS = ("pause", "resume", "delete")


class Rejected(ValueError):
    """``apply_control`` refuses the message against the rule set the job will have: nothing was sent."""

    def __init__(self, result: ControlResult) -> None:
        self.result = result
        super().__init__(result.reason or "rejected")


def default_rules_file() -> Path:
    """The rules file the job starts from when ``zhongtai run --rules`` gets no ``--rules-file``."""
    from pipelines.actions import RULES_FILE

    return RULES_FILE


# ---- documents and messages ----------------------------------------------------------------------


def check_document(text: str, source: str) -> tuple[Definitions, dict[str, Any]]:
    """Validate a definitions document; return it parsed and the batch control message publishing it.

    The batch upserts every pattern, journey and rule (``batch_for_document``); when the document has
    a ``policy`` section it is sent too, first, as a whole (a document without one leaves the running
    policy alone). Raises ``DefinitionError`` listing every problem (file, line, column, path).
    """
    import yaml

    defs = load_text(text, source)
    doc = yaml.safe_load(text) or {}
    batch = batch_for_document(doc)
    if "policy" in doc:
        batch["items"].insert(0, {"kind": "policy", "op": "upsert", "definition": doc["policy"]})
    if not batch["items"]:
        raise DefinitionError([_problem(source, "the document defines no rule, pattern, journey or policy; "
                                                "nothing to publish")])
    return defs, batch


def _problem(source: str, message: str) -> Any:
    from operators.rules.schema import Problem

    return Problem(source, None, None, "", "$", message)


def control_message(op: str, oid: str, *, kind: str = "rule", version: int | None = None) -> dict[str, Any]:
    """``{"kind", "op", "id"[, "version"]}`` for pause / resume / delete (version: the running one)."""
    if op not in OPS:
        raise ValueError(f"op {op!r}: use one of {', '.join(OPS)}")
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: use one of {', '.join(KINDS)}")
    msg: dict[str, Any] = {"kind": kind, "op": op, "id": oid}
    if version is not None:
        msg["version"] = version
    return msg


def summary(defs: Definitions) -> str:
    """``8 rules, 4 patterns, 1 journey``."""
    def n(count: int, word: str) -> str:
        return f"{count} {word}{'' if count == 1 else 's'}"

    return f"{n(len(defs.rules), 'rule')}, {n(len(defs.patterns), 'pattern')}, {n(len(defs.journeys), 'journey')}"


def message_label(msg: Mapping[str, Any]) -> str:
    """``batch of 3 (rule welcome v2, pattern cart_abandon v3, policy)`` / ``pause rule welcome``."""
    if msg.get("kind") == "batch":
        items = [f"{i['kind']} {i['id']} v{i['version']}" if i.get("id") else str(i["kind"]) for i in msg["items"]]
        return f"batch of {len(items)} ({', '.join(items)})"
    version = f" v{msg['version']}" if msg.get("version") is not None else ""
    return f"{msg.get('op')} {msg.get('kind')} {msg.get('id')}{version}"


# ---- the rule set as the job has it ---------------------------------------------------------------


def _fmt_ms(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _trigger(kind: str, obj: Rule | Pattern | Journey) -> str:
    if kind == "rule":
        return f"{obj.trigger.kind}:{','.join(obj.trigger.values)}"  # type: ignore[union-attr]
    if kind == "pattern":
        p: Any = obj
        types = [m.event_type for m in p.matchers]
        what = {"absence": f"{types[0]} without {','.join(types[1:])}", "count": f"{types[0]} x{p.count}"}.get(
            p.kind, ">".join(types))
        return f"{p.kind}:{what} within {_fmt_ms(p.within_ms)}"
    j: Any = obj
    return f"{j.entry.kind}:{','.join(j.entry.values)}"


def _channels(rs: RuleSet, kind: str, obj: Any) -> list[str]:
    if kind == "rule":
        return sorted({a.channel for a in obj.actions})
    if kind == "journey":
        sent = [rs.rules.get(s.rule) for s in obj.steps.values() if s.kind == "send"]
        return sorted({a.channel for r in sent if r is not None for a in r.actions})
    return []


def describe(rs: RuleSet, kind: str, obj: Rule | Pattern | Journey) -> dict[str, Any]:
    """One row of ``list``: id, kind, version, status, trigger, channels, priority (rules only), name."""
    return {"kind": kind, "id": obj.id, "version": obj.version, "status": "paused" if obj.paused else "active",
            "trigger": _trigger(kind, obj), "channels": _channels(rs, kind, obj),
            "priority": getattr(obj, "priority", None) if kind == "rule" else None, "name": obj.name}


def rows(rs: RuleSet) -> list[dict[str, Any]]:
    """Every rule, pattern and journey of ``rs``: rules by priority (high first) then id, then
    patterns and journeys by id."""
    out = [describe(rs, "rule", r) for r in sorted(rs.rules.values(), key=lambda r: (-r.priority, r.id))]
    out += [describe(rs, "pattern", p) for p in sorted(rs.patterns.values(), key=lambda p: p.id)]
    out += [describe(rs, "journey", j) for j in sorted(rs.journeys.values(), key=lambda j: j.id)]
    return out


def _control_payload(record: TopicRecord) -> Any:
    """The message the job's rules operator would get from this record, or None if the job skips it
    (its SQL keeps only JSON objects whose ``kind`` is in :data:`CONTROL_KINDS`)."""
    msg = record.json()
    return msg if isinstance(msg, Mapping) and msg.get("kind") in CONTROL_KINDS else None


def _result_payload(record: TopicRecord) -> Any:
    """A rules result of ``kafka.topics.control_results`` (header ``zt.kind: rule``), else None."""
    if record.headers.get("zt.kind") != b"rule":
        return None
    res = record.json()
    return res if isinstance(res, Mapping) else None


@dataclass
class _Fold:
    """Records of one topic folded incrementally: ``offsets`` is where the next read starts."""

    offsets: dict[int, int] = field(default_factory=dict)


class RuleSetView:
    """The rule set as the job will have it, read incrementally from the control topic.

    Thread-safe; each :meth:`refresh` reads only the records added since the last one. ``definitions``
    maps ``(kind, id)`` to the definition JSON (from the rules file, then from upserts).
    """

    def __init__(self, settings: Settings, rules_file: str | Path | None = None) -> None:
        import yaml

        self.settings = settings
        self.rules_file = Path(rules_file) if rules_file else default_rules_file()
        text = self.rules_file.read_text(encoding="utf-8")
        self.initial = RuleSet.from_definitions(load_text(text, str(self.rules_file)))
        self.ruleset = self.initial
        doc = yaml.safe_load(text) or {}
        self.definitions: dict[tuple[str, str], Any] = {
            (kind, d["id"]): d for section, kind in (("patterns", "pattern"), ("journeys", "journey"),
                                                      ("rules", "rule")) for d in doc.get(section) or ()}
        self.applied = 0  # control messages that changed the rule set
        self.rejected = 0
        self.results: dict[tuple[str, str], dict[str, Any]] = {}  # last job result per (kind, id)
        self._control, self._results = _Fold(), _Fold()
        self._lock = threading.Lock()

    @property
    def control_topic(self) -> str:
        return self.settings.kafka.topics.control

    @property
    def results_topic(self) -> str:
        return self.settings.kafka.topics.control_results

    def refresh(self, *, results: bool = False) -> RuleSet:
        """Fold the control records added since the last call (and the job's results with ``results``)."""
        from connectors.control import read_topic

        with self._lock:
            for rec in read_topic(self.settings, self.control_topic, start=self._control.offsets):
                self._control.offsets[rec.partition] = rec.offset + 1
                msg = _control_payload(rec)
                if msg is not None:
                    self._apply(msg)
            if results:  # the results topic has several partitions: newest last by record time
                recs = read_topic(self.settings, self.results_topic, start=self._results.offsets)
                for rec in sorted(recs, key=lambda r: (r.timestamp_ms or 0, r.partition, r.offset)):
                    self._results.offsets[rec.partition] = rec.offset + 1
                    res = _result_payload(rec)
                    if res is not None:
                        self._note(res)
            return self.ruleset

    def _apply(self, msg: Mapping[str, Any]) -> None:
        new, res = apply_control(self.ruleset, msg)
        if not res.ok:
            self.rejected += 1
            return
        if new is not self.ruleset:
            self.applied += 1
        self.ruleset = new
        items = msg["items"] if msg.get("kind") == "batch" else [msg]
        for m in items:
            if isinstance(m, Mapping) and m.get("op") == "upsert" and m.get("kind") in KINDS:
                self.definitions[(m["kind"], m["id"])] = m.get("definition")

    def _note(self, res: Mapping[str, Any]) -> None:
        stamp = {k: res.get(k) for k in ("ok", "op", "version", "reason", "applied_at_ms")}
        for item in res.get("items") or [res]:
            if item.get("kind") in KINDS and item.get("id"):
                self.results[(item["kind"], item["id"])] = {**stamp, "op": item.get("op"),
                                                            "version": item.get("version")}

    def listing(self, *, results: bool = False) -> dict[str, Any]:
        """``{"ruleset_version", "rules_file", "control_topic", "applied", "rejected", "items"}``;
        with ``results`` every item has ``last_result`` (the job's newest answer about that id, or None)."""
        rs = self.refresh(results=results)
        items = rows(rs)
        if results:
            for it in items:
                it["last_result"] = self.results.get((it["kind"], it["id"]))
        return {"ruleset_version": rs.version, "rules_file": str(self.rules_file), "control_topic": self.control_topic,
                "applied": self.applied, "rejected": self.rejected, "items": items}

    def find(self, oid: str, kind: str | None = None) -> list[dict[str, Any]]:
        """The rows with id ``oid`` (one per kind that has it), each with its ``definition``."""
        rs = self.refresh(results=True)
        out = []
        for k in (kind,) if kind else KINDS:
            obj = rs.get(k, oid)
            if obj is not None:
                out.append({**describe(rs, k, obj), "definition": self.definitions.get((k, oid)),
                            "last_result": self.results.get((k, oid))})
        return out

    def predict(self, msg: Mapping[str, Any]) -> ControlResult:
        """What the job will answer to ``msg`` once it has read the topic as it is now."""
        return apply_control(self.refresh(), msg)[1]

    def publish(self, msg: Mapping[str, Any], *, check: bool = True) -> Published:
        """Send ``msg`` to the control topic (created with one partition if missing, as the job does).

        With ``check`` the message is first applied to the folded rule set; a rejection raises
        :class:`Rejected` and nothing is sent. ``PublishError`` when Kafka does not acknowledge.
        """
        from connectors.control import end_offsets, publish_at

        predicted = self.predict(msg) if check else None
        if predicted is not None and not predicted.ok:
            raise Rejected(predicted)
        ensure_control_topic(self.settings)
        results_from = end_offsets(self.settings, self.results_topic)
        [(partition, offset)] = publish_at(self.settings, [msg], topic=self.control_topic,
                                           key_of=lambda m: f"{m['kind']}:{m.get('id') or ''}")
        return Published(self.control_topic, partition, offset, dict(msg), predicted, results_from)


def ensure_control_topic(settings: Settings) -> None:
    """Create ``kafka.topics.control`` with ONE partition if it is missing, as the job does on start
    (its messages are ordered commands; a broker auto-creating it could give it several)."""
    from connectors.control import end_offsets
    from connectors.kafka_admin import create_topics

    if not end_offsets(settings, settings.kafka.topics.control):  # missing (an existing topic is left alone)
        create_topics(settings, [settings.kafka.topics.control], partitions=1)


@dataclass(frozen=True)
class Published:
    """Where a control message went (its id: topic, partition, offset), what ``apply_control`` predicted,
    and where the results topic ended before it was sent (for :func:`wait_result`)."""

    topic: str
    partition: int
    offset: int
    message: dict[str, Any]
    predicted: ControlResult | None
    results_from: dict[int, int]

    def to_json(self) -> dict[str, Any]:
        msg = self.message
        items = msg["items"] if msg.get("kind") == "batch" else [msg]
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset,
                "message_id": f"{self.topic}/{self.partition}/{self.offset}", "kind": msg.get("kind"),
                "op": msg.get("op"), "items": [{"kind": i.get("kind"), "op": i.get("op"), "id": i.get("id"),
                                                "version": i.get("version")} for i in items],
                "predicted": self.predicted.to_json() if self.predicted else None}


def answers(msg: Mapping[str, Any], res: Mapping[str, Any]) -> bool:
    """Whether job result ``res`` is the answer to control message ``msg`` (same kind, op, id; a batch:
    a batch result, and when accepted one item result per item with the same ids)."""
    if msg.get("kind") == "batch":
        if res.get("kind") != "batch":
            return False
        if not res.get("ok"):
            return True
        got = [(i.get("kind"), i.get("id")) for i in res.get("items") or []]
        return got == [(i.get("kind"), i.get("id")) for i in msg["items"]]
    return all(res.get(k) == msg.get(k) for k in ("kind", "op", "id"))


def wait_result(settings: Settings, published: Published, timeout_s: float) -> dict[str, Any] | None:
    """The job's result for ``published`` from ``kafka.topics.control_results``, or None after ``timeout_s``."""
    from connectors.control import follow

    def accept(rec: TopicRecord) -> dict[str, Any] | None:
        res = _result_payload(rec)
        return dict(res) if res is not None and answers(published.message, res) else None

    return follow(settings, settings.kafka.topics.control_results, published.results_from, accept,
                  timeout_s=timeout_s)


def no_result_hint(settings: Settings, timeout_s: float) -> str:
    """What to check when no result came."""
    return (f"no result on {settings.kafka.topics.control_results} within {timeout_s:g} s; the message is on "
            f"{settings.kafka.topics.control} and the job applies it when it reads it. Is the job running with the "
            "strategy engine (`zhongtai run --rules`) against this control topic? Check with `zhongtai rules list "
            "--results` later")


def load_definitions_file(path: str | Path) -> tuple[Definitions, dict[str, Any]]:
    """:func:`check_document` of a file; ``OSError`` names the file."""
    p = Path(path)
    return check_document(p.read_text(encoding="utf-8"), str(path))


__all__ = ["CONTROL_KINDS", "KINDS", "Published", "Rejected", "RuleSetView", "answers", "check_document",
           "control_message", "default_rules_file", "describe", "load_definitions_file",
           "message_label", "no_result_hint", "rows", "summary", "wait_result"]
