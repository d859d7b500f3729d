"""Notified but not yet in delta: a second catch-up for the ids a catch-up did not see. Pure.

Graph's change notification can arrive before ``/delta`` shows the change (reference/graph.md §2.8: delta is
eventually consistent, like the directory's replicas). The catch-up the notification triggered then finds
nothing, and without more the change would wait for the timer's catch-up (15 min) or the next notification.
So after each catch-up, the ids the webhook notified that the round did not return (``missed``) are queued
again as a ``changes`` message - after ``DELAYS[0]`` seconds, and once more after ``DELAYS[1]`` if still
missing - each time running the delta link again. Past the last attempt the timer's safety net takes over.
Bounded: at most ``len(DELAYS)`` follow-ups per notification, each one message.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from shared.contract.messages import ChangesMessage, Message, NotifiedChange, changes_messages
from shared.deliver.freshness import NEVER

ReadTimes = Callable[[str, list[str]], Mapping[str, float]]  # StateStore.read_times, Outgoing.read_times

DELAYS = (30.0, 120.0)   # seconds before the first and the second follow-up catch-up
TYPES = {"users": "user", "groups": "group"}   # notification resource -> record type


def missed(messages: Iterable[Message], seen: ReadTimes, read_times: ReadTimes) -> dict[int, list[NotifiedChange]]:
    """The notified changes of ``messages`` that no read since their notification covers, by the follow-up
    attempt they would be (1 = the first). Covered: read by this catch-up (``seen``: the ids of those asked
    that it pushed or confirmed, departures included), or read after the notification came by an earlier pass
    (``read_times``, the state's) - a duplicate notification, or one whose change an earlier catch-up already
    pushed. Both are asked once per record type, for the notified ids only."""
    notified = [(message.attempt + 1, TYPES[change.resource], change, message.received)
                for message in messages if isinstance(message, ChangesMessage) for change in message.changes]
    asked = {key: sorted({c.id for _, k, c, _ in notified if k == key}) for key in {k for _, k, _, _ in notified}}
    covered = {key: seen(key, ids) for key, ids in asked.items()}
    candidates = [n for n in notified if n[2].id not in covered[n[1]]]
    stored = {key: read_times(key, sorted({c.id for _, k, c, _ in candidates if k == key}))
              for key in {k for _, k, _, _ in candidates}}
    out: dict[int, list[NotifiedChange]] = {}
    for attempt, key, change, since in candidates:
        if stored[key].get(change.id, NEVER) < since:
            out.setdefault(attempt, []).append(change)
    return out


def follow_ups(changes: list[NotifiedChange], attempt: int, now: float) -> list[tuple[ChangesMessage, float]]:
    """The messages (with their delay) to queue for ``changes`` still missing at ``attempt``: ``changes``
    messages like the webhook's (``changes_messages``, split under the queue's limit); none past the last
    attempt."""
    if attempt > len(DELAYS):
        return []
    missing = {(change.resource, change.id): change.change for change in changes}
    return [(message, DELAYS[attempt - 1]) for message in changes_messages(missing, now, attempt=attempt)]
