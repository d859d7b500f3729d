"""Nothing stale (DESIGN.md invariant 8): which queued data newer pushes have overtaken. Pure.

Every ``records`` message says when its run began reading Graph (``read``, epoch seconds) and which object types
it read in full (``types``). Every record of it counts as read at that moment - the earliest its data can be
from, so comparisons err towards "older". A catch-up's records count as read when the worker began planning it.
What the worker has pushed is kept in two places:
- the ``pushed`` checkpoint (``Pushed``), per object type: the newest read time pushed or confirmed (``read``)
  and the newest full run pushed (``full``) - a full run reads every object of a type, so once it is pushed,
  Assets holds that type as of its read time, changed objects and unchanged ones alike;
- per object, the read time of the data last pushed for it, or of the catch-up that last read it unchanged
  (``StateStore.read_times``).
With them (``Pushed.verdict``), a record is dropped when a full run read after it was pushed for its type, or
when its object was pushed or confirmed with data read after it; the per-object times are looked up only for
types whose ``read`` mark is newer than the record. A ``records`` message superseded for every type it read is
dropped whole, payload unread. A message overtaken by anything pushed since it was read has its checkpoints
(delta links, derived names, the Jira cache) merged *under* the stored ones, never over them.

A record dropped as stale loses nothing: newer data was pushed, or the newer full run planned the change again.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import orjson

PUSHED = "pushed"   # checkpoint: {"read": {type: t}, "full": {type: t}}
NEVER = float("-inf")


@dataclass
class Pushed:
    """Per object type: the newest read time pushed (``read``) and the newest full run pushed (``full``)."""

    read: dict[str, float] = field(default_factory=dict)
    full: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, raw: str | None) -> Pushed:
        """The ``pushed`` checkpoint's value (None or unreadable: nothing pushed yet, so nothing is stale)."""
        try:
            value = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            value = {}
        return cls(dict(value.get("read") or {}), dict(value.get("full") or {}))

    def dump(self) -> str:
        return orjson.dumps({"read": self.read, "full": self.full}, option=orjson.OPT_SORT_KEYS).decode()

    def superseded(self, read: float, types: Iterable[str]) -> bool:
        """True when a full run that began reading at ``read`` or later was pushed for every one of ``types``
        (the types the message's run read in full; none: never superseded)."""
        types = list(types)
        return bool(types) and all(self.full.get(t, NEVER) >= read for t in types)

    def overtaken(self, read: float) -> bool:
        """True when anything read after ``read`` was pushed, of any type."""
        return any(mark > read for marks in (self.read, self.full) for mark in marks.values())

    def verdict(self, type_key: str, read: float) -> str:
        """What to do with a record of ``type_key`` read at ``read``: "drop" (a full run read later was pushed),
        "check" (something of its type read later was pushed: compare with its object's read time), "push"."""
        if self.full.get(type_key, NEVER) > read:
            return "drop"
        return "check" if self.read.get(type_key, NEVER) > read else "push"

    def advance(self, read_by_type: Mapping[str, float], full: Mapping[str, float]) -> None:
        """Move the marks forward (never back) after an execution is DONE: ``read_by_type`` the newest read time
        pushed or confirmed per type, ``full`` the read time of the full runs pushed per type they read."""
        for marks, new in ((self.read, read_by_type), (self.full, full)):
            for type_key, when in new.items():
                marks[type_key] = max(marks.get(type_key, when), when)
