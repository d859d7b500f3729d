"""``entra-assets preview``: a dry run of a full reconciliation that writes nothing.

It runs the same ``full.plan`` as ``sync --full`` - same reads, same mapping, same comparison with the
stored hashes, same guard - but keeps the planned changes instead of queuing them, and looks up the data last
pushed for each update to say which attributes change. Nothing is written to Assets, the queue or the state.
"""
from __future__ import annotations

from collections import defaultdict
from contextlib import closing
from dataclasses import dataclass, field

from shared.clients.graph import GraphClient
from shared.produce.full import new_result, plan
from shared.produce.plan import FullRunResult, Progress, RunOptions, read_scope
from shared.records.schema import BY_KEY, ObjectType
from shared.store.ports import StateStore

KINDS = ("create", "update", "deactivate")


@dataclass
class PreviewReport:
    """The planned changes by kind and object type; ``result`` has the counts, warnings and unmatched refs."""

    result: FullRunResult
    changes: dict[str, dict[str, list[dict]]] = field(default_factory=lambda: {k: defaultdict(list) for k in KINDS})

    def ids(self, kind: str, type_key: str) -> set[str]:
        return {c["id"] for c in self.changes[kind].get(type_key, [])}

    def to_json(self) -> dict:
        """The ``preview --json`` document (stable keys, documented in the README)."""
        r = self.result
        return {
            "counts": {kind: {BY_KEY[t].name: len(v) for t, v in sorted(self.changes[kind].items())} for kind in KINDS}
            | {"unchanged": {BY_KEY[t].name: n for t, n in sorted(r.unchanged.items())},
               "held_back": {BY_KEY[t].name: n for t, n in sorted(r.held_back.items())}},
            "creates": _by_name(self.changes["create"]), "updates": _by_name(self.changes["update"]),
            "deactivations": _by_name(self.changes["deactivate"]),
            "unmatched": _lines(r.unmatched), "warnings": _lines(r.warnings),
            "objects": {"kept": r.objects_kept, "after": r.objects_after, "limit": r.object_limit,
                        "held": r.objects_after > r.object_limit, "warning": r.allowance_line()},
        }


def _by_name(changes: dict[str, list[dict]]) -> dict[str, list[dict]]:
    return {BY_KEY[t].name: v for t, v in sorted(changes.items())}


def _lines(warnings) -> list[dict]:
    return [{"kind": kind, "count": n, "sample": warnings.samples[kind]} for kind, n in sorted(warnings.counts.items())]


def run_preview(graph: GraphClient, state: StateStore, options: RunOptions,
                progress: Progress = lambda stage, n: None) -> PreviewReport:
    """Plan a full run and describe it. Reads Graph and the state; writes nothing. Raises like ``run_full``."""
    report = PreviewReport(new_result())
    changes, _ = plan(graph, state, options, read_scope(graph, options), report.result, progress)
    new_data: dict[str, dict[str, dict]] = defaultdict(dict)
    with closing(changes):  # an error stops the concurrent reads at once
        for change in changes:
            record = change.record
            entry = {"id": record.id, "name": record.data.get("name")}
            report.changes[change.kind][record.type].append(entry)
            if change.kind == "update":
                new_data[record.type][record.id] = record.data
    types = {t.key: t for t in options.types}
    for type_key, updates in report.changes["update"].items():
        old = state.records(type_key, [u["id"] for u in updates])
        for update in updates:
            update["changes"] = diff(types[type_key], old.get(update["id"]), new_data[type_key][update["id"]])
    return report


def diff(object_type: ObjectType, old: dict | None, new: dict) -> dict[str, list]:
    """{Assets attribute name: [old value, new value]} for the attributes whose value differs."""
    names = {a.locator: a.name for a in object_type.attributes}
    old = old or {}
    return {names.get(k, k): [old.get(k), new.get(k)] for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)}
