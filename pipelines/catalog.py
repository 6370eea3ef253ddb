"""The catalog of the event job's shared views: every table one stage writes and another reads.

Each entry names the view, its columns (in order), whether it is append-only or updating, and the stage
that produces it (``pipelines.job.STAGES``). A stage reads only views of the catalog that an earlier stage
produced and registers the views the catalog gives it; ``pipelines.job.build_job`` checks both while it
builds the graph, and tests/integration/test_job_graph.py compares the catalog with the views and columns of the
real job. Views a stage uses only inside itself are not shared; they carry the stage's own prefix
(``PRIVATE_PREFIXES``).
"""

from __future__ import annotations

from dataclasses import dataclass

ID_COLUMNS = tuple(f"id_{t}" for t in ("user_id", "unionid", "openid", "phone", "email", "device_id", "cookie_id"))


@dataclass(frozen=True)
class View:
    """One shared view: ``kind`` is ``append`` (insert-only), ``updating`` (a changelog) or ``upsert``."""

    name: str
    producer: str
    kind: str
    columns: tuple[str, ...]
    doc: str


_PERSON_MINUTE_COLUMNS = ("person", "mb", "n_views", "n_carts", "n_purchases", "n_events", "n_gmv", "first_ts",
                          "last_ts", "last_purchase")
_ACTION_COLUMNS = ("action_id", "channel", "person", "rule_id", "ts_ms", "payload")

VIEWS: tuple[View, ...] = (
    View("zt_decoded", "core", "append",
         ("payload", "topic", "part", "off", "kts", "reason", "event_id", "event_type", "ts_ms", "person",
          *ID_COLUMNS, "campaign", "channel", "amount", "item_id", "exp_key", "variation", "props", "rkey"),
         "every record once, decoded and validated: reason NULL = valid (docs/semantics.md)"),
    View("zt_unique", "core", "append",
         ("event_type", "ts_ms", "person", "campaign", "channel", "amount", "event_id", "item_id", "exp_key",
          "variation", *ID_COLUMNS, "props"),
         "the valid events, first per event_id; person = the event's anchor identifier"),
    View("zt_counters", "core", "updating",
         ("k", "bucket", "n_views", "n_carts", "n_purchases", "n_events", "n_persons", "n_revenue"),
         "live counters per scope (campaign|channel, all) and minute"),
    View("zt_anchor_minutes", "core", "updating",
         ("anchor", "mb", "n_views", "n_carts", "n_purchases", "n_events", "n_gmv", "first_ts", "last_ts",
          "last_purchase"),
         "profile buckets per anchor identifier and minute"),
    View("zt_combos", "core", "updating", (*ID_COLUMNS, "ts_ms", "event_id"),
         "each identifier combination at its earliest (ts_ms, event_id): the identity graph's input"),
    View("zt_totals", "core", "updating", ("name", "n"), "pipeline totals (received, valid, dlq:<reason>, unique...)"),
    View("zt_control", "control", "append", ("payload", "topic", "part", "off", "kts"),
         "the control topic, read once for every run-time-controlled stage"),
    View("zt_id_map", "identity", "upsert", ("identifier", "pid"), "identifier → person id"),
    View("zt_identity_edges", "identity", "append", ("a", "b", "accepted", "reason", "ts_ms", "event_id"),
         "the identity graph's edge log"),
    View("zt_identity_changes", "identity", "append", ("person", "payload", "ts_ms"),
         "merge / split / attach / detach records"),
    View("zt_identity_control_results", "identity", "append", ("payload", "ts_ms"),
         "results of identity control messages"),
    View("zt_person_minutes", "people", "updating", _PERSON_MINUTE_COLUMNS,
         "the anchor buckets re-aggregated per person (a merge moves whole buckets)"),
    View("zt_person_events", "people", "append",
         ("person", "event_id", "event_type", "ts_ms", "campaign", "channel", "amount", "item_id", "exp_key",
          "variation", "props"),
         "each unique event once, with the person its anchor had when it met the identity map"),
    View("zt_tag_changes", "person", "append",
         ("person", "tag", "op", "ts_ms", "cause", "tagset_version", "payload"), "tags added / removed"),
    View("zt_control_results_tags", "person", "append", ("payload",), "results of tag control messages"),
    View("zt_actions", "person", "append", _ACTION_COLUMNS, "actions to send (rules on)"),
    View("zt_suppressed", "person", "append", ("action_id", "channel", "person", "rule_id", "reason", "ts_ms",
                                                "payload"), "actions a guard rail stopped (rules on)"),
    View("zt_rules_control_results", "person", "append", ("payload",), "results of rule control messages"),
    View("zt_store_rows", "store", "append",
         ("kind", "k", "bucket", "n1", "n2", "n3", "n4", "n5", "amount", "t1", "t2", "t3", "s1"),
         "every Redis/HBase upsert of the core, identity and person stages (one shape, STORE_COLUMNS)"),
    View("zt_rule_rows", "rules", "append",
         ("kind", "k", "bucket", "n1", "n2", "n3", "n4", "n5", "amount", "t1", "t2", "t3", "s1"),
         "action counters and audit rows (rules on)"),
    View("zt_conversions", "attribution", "append",
         ("purchase_event_id", "person", "action_id", "rule_id", "campaign", "channel", "delivered_ts",
          "purchase_ts", "amount", "payload"),
         "purchases attributed to the delivered action before them (rules on)"),
    View("zt_attribution_rows", "attribution", "append",
         ("kind", "k", "bucket", "n1", "n2", "n3", "n4", "n5", "amount", "t1", "t2", "t3", "s1"),
         "conversion counters and audit rows (rules on)"),
    View("zt_recs_rows", "recs", "append",
         ("kind", "k", "bucket", "n1", "n2", "n3", "n4", "n5", "amount", "t1", "t2", "t3", "s1"),
         "recommendations: each item's whole top-K list (ri) and each person's window (rp) (recs.enabled)"),
    View("zt_pricing_rows", "pricing", "append",
         ("kind", "k", "bucket", "n1", "n2", "n3", "n4", "n5", "amount", "t1", "t2", "t3", "s1"),
         "list-price changes (pr, key item) and offer decisions (po, key person) (pricing.enabled)"),
)
CATALOG: dict[str, View] = {v.name: v for v in VIEWS}

#: Views a stage keeps to itself (not read by another stage): by prefix, per stage.
PRIVATE_PREFIXES: dict[str, tuple[str, ...]] = {
    "core": ("zt_d", "zt_first", "zt_scoped", "zt_scope_"),
    "control": (),
    "identity": ("zt_identity_control",),
    "people": ("zt_person_events_",),
    "person": ("zt_person_", "zt_control_results_"),
    "store": (),
    "rules": ("zt_rule_",),
    "attribution": ("zt_conversion_",),
    "experiments": ("zt_exp_", "zt_control_results_experiments"),
    "recs": ("zt_recs_",),
    "pricing": ("zt_pricing_",),
}


class CatalogError(RuntimeError):
    """A stage read a view no earlier stage produced, or registered one the catalog does not give it."""


def produced_by(stage: str) -> tuple[str, ...]:
    return tuple(v.name for v in VIEWS if v.producer == stage)


def is_private(stage: str, name: str) -> bool:
    return any(name.startswith(p) for p in PRIVATE_PREFIXES.get(stage, ()))
