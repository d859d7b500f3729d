"""An Assets execution handed on from one worker invocation to the next (issue 11), so that no invocation
runs longer than its budget (``SEGMENT_SECONDS``) plus one chunk, however long Assets takes.

A pass whose time is up while it sends, or whose execution is not DONE when it has sent the last chunk, hands
the execution on instead of holding its instance:
1. what it has not sent yet goes to a payload of its own (``rest``, spool lines: ``shared.deliver.outgoing``),
   and what it sent to another (``sent``: ``Outgoing.export``) - the next invocation may run on another instance;
2. the journal (checkpoint ``HANDOFF``: the execution's links, those payloads, the drained messages, the
   checkpoints to commit after DONE, the figures so far) is committed, ``resumable``;
3. the drained messages are deleted - the journal now holds what they asked for - and a ``HandOnMessage`` is
   queued: at once to send on, after a growing delay (``DELAYS``) to ask for DONE again.
The pass that takes the journal up clears ``resumable`` before anything else; it sends on from ``taken`` lines
into ``rest``, or asks for DONE once, and hands on again or finishes: the commit of what every pass sent
(restored from the ``sent`` payloads), then the acknowledgement, then one entry of the run history.

A pass killed while sending leaves the journal not ``resumable``: Assets may hold chunks the journal does not
count, so the next pass cancels that execution (``open_executions``) and sends everything again in a new one,
from the payloads (``restart``) - no chunk is sent twice into one execution (whether Assets would de-duplicate
one by ``clientGeneratedId`` is UNCONFIRMED, reference §4.3). A pass killed while it waited or committed only
asked for DONE: the next one asks again. While a journal is open no new message is drained: the journal's
execution is the writer's, and what waits goes into the next one.
"""
from __future__ import annotations

import dataclasses
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import orjson

from shared.contract.payload import Line
from shared.deliver.outgoing import Outgoing, parse_spool_line, spool_line
from shared.store.ports import PayloadStore, StateStore

HANDOFF = "worker/handoff"   # checkpoint: the journal of the execution handed on (JSON), absent when none
POSTING, AWAITING = "posting", "awaiting"
AWAIT_INLINE_SECONDS = 30.0  # how long the pass that sent the last chunk waits for DONE before it hands on
DELAYS = (5.0, 10.0, 20.0, 40.0, 60.0)  # before DONE is asked for again, growing; then every minute
STALL_SECONDS = 900.0        # a journal no pass moved for this long has lost its hand-on message


@dataclass
class Journal:
    """What one execution handed on carries from invocation to invocation (see the module docstring)."""

    id: str
    started: float                  # when the first pass began (time.time()): the run history's one run
    phase: str                      # POSTING: records are left to send; AWAITING: DONE is awaited
    execution: dict                 # the execution's links (``Execution``)
    messages: list[dict]            # the bodies of the messages the first pass drained
    checkpoints: dict[str, str | None]  # committed after DONE, with the records
    figures: dict                   # the pass figures so far (``PushResult``'s counters)
    rest: str | None = None         # payload of the records not sent yet, from line ``taken`` on
    taken: int = 0
    sent: list[str] = field(default_factory=list)   # payloads of what each pass sent (``Outgoing.export``)
    resumable: bool = True          # False while a pass works on it: a pass killed then leaves it False
    asked: int = 0                  # passes that asked for DONE and handed on
    step: int = 0                   # passes that handed it on: only the HandOnMessage of the last one moves it
    touched: float = 0.0            # when a pass last saved it (time.time()): a stalled journal is taken up

    def part(self, name: str) -> str:
        """The name of one of this journal's payloads."""
        return f"handoff-{self.id}/{name}.jsonl"

    def payloads(self) -> list[str]:
        """The names of the payloads it holds now."""
        return [*self.sent, *([self.rest] if self.rest else [])]


def begin(started: float, messages: list[dict]) -> Journal:
    """The journal of an execution first handed on by a pass that began at ``started`` and drained ``messages``."""
    return Journal(uuid.uuid4().hex[:16], started, POSTING, {}, messages, {}, {})


def load(state: StateStore) -> Journal | None:
    raw = state.checkpoint(HANDOFF)
    return Journal(**orjson.loads(raw)) if raw else None


def save(state: StateStore, journal: Journal) -> None:
    journal.touched = time.time()
    state.commit({}, {HANDOFF: orjson.dumps(dataclasses.asdict(journal)).decode()})


def stalled(journal: Journal) -> bool:
    """Whether no pass moved ``journal`` for ``STALL_SECONDS``: its hand-on message was lost (poisoned, say),
    so any worker pass takes it up."""
    return time.time() - journal.touched > STALL_SECONDS


def closed() -> dict[str, None]:
    """The checkpoint change that goes with the commit after DONE."""
    return {HANDOFF: None}


def write_rest(payloads: PayloadStore, name: str, lines: Iterable[Line]) -> None:
    """Store ``lines`` (the records not sent yet) as the payload ``name``."""
    payloads.write(name, map(spool_line, lines))


class Taken:
    """An iterator of records that counts how many were taken from it (``count``)."""

    def __init__(self, items: Iterator[Line]):
        self._items, self.count = items, 0

    def __iter__(self) -> Iterator[Line]:
        return self

    def __next__(self) -> Line:
        item = next(self._items)
        self.count += 1
        return item


def rest_lines(payloads: PayloadStore, journal: Journal) -> Taken:
    """The records of ``journal`` not sent yet."""
    if journal.rest is None:
        return Taken(iter(()))
    lines = payloads.read(journal.rest)
    for _ in range(journal.taken):
        next(lines, None)
    return Taken(map(parse_spool_line, lines))


def restore(payloads: PayloadStore, journal: Journal, pushed: Outgoing) -> None:
    """Everything the earlier passes of ``journal`` sent, into ``pushed``."""
    for name in journal.sent:
        pushed.restore(payloads.read(name))


def restart(payloads: PayloadStore, journal: Journal) -> list[str]:
    """Make ``journal`` start over in a new execution: every record its passes sent or left becomes the rest
    (in order), the confirmed read times of its catch-up its one sent part. Returns the payloads it no longer
    needs, to delete once the journal is saved."""
    confirmed: dict[str, dict[str, float]] = {}

    def records() -> Iterator[Line]:
        for name in journal.sent:
            for raw in payloads.read(name):
                if b"\t" in raw:
                    yield parse_spool_line(raw)
                else:
                    for type_key, times in orjson.loads(raw)["confirmed"].items():
                        confirmed.setdefault(type_key, {}).update(times)
        yield from rest_lines(payloads, journal)
    rest = journal.part(f"rest-{uuid.uuid4().hex[:8]}")
    write_rest(payloads, rest, records())
    kept = journal.part(f"confirmed-{uuid.uuid4().hex[:8]}")
    payloads.write(kept, [orjson.dumps({"confirmed": confirmed})])
    done_with = journal.payloads()
    journal.rest, journal.taken, journal.sent, journal.phase, journal.execution = rest, 0, [kept], POSTING, {}
    return done_with


_FIGURES = ("messages", "superseded", "executions")
_COUNTERS = ("triggers", "stale")


def carry(result, pushed: Outgoing) -> dict:
    """What a journal carries of a pass's ``result`` (``PushResult``) and ``pushed`` to the pass that finishes
    it: the run history's figures."""
    return {**{name: getattr(result, name) for name in _FIGURES},
            **{name: dict(getattr(result, name)) for name in _COUNTERS},
            "summaries": result.summaries, "submit": result.seconds.get("submit", 0.0),
            "sent": dict(pushed.sent), "chunks": pushed.chunks}


def carried(result, figures: dict) -> None:
    """Put the ``figures`` a journal carried (``carry``) into ``result``."""
    for name in _FIGURES:
        setattr(result, name, figures.get(name, 0))
    for name in _COUNTERS:
        setattr(result, name, Counter(figures.get(name, {})))
    result.summaries = list(figures.get("summaries", []))
    result.seconds["submit"] = figures.get("submit", 0.0)


def delay(journal: Journal) -> float:
    """Seconds before the next pass: none to send on, a growing delay to ask for DONE again."""
    if journal.phase == POSTING:
        return 0.0
    return DELAYS[min(journal.asked, len(DELAYS) - 1)]


def discard(payloads: PayloadStore, journal: Journal) -> None:
    """Delete the journal's payloads (after its commit)."""
    for name in journal.payloads():
        payloads.delete(name)
