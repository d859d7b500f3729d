"""Draining the queue: everything waiting (up to ``MAX_MESSAGES``), parsed once into the contract's types.

The queue is not strictly FIFO, so what was drained is ordered by when its data was read (``read_time``). A
body that is not a message of ours (``shared.contract.messages.parse_message``) stays in the queue: after
``maxDequeueCount`` deliveries the host moves it to the poison queue for inspection.

With NOTIFICATION_DELIVERY=eventgrid the queue also holds Graph's CloudEvents, one per message, as Event Grid
delivers them (``shared.contract.notifications.cloud_event_message``): each becomes the ``changes`` or
``lifecycle`` message a webhook POST would have queued, after the same checks. An event that fails them (or
comes while Event Grid delivery is off) is acknowledged and counted, not poisoned: it is nobody's fault to
investigate - an event of a deleted subscription still in flight, another app's subscription on the topic.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

from shared.contract.messages import InvalidMessage, Message, parse_message
from shared.contract.notifications import Expected, cloud_event_message, is_cloud_event
from shared.store.ports import ChangeQueue, QueuedMessage

log = logging.getLogger(__name__)

MAX_MESSAGES = 256          # per execution; the rest waits for the next one
VISIBILITY_SECONDS = 1800   # drained messages stay invisible while their execution runs


@dataclass(frozen=True)
class Drained:
    """A message taken from the queue: its queue handle and its parsed content."""

    queued: QueuedMessage
    message: Message


def read_message(body: dict, events: Expected | None) -> Message | None:
    """The message a queue body holds: ours (``parse_message``), or the one a Graph CloudEvent asks for; None for
    an event that is not ours (``events`` None: Event Grid delivery is off), logged with its counts only.
    Raises ``InvalidMessage`` for anything else."""
    if not is_cloud_event(body):
        return parse_message(body)
    counts: Counter = Counter()
    message = cloud_event_message(body, events, time.time(), counts) if events else None
    if message is None:
        log.warning("an Event Grid event was refused and acknowledged: %s",
                    dict(counts) or {"eventgrid_off": 1})
    return message


def parsed(queued: QueuedMessage, events: Expected | None = None) -> Drained | None:
    """``queued`` with its message; None (and one log line, without the body) when it is not ours."""
    try:
        message = read_message(queued.body, events)
    except InvalidMessage as why:
        log.error("queue message %s is not an entra-assets message (%s); left for the poison queue", queued.id, why)
        return None
    return Drained(queued, message) if message is not None else None


def drain(queue: ChangeQueue, trigger: QueuedMessage | None, events: Expected | None = None) -> list[Drained]:
    """``trigger`` (the message a queue trigger delivered) and what else waits, oldest data first. Refused
    Event Grid events (``read_message``) are deleted here; the trigger's is completed by the host."""
    messages = [trigger] if trigger else []
    while len(messages) < MAX_MESSAGES:
        batch = queue.receive(max_messages=min(32, MAX_MESSAGES - len(messages)),
                              visibility_timeout=VISIBILITY_SECONDS)
        if not batch:
            break
        messages.extend(batch)
    drained = []
    for queued in messages:
        found = parsed(queued, events)
        if found is not None:
            drained.append(found)
        elif is_cloud_event(queued.body):
            queue.delete(queued)
    drained.sort(key=lambda d: d.message.read_time)
    return drained
