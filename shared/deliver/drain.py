"""Draining the queue: everything waiting (up to ``MAX_MESSAGES``), parsed once into the contract's types.

The queue is not strictly FIFO, so what was drained is ordered by when its data was read (``read_time``). A
body that is not a message of ours (``shared.contract.messages.parse_message``) stays in the queue: after
``maxDequeueCount`` deliveries the host moves it to the poison queue for inspection.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.contract.messages import InvalidMessage, Message, parse_message
from shared.store.ports import ChangeQueue, QueuedMessage

log = logging.getLogger(__name__)

MAX_MESSAGES = 256          # per execution; the rest waits for the next one
VISIBILITY_SECONDS = 1800   # drained messages stay invisible while their execution runs


@dataclass(frozen=True)
class Drained:
    """A message taken from the queue: its queue handle and its parsed content."""

    queued: QueuedMessage
    message: Message


def parsed(queued: QueuedMessage) -> Drained | None:
    """``queued`` with its message; None (and one log line, without the body) when it is not ours."""
    try:
        return Drained(queued, parse_message(queued.body))
    except InvalidMessage as why:
        log.error("queue message %s is not an entra-assets message (%s); left for the poison queue", queued.id, why)
        return None


def drain(queue: ChangeQueue, trigger: QueuedMessage | None) -> list[Drained]:
    """``trigger`` (the message a queue trigger delivered) and what else waits, oldest data first."""
    messages = [trigger] if trigger else []
    while len(messages) < MAX_MESSAGES:
        batch = queue.receive(max_messages=min(32, MAX_MESSAGES - len(messages)),
                              visibility_timeout=VISIBILITY_SECONDS)
        if not batch:
            break
        messages.extend(batch)
    drained = [d for d in map(parsed, messages) if d is not None]
    drained.sort(key=lambda d: d.message.read_time)
    return drained
