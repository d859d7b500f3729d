"""Full reconciliation (the producer side of the timer path).

A full run reads every user through the initial round of ``/users/delta`` (which also yields the delta link
for later incremental runs), maps each to a record, compares its content hash with the hash of what was last
pushed, and streams only the new or changed records into one claim-check payload; a small queue message points
at it. Memory grows with the derived objects and the stored hashes, not with the users read: records are
written out as they are produced.

Checkpoints (the new delta link, the chosen names of derived objects) travel at the end of the payload and are
committed by the worker only after Assets has finished the execution that carries the records. A run that finds
nothing changed queues nothing and starts no execution; it commits its checkpoints at once, since no record is
waiting on them (anything still queued from an earlier run stays queued).
"""
from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import orjson

from shared.graph import GraphClient
from shared.mapping import USER_SELECT, Derived, Record, Warnings, map_user
from shared.schema import OBJECT_TYPES
from shared.store import ChangeQueue, PayloadStore, StateStore

log = logging.getLogger(__name__)

USERS_DELTA = "delta/users"   # checkpoint: the delta link of the last full round
NAMES = "names"               # checkpoint: names chosen for derived objects (JSON)
LAST_FULL = "full/last"       # scheduling: when the last full run was queued (epoch seconds)
MESSAGE_VERSION = 1

Progress = Callable[[str, int], None]  # (stage, objects so far)


@dataclass
class FullRunResult:
    """What a full run saw and queued."""

    run_id: str
    users: int = 0
    removed_seen: int = 0
    changed: Counter = field(default_factory=Counter)
    unchanged: Counter = field(default_factory=Counter)
    graph_pages: int = 0
    payload: str | None = None
    warnings: Warnings = field(default_factory=Warnings)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def queued(self) -> int:
        return sum(self.changed.values())


def full_sync_due(state: StateStore, interval_hours: float, now: float) -> bool:
    """True when no full run was queued within ``interval_hours``."""
    last = state.checkpoint(LAST_FULL)
    return last is None or now - float(last) >= interval_hours * 3600


def run_full(graph: GraphClient, state: StateStore, queue: ChangeQueue, payloads: PayloadStore,
             progress: Progress = lambda stage, n: None, clock: Callable[[], float] = time.time) -> FullRunResult:
    """Read all users, queue what changed since the last push, and return what happened.

    Idempotent: running it twice before the worker runs queues the same changes twice, which the worker
    coalesces. Raises the Graph errors of ``GraphClient`` before anything is queued.
    """
    started = clock()
    result = FullRunResult(run_id=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started)) + "-" + uuid.uuid4().hex[:8])
    hashes = {t.key: state.hashes(t.key) for t in OBJECT_TYPES}
    derived = Derived(names=orjson.loads(state.checkpoint(NAMES) or "{}"))
    round_ = graph.delta("users", USER_SELECT)
    checkpoints: dict[str, str | None] = {}
    progress("Fetching users", 0)

    def compare(record: Record) -> Iterator[bytes]:
        if hashes[record.type].get(record.id) == record.hash:
            result.unchanged[record.type] += 1
        else:
            result.changed[record.type] += 1
            yield record.line()

    def lines() -> Iterator[bytes]:
        for user in round_.objects:
            if "@removed" in user:  # departures are handled by a later issue; never pushed as active
                result.removed_seen += 1
                continue
            record = map_user(user, result.warnings)
            derived.observe(user, record)
            result.users += 1
            if result.users % 5000 == 0:
                progress("Fetching users", result.users)
            yield from compare(record)
        result.seconds["fetch_and_format"] = clock() - started
        progress("Formatting data", result.users)
        for record in derived.records():
            yield from compare(record)
        checkpoints[USERS_DELTA] = round_.delta_link
        checkpoints[NAMES] = orjson.dumps(derived.chosen_names()).decode()
        yield orjson.dumps({"checkpoints": checkpoints})

    name = f"full-{result.run_id}.jsonl.gz"
    payloads.write(name, lines())
    result.graph_pages = round_.pages
    if result.queued:
        queue.send({"v": MESSAGE_VERSION, "kind": "records", "payload": name, "records": result.queued,
                    "run": result.run_id, "created": started})
        result.payload = name
    else:
        payloads.delete(name)
        state.commit({}, checkpoints)
    state.commit({}, {LAST_FULL: repr(started)})
    result.seconds["total"] = clock() - started
    log.info("full run %s: %d users, %d records queued, %d unchanged", result.run_id, result.users,
             result.queued, sum(result.unchanged.values()))
    return result
