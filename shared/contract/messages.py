"""The queue messages producers send and the worker drains: typed, versioned, parsed in one place.

Five kinds, all ``v`` 1 (``MESSAGE_VERSION``), as JSON objects in the queue (``shared.store.ports.ChangeQueue``):

- ``records`` (``RecordsMessage``): a full run's claim check - the payload's name, when the run began reading
  Graph (``read``) and which object types it read in full (``types``);
- ``changes`` (``ChangesMessage``): object ids Graph notified, when the notification was received; ``attempt``
  > 0 marks a follow-up for ids a catch-up did not see yet (``shared.deliver.follow_ups``);
- ``lifecycle`` (``LifecycleMessage``): a subscription lifecycle notification (graph.md §3.6);
- ``catchup`` (``CatchUpMessage``): the timer or the CLI asking for a delta catch-up;
- ``handon`` (``HandOnMessage``): a worker pass handing its Assets execution on to the next invocation
  (``shared.deliver.handoff``): posting goes on, or DONE is asked for again, after ``delay``.

A fifth kind, ``segment`` (``SegmentMessage``, ``parse_segment_message``), travels on the run queue from one
segment of a full run to the next (``shared.produce.segments``); the worker never sees it.

Every message has a ``read_time``: the earliest its data can be from - the read start of a full run, the
receipt of a notification, the moment a catch-up was asked for. The worker orders what it drained by it
(``shared.contract.freshness``). ``trigger`` names the producer in the run history; ``cid`` is the correlation
id (``shared.telemetry``), stamped on the JSON by the queue when absent here.

``parse_message`` accepts what this version and the earlier, untyped producers wrote (messages still queued
across an upgrade): ``records`` without ``types`` (never superseded) and times under the older names. Anything
else raises ``InvalidMessage``; the worker leaves such a message for the poison queue.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from shared.store.ports import RAW_MESSAGE_LIMIT, encode_message

MESSAGE_VERSION = 1
CHANGE_TYPES = ("created", "updated", "deleted")   # weakest first: a stronger one replaces a weaker one
NOTIFIED_RESOURCES = ("users", "groups")


class InvalidMessage(ValueError):
    """A queue body that is not an entra-assets message of a version this worker reads."""


@dataclass(frozen=True)
class RecordsMessage:
    """A full run's records, in the payload ``payload`` (lines of ``shared.contract.payload``)."""

    KIND: ClassVar[str] = "records"
    payload: str
    read: float                        # when the run began reading Graph
    types: tuple[str, ...] = ()        # the object types it read in full (none: never superseded)
    run: str = ""
    records: int = 0
    trigger: str = "unknown"
    summary: dict | None = None        # the producer's summary for the run history
    cid: str | None = None

    @property
    def read_time(self) -> float:
        return self.read

    def body(self) -> dict:
        return _body(self, {"payload": self.payload, "records": self.records, "run": self.run, "read": self.read,
                            "types": list(self.types), **({"summary": self.summary} if self.summary else {})})


@dataclass(frozen=True)
class NotifiedChange:
    """One notified object: ``resource`` "users" or "groups", its id, and the change type."""

    resource: str
    id: str
    change: str = "updated"


@dataclass(frozen=True)
class ChangesMessage:
    """Objects Graph notified; the worker runs the stored delta links for them (one catch-up for all)."""

    KIND: ClassVar[str] = "changes"
    changes: tuple[NotifiedChange, ...]
    received: float
    attempt: int = 0
    trigger: str = "webhook"
    cid: str | None = None

    @property
    def read_time(self) -> float:
        return self.received

    def body(self) -> dict:
        return _body(self, {"received": self.received,
                            "changes": [{"r": c.resource, "id": c.id, "c": c.change} for c in self.changes],
                            **({"attempt": self.attempt} if self.attempt else {})})


@dataclass(frozen=True)
class LifecycleMessage:
    """A lifecycle notification of one of our subscriptions (``resource`` None: not known)."""

    KIND: ClassVar[str] = "lifecycle"
    event: str
    subscription: str
    received: float
    resource: str | None = None
    trigger: str = "webhook"
    cid: str | None = None

    @property
    def read_time(self) -> float:
        return self.received

    def body(self) -> dict:
        return _body(self, {"event": self.event, "subscription": self.subscription, "resource": self.resource,
                            "received": self.received})


@dataclass(frozen=True)
class CatchUpMessage:
    """A delta catch-up asked for by the timer (the safety net) or the CLI."""

    KIND: ClassVar[str] = "catchup"
    created: float
    trigger: str = "timer"
    cid: str | None = None

    @property
    def read_time(self) -> float:
        return self.created

    def body(self) -> dict:
        return _body(self, {"created": self.created})


@dataclass(frozen=True)
class SegmentMessage:
    """The continuation of a segmented full run (``shared.produce.segments``): run ``run`` has done ``done``
    segments and goes on with the next. Sent on the run queue (RUN_QUEUE_NAME), never to the worker."""

    KIND: ClassVar[str] = "segment"
    run: str
    done: int
    created: float
    trigger: str = "timer"
    cid: str | None = None

    def body(self) -> dict:
        return _body(self, {"run": self.run, "done": self.done, "created": self.created})


@dataclass(frozen=True)
class HandOnMessage:
    """Wakes the worker for the execution a pass handed on (``shared.deliver.handoff``: journal ``handoff``,
    after its ``step``-th hand-on); a message for a journal finished or moved on since changes nothing."""

    KIND: ClassVar[str] = "handon"
    handoff: str
    step: int
    created: float
    trigger: str = "worker"
    cid: str | None = None

    @property
    def read_time(self) -> float:
        return self.created

    def body(self) -> dict:
        return _body(self, {"handoff": self.handoff, "step": self.step, "created": self.created})


Message = RecordsMessage | ChangesMessage | LifecycleMessage | CatchUpMessage | HandOnMessage
CatchUpRequest = ChangesMessage | LifecycleMessage | CatchUpMessage   # what asks the worker for a catch-up


def _body(message: Message | SegmentMessage, fields: dict) -> dict:
    head = {"v": MESSAGE_VERSION, "kind": message.KIND, "trigger": message.trigger}
    return head | fields | ({"cid": message.cid} if message.cid else {})


def parse_message(body: object) -> Message:
    """The typed message of a queue body. Raises ``InvalidMessage`` saying what is wrong (never quoting data)."""
    if not isinstance(body, Mapping):
        raise InvalidMessage("not a JSON object")
    if body.get("v", MESSAGE_VERSION) != MESSAGE_VERSION:
        raise InvalidMessage(f"message version {body.get('v')!r}, this worker reads {MESSAGE_VERSION}")
    kind, trigger, cid = body.get("kind"), _text(body.get("trigger")) or "unknown", _text(body.get("cid"))
    if kind == "records":
        if not _text(body.get("payload")):
            raise InvalidMessage("a records message without a payload name")
        types = body.get("types")
        return RecordsMessage(body["payload"], _time(body, "read", "created"),
                              tuple(t for t in types if isinstance(t, str)) if isinstance(types, list) else (),
                              _text(body.get("run")) or "", _count(body.get("records")), trigger,
                              body["summary"] if isinstance(body.get("summary"), dict) else None, cid)
    if kind == "changes":
        return ChangesMessage(_changes(body.get("changes")), _time(body, "received", "created"),
                              _count(body.get("attempt")), trigger, cid)
    if kind == "lifecycle":
        if not _text(body.get("event")):
            raise InvalidMessage("a lifecycle message without its event")
        return LifecycleMessage(body["event"], _text(body.get("subscription")) or "", _time(body, "received"),
                                _text(body.get("resource")), trigger, cid)
    if kind == "catchup":
        return CatchUpMessage(_time(body, "created", "received"), trigger, cid)
    if kind == "handon":
        if not _text(body.get("handoff")):
            raise InvalidMessage("a handon message without its hand-off id")
        return HandOnMessage(body["handoff"], _count(body.get("step")), _time(body, "created"), trigger, cid)
    raise InvalidMessage(f"unknown message kind {str(kind)[:32]!r}")


def parse_segment_message(body: object) -> SegmentMessage:
    """The continuation of a run queue body. Raises ``InvalidMessage`` saying what is wrong."""
    if not isinstance(body, Mapping):
        raise InvalidMessage("not a JSON object")
    if body.get("v") != MESSAGE_VERSION or body.get("kind") != SegmentMessage.KIND:
        raise InvalidMessage(f"not a version-{MESSAGE_VERSION} segment message")
    if not _text(body.get("run")) or not isinstance(body.get("done"), int) or isinstance(body.get("done"), bool):
        raise InvalidMessage("a segment message without its run or its count of segments done")
    return SegmentMessage(body["run"], body["done"], _time(body, "created"), _text(body.get("trigger")) or "unknown",
                          _text(body.get("cid")))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _time(body: Mapping, *names: str) -> float:
    """The first of ``names`` that holds a number (earlier producers used other names); 0 for none - the
    oldest possible, so a message that does not say when it was read never overtakes another."""
    for name in names:
        value = body.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return 0.0


def _changes(value: object) -> tuple[NotifiedChange, ...]:
    if not isinstance(value, list):
        raise InvalidMessage("a changes message without its list of changes")
    out = []
    for entry in value:
        if not (isinstance(entry, Mapping) and entry.get("r") in NOTIFIED_RESOURCES and _text(entry.get("id"))):
            raise InvalidMessage("a changes message with a malformed change")
        change = entry.get("c") if entry.get("c") in CHANGE_TYPES else "updated"
        out.append(NotifiedChange(entry["r"], entry["id"], change))
    return tuple(out)


def changes_messages(changes: Mapping[tuple[str, str], str], received: float, cid: str | None = None,
                     attempt: int = 0, trigger: str = "webhook") -> list[ChangesMessage]:
    """``changes`` ({(resource, id): change type}, in order) as as few ``changes`` messages as fit one queue
    message each (``RAW_MESSAGE_LIMIT``, measured with the queue's own encoding)."""
    if not changes:
        return []
    envelope = len(encode_message(ChangesMessage((), received, attempt, trigger, cid).body()).encode())
    messages: list[ChangesMessage] = []
    batch: list[NotifiedChange] = []
    size = envelope
    for (resource, object_id), change in changes.items():
        entry = NotifiedChange(resource, object_id, change)
        extra = len(encode_message({"r": resource, "id": object_id, "c": change}).encode()) + (1 if batch else 0)
        if batch and size + extra > RAW_MESSAGE_LIMIT:
            messages.append(ChangesMessage(tuple(batch), received, attempt, trigger, cid))
            batch, size, extra = [], envelope, extra - 1
        batch.append(entry)
        size += extra
    messages.append(ChangesMessage(tuple(batch), received, attempt, trigger, cid))
    return messages
