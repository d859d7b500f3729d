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

from shared.contract import NEVER, message_read_time
from shared.produce.notifications import change_messages
from shared.store.ports import QueuedMessage

DELAYS = (30.0, 120.0)   # seconds before the first and the second follow-up catch-up
TYPES = {"users": "user", "groups": "group"}   # notification resource -> record type


def missed(messages: Iterable[QueuedMessage], seen: Mapping[str, Iterable[str]],
           read_times: Callable[[str, list[str]], Mapping[str, float]]) -> dict[int, list[dict]]:
    """The notified changes of ``messages`` that no read since their notification covers, by the follow-up
    attempt they would be (1 = the first). Covered: read by this catch-up (``seen``: ids per record type,
    departures included), or read after the notification came by an earlier pass (``read_times``, the
    state's) - a duplicate notification, or one whose change an earlier catch-up already pushed."""
    seen_ids = {key: set(ids) for key, ids in seen.items()}
    candidates: list[tuple[int, str, dict, float]] = []
    for message in messages:
        body = message.body
        if body.get("kind") != "changes":
            continue
        attempt, since = int(body.get("attempt") or 0) + 1, message_read_time(body)
        for change in body.get("changes") or ():
            key = TYPES.get(change.get("r"))
            if key is not None and change.get("id") not in seen_ids.get(key, ()):
                candidates.append((attempt, key, change, since))
    stored = {key: read_times(key, sorted({c["id"] for _, k, c, _ in candidates if k == key}))
              for key in {k for _, k, _, _ in candidates}}
    out: dict[int, list[dict]] = {}
    for attempt, key, change, since in candidates:
        if stored[key].get(change["id"], NEVER) < since:
            out.setdefault(attempt, []).append(change)
    return out


def follow_ups(changes: list[dict], attempt: int, now: float) -> list[tuple[dict, float]]:
    """The messages (with their delay) to queue for ``changes`` still missing at ``attempt``: the webhook's own
    ``changes`` messages (``notifications.change_messages``, split under the queue's limit); none past the
    last attempt."""
    if attempt > len(DELAYS):
        return []
    missing = {(change["r"], change["id"]): change.get("c", "updated") for change in changes}
    return [(body, DELAYS[attempt - 1]) for body in change_messages(missing, now, attempt=attempt)]
