"""Graph change notifications (graph.md §3): the pure part of ``functions/graph_webhook``.

``handle_notification_request`` takes what the HTTP request carried and returns what to answer and what to
queue; it does no I/O, so the webhook stays a thin adapter and everything here is tested without a host.

- A ``validationToken`` query parameter is the subscription handshake (§3.2): answered 200 with the token as
  ``text/plain`` before any body is looked at. Tokens over 1,024 characters or with control characters: 400.
- Anything else is a notification POST (§3.3): JSON (415 otherwise), at most 1 MiB (413), an object with a
  ``value`` array (400). These errors queue nothing.
- Each item is accepted only when its ``clientState`` matches the configured secret (constant time), its
  ``subscriptionId`` is one of ours, every tenant id it names (``tenantId``, ``organizationId``, or
  ``resourceData.organizationId``: payloads differ, §3.3 and §3.6) is the configured tenant
  (``AZURE_TENANT_ID``), and the resource it names is its subscription's (a users subscription never queues
  a group). Items that fail are counted, never queued, and still answered 202: Graph must not retry a forged
  or foreign notification, and there is no sender to tell. Lifecycle notifications pass the same checks.
- Without a configured tenant (a sandbox with a fixed ``GRAPH_ACCESS_TOKEN`` and no ``AZURE_TENANT_ID``)
  there is nothing to compare, so tenant ids are not checked; with one, an item that names no tenant at all
  is refused too (``tenant_missing``): Graph documents ``tenantId`` as required on every notification
  (https://learn.microsoft.com/graph/api/resources/changenotification).
- Accepted changes become one ``changes`` message per request, deduplicated by (resource, id) keeping the
  strongest change type; the message is split when its JSON would not fit one queue message. Lifecycle
  notifications (§3.6) become one ``lifecycle`` message each (deduplicated by event and subscription).

The messages are the contract's (``shared.contract.messages``): ``ChangesMessage`` and ``LifecycleMessage``,
with ``trigger`` "webhook" (the producer, in the run history) and ``cid``, when given, the POST's correlation id
(``shared/telemetry.py``).

``counts`` holds only fixed keys (``COUNT_KEYS``), never ids or secrets, so it can be logged as is.
"""
from __future__ import annotations

import hmac
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.contract.messages import CHANGE_TYPES, ChangesMessage, LifecycleMessage, changes_messages

MAX_TOKEN_CHARS = 1024
MAX_BODY_BYTES = 1024 * 1024
TEXT_PLAIN = "text/plain; charset=utf-8"
RESOURCES = ("users", "groups")
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
)  # plus "lifecycle:<event>" for the three documented events and "lifecycle:other"


@dataclass
class WebhookOutcome:
    """What to answer (``status``, ``content_type``, ``body``) and what to queue (``messages``, in order)."""

    status: int
    content_type: str = TEXT_PLAIN
    body: str = ""
    messages: list[ChangesMessage | LifecycleMessage] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)


def _get(mapping: Mapping[str, str], name: str) -> str | None:
    """``mapping[name]`` with a case-insensitive fallback (plain dicts in tests, the host's mappings live)."""
    value = mapping.get(name)
    if value is not None:
        return value
    folded = name.casefold()
    for key, value in mapping.items():
        if key.casefold() == folded:
            return value
    return None


def is_validation(query: Mapping[str, str]) -> bool:
    """True when the request is the subscription handshake (it needs no state, no storage)."""
    return _get(query, "validationToken") is not None


def _error(status: int, text: str, **counts: int) -> WebhookOutcome:
    return WebhookOutcome(status=status, body=text, counts=Counter(counts))


def _validation(token: str) -> WebhookOutcome:
    if not token:
        return _error(400, "empty validationToken", validation_refused=1)
    if len(token) > MAX_TOKEN_CHARS:
        return _error(400, f"validationToken longer than {MAX_TOKEN_CHARS} characters", validation_refused=1)
    if any(unicodedata.category(ch) == "Cc" for ch in token):
        return _error(400, "validationToken contains control characters", validation_refused=1)
    # Echoed exactly, as text/plain (never HTML): the host sends it with "X-Content-Type-Options: nosniff".
    return WebhookOutcome(status=200, body=token, counts=Counter(validation=1))


def _is_json(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";", 1)[0].strip().casefold() == "application/json"


def handle_notification_request(query: Mapping[str, str], headers: Mapping[str, str], body: bytes, *,
                                client_state: str | None, subscriptions: Mapping[str, str] | None,
                                tenant: str | None, now: float, cid: str | None = None) -> WebhookOutcome:
    """Answer one POST to the webhook; see the module docstring. ``client_state`` is the revealed secret (None
    or empty: nothing is accepted); ``subscriptions`` maps our subscription ids to "users"/"groups" (None: not
    known yet, nothing is accepted); ``tenant`` is ``AZURE_TENANT_ID`` (None: tenant ids are not checked);
    ``cid``, the request's correlation id, goes into every queued message."""
    token = _get(query, "validationToken")
    if token is not None:
        return _validation(token)
    if not _is_json(_get(headers, "Content-Type")):
        return _error(415, "expected Content-Type: application/json", rejected_content_type=1)
    if len(body) > MAX_BODY_BYTES:
        return _error(413, f"body larger than {MAX_BODY_BYTES} bytes", rejected_too_large=1)
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return _error(400, "body is not valid JSON", rejected_invalid_json=1)
    items = document.get("value") if isinstance(document, dict) else None
    if not isinstance(items, list):
        return _error(400, "body has no 'value' array", rejected_no_value=1)

    outcome = WebhookOutcome(status=202)
    expected = _Expected(client_state.encode("utf-8") if client_state else None, subscriptions,
                         tenant.casefold() if tenant else None)
    changes: dict[tuple[str, str], str] = {}
    lifecycle: dict[tuple[str, str], str | None] = {}   # (event, subscription) -> its resource
    for item in items:
        _one(item, expected, outcome.counts, changes, lifecycle)
    outcome.messages.extend(changes_messages(changes, now, cid))
    outcome.messages.extend(LifecycleMessage(event, subscription, now, resource, cid=cid)
                            for (event, subscription), resource in lifecycle.items())
    outcome.counts["changes"] += len(changes)
    return outcome


@dataclass(frozen=True)
class _Expected:
    """What a notification must carry to be ours: the secret, one of our subscriptions, our tenant (casefolded)."""

    secret: bytes | None
    subscriptions: Mapping[str, str] | None
    tenant: str | None


def _refusal(item: dict, expected: _Expected) -> tuple[str, ...]:
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


def _one(item: object, expected: _Expected, counts: Counter, changes: dict[tuple[str, str], str],
         lifecycle: dict[tuple[str, str], str | None]) -> None:
    """Check one notification and record it in ``changes`` or ``lifecycle``, or only count it."""
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
        lifecycle.setdefault((event, subscription), subscribed)
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
    previous = changes.get(key)
    if previous is None:
        changes[key] = change
    else:
        counts["duplicates"] += 1
        if _STRENGTH[change] > _STRENGTH[previous]:
            changes[key] = change


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
