"""The audit log of control changes made through the API: who, what, old and new version, diff
(docs/api.md, "Audit").

Every accepted control publication (``POST /v1/rules``, pause / resume / delete, ``POST /v1/experiments``)
becomes one entry per item it changes::

    {"ts_ms", "key": <API key id, "api.token", or null when auth is off>, "kind": rule|pattern|journey|experiment,
     "id", "op": upsert|pause|resume|delete, "old_version", "new_version", "diff": <unified diff of the
     definitions as sorted JSON, "" when unchanged>, "message_id": <topic/partition/offset of the control message>}

Entries go to HBase (``audit``, newest first: ``GET /v1/audit`` reads them) and to ``kafka.topics.audit``
(keyed by ``kind:id``) for whoever wants to follow them. They are written after the control message landed:
an entry names a change that was sent (the job's verdict is on ``control_results``); a failure to write the
entry is logged and does not undo the change.
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from thriftpy2.thrift import TException

if TYPE_CHECKING:  # pragma: no cover
    from config.settings import Settings

logger = logging.getLogger(__name__)


class AuditUnavailable(RuntimeError):
    """HBase did not answer a read of the audit log; the message says what to check."""


def definition_diff(old: Any, new: Any) -> str:
    """A unified diff of two definitions as sorted, indented JSON ("" when equal; ``null`` stands for none)."""
    def lines(d: Any) -> list[str]:
        return [ln + "\n" for ln in json.dumps(d, indent=1, sort_keys=True, ensure_ascii=False, default=str).splitlines()]

    return "".join(difflib.unified_diff(lines(old), lines(new), "old", "new", n=2))


def entry(ts_ms: int, key: str | None, kind: str, oid: str, op: str, old: Mapping[str, Any] | None,
          new_definition: Any, new_version: int | None, message_id: str) -> dict[str, Any]:
    """One audit entry. ``old``: ``{"version", "definition"}`` as the change found it (None: it did not exist);
    ``new_definition`` None for an operation that carries none (pause, resume, delete: the definition stays)."""
    old_def = old.get("definition") if old else None
    old_version = old.get("version") if old else None
    after = old_def if new_definition is None and op != "delete" else new_definition
    return {"ts_ms": ts_ms, "key": key, "kind": kind, "id": oid, "op": op, "old_version": old_version,
            "new_version": old_version if new_version is None and op != "delete" else new_version,
            "diff": definition_diff(old_def, after), "message_id": message_id}


class AuditLog:
    """Writes entries to HBase and the audit topic; reads them back newest first."""

    def __init__(self, settings: Settings, hbase_prefix: str | None = None) -> None:
        self.settings, self.hbase_prefix = settings, hbase_prefix
        self._ready = self._topic_ready = False

    def _store(self) -> Any:
        from connectors.hbase_store import AUDIT_TABLES, HBaseStore

        store = HBaseStore(self.settings.hbase, prefix=self.hbase_prefix)
        if not self._ready:
            store.ensure_tables(AUDIT_TABLES)
            self._ready = True
        return store

    def write(self, entries: list[dict[str, Any]]) -> None:
        """HBase first (what ``GET /v1/audit`` shows), then the topic. Raises what either raises."""
        from connectors.control import publish_at
        from connectors.hbase_store import audit_row

        if not entries:
            return
        rows = [(audit_row(e["ts_ms"], f"{e['message_id']}:{e['kind']}:{e['id']}"),
                 json.dumps(e, ensure_ascii=False, sort_keys=True)) for e in entries]
        store = self._store()
        try:
            store.write_audit(rows)
        finally:
            store.close()
        if not self._topic_ready:  # brokers that do not create topics on first use
            from connectors.kafka_admin import create_topics

            create_topics(self.settings, [self.settings.kafka.topics.audit], timeout_s=10.0)
            self._topic_ready = True
        publish_at(self.settings, entries, topic=self.settings.kafka.topics.audit,
                   key_of=lambda e: f"{e['kind']}:{e['id']}")

    def write_logged(self, entries: list[dict[str, Any]]) -> None:
        """:meth:`write`, logging (never raising) a failure: the change itself already landed."""
        try:
            self.write(entries)
        except Exception:  # noqa: BLE001 - any store or broker failure; the change stands, the log says so
            logger.exception("audit: %d entr(y/ies) of control changes could not be written: %s", len(entries),
                             [(e["kind"], e["id"], e["op"], e["message_id"]) for e in entries])

    def read(self, limit: int, after: str | None = None) -> dict[str, Any]:
        """``{"entries": [...newest first], "next": <row to pass as after, or None>}``."""
        try:
            store = self._store()
            try:
                got = store.audit(limit + 1, row_start=after)
            finally:
                store.close()
        except (OSError, TException) as e:
            raise AuditUnavailable(f"HBase cannot be reached to read the audit log ({type(e).__name__}: {e}); "
                                   "is the stack up (`zhongtai stack status`)?") from e
        return {"entries": [json.loads(v) for _, v in got[:limit]],
                "next": got[limit][0] if len(got) > limit else None}
