"""What the worker pushes of the payloads it drained: newest record per object, nothing stale.

A payload line is ``[type, id, hash]``, a tab, then the record's data as JSON (``Record.line``); its last line is
``{"checkpoints": {...}}``. Every record of a message counts as read when its run began reading Graph
(``shared.contract``). ``coalesced`` streams the records to push:
- of several messages, one record per object: the one read last (on a tie, the later message's);
- a record that newer pushes overtook (``Pushed.verdict``, with the read times stored per object) is dropped;
- the checkpoints of a message go into ``checkpoints``; those of a message overtaken by anything pushed since
  it was read go into ``Coalesced.older_checkpoints`` instead, for the worker to merge *under* what is stored
  (``merge_checkpoint``): an older delta link or name choice must not replace a newer one.
The usual case - one message that nothing overtook - is streamed once; anything else is read twice (pass 1
finds the winners and the objects to check, pass 2 yields).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import orjson

from shared import jira_links as links
from shared.contract import NEVER, Pushed, message_read_time
from shared.produce.full import NAMES
from shared.store.ports import PayloadStore, QueuedMessage

log = logging.getLogger(__name__)

ReadTimes = Callable[[str, list[str]], dict[str, float]]  # StateStore.read_times


@dataclass(frozen=True, slots=True)
class Line:
    """One record of a payload: ``data`` is its JSON, kept unparsed; ``read`` when its data was read."""

    type: str
    id: str
    hash: str
    data: bytes
    read: float


@dataclass
class Coalesced:
    """What coalescing set aside: records older than what was pushed for their object (counted per type), and
    the checkpoints of messages that data read later was pushed since (merged, a later message winning)."""

    stale_by_type: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    older_checkpoints: dict[str, str | None] = field(default_factory=dict)


def payload_lines(payloads: PayloadStore, message: QueuedMessage, checkpoints: dict | None) -> Iterator[Line]:
    """The records of a message's payload; its checkpoints line goes into ``checkpoints`` (None: ignored). A
    payload that is gone was deleted after an earlier, successful push whose acknowledgement did not reach the
    queue: it yields nothing."""
    read = message_read_time(message.body)
    try:
        for line in payloads.read(message.body["payload"]):
            head, tab, data = line.partition(b"\t")
            if not tab:
                if checkpoints is not None:
                    checkpoints.update(orjson.loads(line)["checkpoints"])
                continue
            type_key, record_id, digest = orjson.loads(head)
            yield Line(type_key, record_id, digest, data, read)
    except (FileNotFoundError, LookupError) as exc:
        log.warning("payload of message %s is gone (%s); treating it as already pushed", message.id,
                    type(exc).__name__)


def coalesced(payloads: PayloadStore, messages: list[QueuedMessage], checkpoints: dict, marks: Pushed,
              read_times: ReadTimes, outcome: Coalesced) -> Iterator[Line]:
    """The records of ``messages`` (sorted oldest first) to push, streamed; see the module docstring.
    Fills ``checkpoints`` with those of the fresh messages (in order: a later one wins) and ``outcome``."""
    overtaken = [marks.overtaken(message_read_time(m.body)) for m in messages]
    if len(messages) == 1 and not overtaken[0]:
        yield from payload_lines(payloads, messages[0], checkpoints)
        return
    winners: dict[tuple[str, str], tuple[float, int, int]] = {}
    to_check: dict[str, set[str]] = defaultdict(set)
    for mi, message in enumerate(messages):
        into = outcome.older_checkpoints if overtaken[mi] else checkpoints
        for li, line in enumerate(payload_lines(payloads, message, into)):
            key = (line.type, line.id)
            if key not in winners or winners[key][0] <= line.read:
                winners[key] = (line.read, mi, li)
            if marks.verdict(line.type, line.read) == "check":
                to_check[line.type].add(line.id)
    last_read = {t: read_times(t, sorted(ids)) for t, ids in to_check.items()}
    for mi, message in enumerate(messages):
        for li, line in enumerate(payload_lines(payloads, message, None)):
            if winners[line.type, line.id][1:] != (mi, li):
                continue
            verdict = marks.verdict(line.type, line.read)
            if verdict == "drop" or (verdict == "check" and last_read[line.type].get(line.id, NEVER) > line.read):
                outcome.stale_by_type[line.type] += 1
                continue
            yield line


def merge_checkpoint(name: str, older: str | None, newer: str | None) -> str | None:
    """One checkpoint as two runs left it: ``older`` planned from an earlier state than ``newer`` (a full run's
    payload and the catch-up of the same pass; a stale payload and what is stored). Derived-object names and
    the Jira account cache are merged per key, the newer winning; id lists (Jira lookups pending, users
    unmatched) are united - an id kept once too often costs a cache read or one stale line in ``status``, while
    an id dropped would be lost until the next full run. Anything else (delta links ...): the newer value, or
    the older when there is no newer."""
    if newer is None or not older:  # a list left empty (None) by the newer run keeps the older run's ids
        return older if newer is None else newer
    if name not in _MERGED:
        return newer
    old, new = orjson.loads(older), orjson.loads(newer)
    if name == NAMES:
        for type_key, names in new.items():
            old.setdefault(type_key, {}).update(names)
        return orjson.dumps(old).decode()
    if name == links.CACHE:
        return orjson.dumps({**old, **new}).decode()
    return orjson.dumps(sorted(set(old) | set(new))).decode()


_MERGED = (NAMES, links.CACHE, links.LOOKUPS, links.UNMATCHED)
