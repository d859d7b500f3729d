"""Graph change notifications (reference/graph.md §3) as the webhook and Event Grid carry them: the checks that
make one ours, and the queue messages it becomes. Pure: no I/O.

Both deliveries carry the same notification items - the webhook in a POST's ``value`` array
(``shared.produce.notifications``), Event Grid as the ``data`` of one CloudEvent per queue message, which the
worker reads (``cloud_event_message``). So both pass the same checks:

- ``clientState`` matches the configured secret (compared in constant time);
- ``subscriptionId`` is one of ours (the ``subscriptions`` checkpoint);
- every tenant id it names (``tenantId``, ``organizationId``, ``resourceData.organizationId``: payloads differ,
  §3.3 and §3.6) is ``AZURE_TENANT_ID``; with that set, naming none is refused too (``tenant_missing``) since
  Graph documents ``tenantId`` as required (https://learn.microsoft.com/graph/api/resources/changenotification);
  without it (a sandbox with a fixed token) tenants are not compared;
- the resource it names is its subscription's (a users subscription never notifies a group).

An item that fails is only counted (``COUNT_KEYS``: fixed keys, never ids or secrets, so counts can be logged).
"""
from __future__ import annotations

import datetime as dt
import hmac
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from shared.contract.messages import CHANGE_TYPES, ChangesMessage, LifecycleMessage, changes_messages

LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")
# Strongest last: a request saying both "updated" and "deleted" for one object queues "deleted".
_STRENGTH = {change: n for n, change in enumerate(CHANGE_TYPES)}
# Object ids of users and groups are GUIDs; stay lenient (emulators, future formats) but refuse anything that
# could smuggle a path, a query or markup into the worker.
_OBJECT_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$")
_EVENT = re.compile(r"^[A-Za-z]{1,64}$")
# "Users/{id}", "users/{id}", "/groups/{id}/members", "Users('{id}')"
_RESOURCE_PATH = re.compile(r"^/?(?P<r>[A-Za-z]+)(?:/(?P<id>[^/?#]+)|\('(?P<quoted>[^']+)'\))?")
_SINGULAR = {"user": "users", "users": "users", "group": "groups", "groups": "groups"}

COUNT_KEYS = (
    "accepted",              # change notifications accepted (before deduplication)
    "duplicates",            # accepted ones whose (resource, id) was already in this request
    "changes",               # distinct changes queued
    "forged",                # clientState missing or wrong
    "unknown_subscription",  # subscriptionId not one of ours (or ours not known yet)
    "subscriptions_unknown", # ... because no subscription is known yet (the checkpoint is missing)
    "foreign_tenant",        # names a tenant other than AZURE_TENANT_ID
    "tenant_missing",        # names no tenant at all while AZURE_TENANT_ID is set
    "malformed",             # not an object, or no usable resource / id / changeType
    "unsupported_resource",  # a resource other than users and groups
    "resource_mismatch",     # the item's resource differs from its subscription's (refused)
    "validation", "validation_refused",  # handshakes answered / refused (too long, control characters, empty)
    "rejected_content_type", "rejected_too_large", "rejected_invalid_json", "rejected_no_value",  # 415/413/400
    "event_type_unknown",    # a CloudEvent of a type that is not a Graph user, group or lifecycle event
    "eventgrid_off",         # a CloudEvent while NOTIFICATION_DELIVERY is not eventgrid
)  # plus "lifecycle:<event>" for the three documented events and "lifecycle:other"


@dataclass(frozen=True)
class Expected:
    """What a notification must carry to be ours: the secret (None: nothing is accepted), our subscription ids
    -> "users"/"groups" (None: not known yet, nothing is accepted), our tenant (None: not compared)."""

    secret: bytes | None
    subscriptions: Mapping[str, str] | None
    tenant: str | None

    @classmethod
    def of(cls, client_state: str | None, subscriptions: Mapping[str, str] | None,
           tenant: str | None) -> Expected:
        """From the revealed WEBHOOK_CLIENT_STATE, the subscriptions checkpoint and AZURE_TENANT_ID."""
        return cls(client_state.encode("utf-8") if client_state else None, subscriptions,
                   tenant.casefold() if tenant else None)


@dataclass
class Accepted:
    """What passed the checks: changes {(resource, id): strongest change type} in order, and lifecycle events
    {(event, subscription): its resource}."""

    changes: dict[tuple[str, str], str]
    lifecycle: dict[tuple[str, str], str | None]

    def messages(self, received: float, cid: str | None, trigger: str) -> list[ChangesMessage | LifecycleMessage]:
        """As few ``changes`` messages as fit the queue, then one ``lifecycle`` message per event."""
        return [*changes_messages(self.changes, received, cid, trigger=trigger),
                *(LifecycleMessage(event, subscription, received, resource, trigger, cid)
                  for (event, subscription), resource in self.lifecycle.items())]


def accept(items: list, expected: Expected, counts: Counter) -> Accepted:
    """Check every notification item (module docstring); what passes, deduplicated, counted in ``counts``."""
    accepted = Accepted({}, {})
    for item in items:
        _one(item, expected, counts, accepted)
    counts["changes"] += len(accepted.changes)
    return accepted


def _refusal(item: dict, expected: Expected) -> tuple[str, ...]:
    """The count keys that refuse ``item`` (empty when it is ours), checked in order: clientState (constant
    time), subscription, tenant."""
    given = item.get("clientState")
    secret = expected.secret
    if secret is None or not isinstance(given, str) or not hmac.compare_digest(given.encode("utf-8"), secret):
        return ("forged",)
    if expected.subscriptions is None:
        return ("unknown_subscription", "subscriptions_unknown")
    if not isinstance(item.get("subscriptionId"), str) or item["subscriptionId"] not in expected.subscriptions:
        return ("unknown_subscription",)
    if expected.tenant is None:
        return ()  # nothing to compare with (module docstring)
    data = item.get("resourceData")
    named = [t for t in (item.get("tenantId"), item.get("organizationId"),
                         data.get("organizationId") if isinstance(data, dict) else None) if t not in (None, "")]
    if not named:
        return ("tenant_missing",)
    if any(not isinstance(t, str) or t.casefold() != expected.tenant for t in named):
        return ("foreign_tenant",)
    return ()


def _one(item: object, expected: Expected, counts: Counter, accepted: Accepted) -> None:
    """Check one notification and record it in ``accepted``, or only count it."""
    if not isinstance(item, dict):
        counts["malformed"] += 1
        return
    if refused := _refusal(item, expected):
        counts.update(refused)
        return
    subscription = item["subscriptionId"]
    subscribed = _SINGULAR.get(str(expected.subscriptions[subscription]).casefold())

    event = item.get("lifecycleEvent")
    if event is not None:
        if not isinstance(event, str) or not _EVENT.match(event):
            counts["malformed"] += 1
            return
        counts[f"lifecycle:{event}" if event in LIFECYCLE_EVENTS else "lifecycle:other"] += 1
        accepted.lifecycle.setdefault((event, subscription), subscribed)
        return

    verdict, resource, object_id = _resource(item)
    if verdict != "ok":
        counts[verdict] += 1
        return
    resource = resource or subscribed
    change = _change_type(item.get("changeType"))
    if resource is None or object_id is None or change is None:
        counts["malformed"] += 1
        return
    if subscribed is not None and resource != subscribed:  # a users subscription never notifies a group
        counts["resource_mismatch"] += 1
        return
    counts["accepted"] += 1
    key = (resource, object_id)
    previous = accepted.changes.get(key)
    if previous is None:
        accepted.changes[key] = change
    else:
        counts["duplicates"] += 1
        if _STRENGTH[change] > _STRENGTH[previous]:
            accepted.changes[key] = change


def _resource(item: dict) -> tuple[str, str | None, str | None]:
    """(verdict, "users" | "groups" | None, object id | None) from ``resource`` and ``resourceData``, leniently.

    The verdict is "ok", "unsupported_resource" (a resource we do not sync is named) or "malformed" (the path
    and ``@odata.type`` name different resources). A resource of None with "ok": none named."""
    resource = object_id = None
    path = item.get("resource")
    if isinstance(path, str) and (match := _RESOURCE_PATH.match(path.strip())):
        resource = _SINGULAR.get(match["r"].casefold())
        if resource is None:
            return "unsupported_resource", None, None
        object_id = match["id"] or match["quoted"]
    data = item.get("resourceData")
    if isinstance(data, dict):
        odata_type = data.get("@odata.type")
        if isinstance(odata_type, str) and odata_type.strip():
            typed = _SINGULAR.get(odata_type.strip().lstrip("#").rsplit(".", 1)[-1].casefold())
            if typed is None:
                return "unsupported_resource", None, None
            if resource is not None and typed != resource:
                return "malformed", None, None
            resource = typed
        if isinstance(data.get("id"), str) and data["id"]:
            object_id = data["id"]
    if object_id is not None and not _OBJECT_ID.match(object_id):
        object_id = None
    return "ok", resource, object_id


def _change_type(value: object) -> str | None:
    """The strongest of a comma list of change types ("updated,deleted" -> "deleted"); None when none is valid."""
    if not isinstance(value, str):
        return None
    found = [t for t in (part.strip().casefold() for part in value.split(",")) if t in _STRENGTH]
    return max(found, key=_STRENGTH.__getitem__) if found else None


# -- Event Grid -------------------------------------------------------------------------------------------------
#
# Graph's events on a partner topic are CloudEvents 1.0 whose ``data`` is one notification item
# (https://learn.microsoft.com/azure/event-grid/microsoft-entra-events). The user and group types are documented;
# creation and soft delete arrive as *Updated*, a permanent delete as *Deleted* - the item's ``changeType`` says
# the same. The lifecycle types: Microsoft.Graph.SubscriptionReauthorizationRequired is documented (as
# "microsoft.graph.subscriptionReauthorizationRequired", so types are compared case-insensitively); the other
# two names and the lifecycle event's data (taken to be the webhook's lifecycle item, with ``lifecycleEvent``)
# are UNCONFIRMED, so the event is also read from the type when the data does not name it.
CHANGE_EVENT_TYPES = {f"microsoft.graph.{name}" for name in ("userupdated", "userdeleted", "groupupdated",
                                                             "groupdeleted")}
LIFECYCLE_EVENT_TYPES = {"microsoft.graph.subscriptionreauthorizationrequired": "reauthorizationRequired",
                         "microsoft.graph.subscriptionremoved": "subscriptionRemoved",
                         "microsoft.graph.subscriptionmissed": "missed"}


def is_cloud_event(body: Mapping) -> bool:
    """True when a queue body is a CloudEvent (Event Grid's delivery) rather than one of our messages."""
    return "specversion" in body and isinstance(body.get("type"), str) and "kind" not in body


def cloud_event_message(body: Mapping, expected: Expected, now: float, counts: Counter
                        ) -> ChangesMessage | LifecycleMessage | None:
    """The message a CloudEvent asks for (trigger "eventgrid"), or None when it is not ours or not a Graph user,
    group or lifecycle event (counted in ``counts``). Its time is the event's ``time`` - when Graph saw the
    change - but never later than ``now``."""
    kind = str(body.get("type")).casefold()
    data = body.get("data")
    if kind not in CHANGE_EVENT_TYPES and kind not in LIFECYCLE_EVENT_TYPES:
        counts["event_type_unknown"] += 1
        return None
    if not isinstance(data, dict):
        counts["malformed"] += 1
        return None
    if kind in LIFECYCLE_EVENT_TYPES and "lifecycleEvent" not in data:
        data = {**data, "lifecycleEvent": LIFECYCLE_EVENT_TYPES[kind]}
    accepted = accept([data], expected, counts)
    messages = accepted.messages(min(now, _event_time(body.get("time")) or now), None, "eventgrid")
    return messages[0] if messages else None


def _event_time(value: object) -> float | None:
    """A CloudEvent's RFC 3339 ``time`` as epoch seconds (seven fractional digits allowed); None if unreadable."""
    if not isinstance(value, str):
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00")
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()
