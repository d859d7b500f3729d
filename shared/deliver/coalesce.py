"""What the worker pushes of the payloads it drained: newest record per object, nothing stale.

A payload's lines are ``shared.contract.payload``'s. Every record of a ``records`` message counts as read when its
run began reading Graph (``shared.deliver.freshness``). ``coalesced`` streams the records to push:
- of several messages, one record per object: the one read last (on a tie, the later message's);
- a record that newer pushes overtook (``Pushed.verdict``, with the read times stored per object) is dropped;
- the checkpoints of a message go into ``checkpoints``; those of a message overtaken by anything pushed since
  it was read go into ``Coalesced.older_checkpoints`` instead, for the worker to merge *under* what is stored
  (``shared.contract.checkpoints.merge_checkpoint``): an older delta link or name choice must not replace a
  newer one.
The usual case - one message that nothing overtook - is streamed once; anything else is read twice (pass 1
finds the winners and the objects to check, pass 2 yields).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from shared.contract.payload import Line, parse_lines
from shared.deliver.drain import Drained
from shared.deliver.freshness import NEVER, Pushed
from shared.store.ports import PayloadStore

log = logging.getLogger(__name__)

ReadTimes = Callable[[str, list[str]], dict[str, float]]  # StateStore.read_times


@dataclass
class Coalesced:
    """What coalescing set aside: records older than what was pushed for their object (counted per type), and
    the checkpoints of messages that data read later was pushed since (merged, a later message winning)."""

    stale_by_type: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    older_checkpoints: dict[str, str | None] = field(default_factory=dict)


def payload_lines(payloads: PayloadStore, drained: Drained, checkpoints: dict | None) -> Iterator[Line]:
    """The records of a ``records`` message's payload; its checkpoints go into ``checkpoints`` (None: ignored).
    A payload that is gone was deleted after an earlier, successful push whose acknowledgement did not reach
    the queue: it yields nothing."""
    message = drained.message
    try:
        yield from parse_lines(payloads.read(message.payload), message.read_time, checkpoints)
    except (FileNotFoundError, LookupError) as exc:
        log.warning("payload of message %s is gone (%s); treating it as already pushed", drained.queued.id,
                    type(exc).__name__)


def coalesced(payloads: PayloadStore, messages: list[Drained], checkpoints: dict, marks: Pushed,
              read_times: ReadTimes, outcome: Coalesced) -> Iterator[Line]:
    """The records of ``messages`` (sorted oldest first) to push, streamed; see the module docstring.
    Fills ``checkpoints`` with those of the fresh messages (in order: a later one wins) and ``outcome``."""
    overtaken = [marks.overtaken(m.message.read_time) for m in messages]
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
