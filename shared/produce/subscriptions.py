"""Graph change-notification subscriptions for users and groups (reference/graph.md §3): create, renew, repair.

``ensure_subscriptions`` is idempotent and cheap (one ``GET /subscriptions`` plus a write only where needed):
``setup`` calls it once, the timer on every run, ``status`` reads ``stored_subscriptions``. For each wanted
resource (users when "user" is synced, groups when "group" is) it keeps exactly one subscription of ours, where
"ours" means the same notificationUrl and resource. The notificationUrl (``Settings.notification_url``) is
WEBHOOK_URL, or with NOTIFICATION_DELIVERY=eventgrid the ``EventGrid:?azuresubscriptionid=…&resourcegroup=…
&partnertopic=…&location=…`` URL of the partner topic, for change and lifecycle notifications alike
(https://learn.microsoft.com/azure/event-grid/subscribe-to-graph-api-events); Graph creates the topic with the
first subscription, and ``shared.admin.event_grid`` activates it.

- none of ours listed: create one (``created``; ``recreated`` when the checkpoint knew one that Graph dropped);
  a 409 (another instance created it meanwhile, or the transport repeated our POST) adopts the existing one;
- one listed: renew it (PATCH) when it expires within ``RENEW_MARGIN`` or its id is in ``renew`` (a
  ``reauthorizationRequired`` lifecycle event: Graph repeats it until the subscription is renewed), else keep
  it; a 404 on the PATCH (Graph deleted it in between) creates a new one; one that cannot be kept as is
  (another changeType, or no lifecycleNotificationUrl, which cannot be added later, §3.6) is deleted and
  created again;
- more than one listed: keep the one the checkpoint names (else the latest expiry) and delete the others;
- ours for a resource no longer synced: deleted.

The checkpoint ``subscriptions`` holds ``{"users": {"id": "...", "expires": "<ISO 8601 Z>"}, "groups": {...}}``;
the webhook (``functions/graph_webhook``) reads it to accept only our subscription ids. The clientState is sent
to Graph and nowhere else: never logged, never in a report or an error.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from shared.clients.graph import GraphClient
from shared.errors import EntraAssetsError, GraphPermissionError, RemoteError
from shared.settings import Settings
from shared.store.ports import StateStore

log = logging.getLogger(__name__)

CHECKPOINT = "subscriptions"
CHANGE_TYPE = "updated,deleted"   # the only change types Graph supports for users and groups (§3.1)
MAX_EXPIRATION = dt.timedelta(minutes=41_760)  # users, groups and other directory resources (§3.1)
# Asked-for expiry = now + MAX_EXPIRATION - EXPIRY_MARGIN: Graph refuses anything beyond the maximum, and its
# clock, our clock and the request's time in flight differ by a little.
EXPIRY_MARGIN = dt.timedelta(minutes=30)
# Renew when fewer than 3 days are left (a subscription lives just under 29 days, so this renews every ~26
# days). The timer tries every 15 minutes, so 3 days leave room for a long weekend of outage - Functions app
# stopped, expired Graph secret, Graph incident - before Graph deletes the subscription and notifications are
# lost; renewing much earlier gains nothing (renewal is one PATCH, but an earlier one does not last longer).
RENEW_MARGIN = dt.timedelta(days=3)
# object type of SYNC_OBJECT_TYPES -> Graph resource subscribed to
RESOURCES = {"user": "users", "group": "groups"}
# Read permission Graph checks when creating a subscription (§3.1 permission table).
SUBSCRIPTION_PERMISSIONS = {"users": "User.Read.All", "groups": "Group.Read.All"}
_EXISTING_ID = re.compile(r"Subscription Id ([0-9A-Za-z-]+) already exists", re.IGNORECASE)
_QUOTA_WORDS = ("limit", "quota", "maximum number")


class SubscriptionError(EntraAssetsError):
    """Graph refused a subscription (validation handshake failed, invalid WEBHOOK_URL, ...)."""


class SubscriptionQuotaError(SubscriptionError):
    """Graph's subscription quota is used up (403): 100 per app and tenant for each of users and groups."""


@dataclass
class ResourceSubscription:
    """What happened to one resource's subscription.

    ``action``: "created", "recreated" (the checkpoint knew one that had vanished, or ours could not be kept
    as is), "renewed", "kept", "adopted" (a 409 named an existing one) or "deleted" (the resource is no longer
    synced). ``duplicates_deleted``: other subscriptions of ours for the same resource that were deleted."""

    resource: str
    action: str
    id: str | None
    expires: dt.datetime | None
    duplicates_deleted: int = 0

    def line(self) -> str:
        when = f", expires {_iso(self.expires)}" if self.expires else ""
        extra = f", {self.duplicates_deleted} duplicate(s) deleted" if self.duplicates_deleted else ""
        return f"{self.resource}: {self.action} subscription {self.id}{when}{extra}"


@dataclass
class SubscriptionReport:
    """The outcome of ``ensure_subscriptions``: ``enabled`` False (and a ``message``) without WEBHOOK_URL."""

    enabled: bool
    message: str
    resources: dict[str, ResourceSubscription] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """True when anything was created, renewed, adopted or deleted."""
        return any(r.action != "kept" or r.duplicates_deleted for r in self.resources.values())

    def lines(self) -> list[str]:
        """One line per resource for ``setup``/``status`` output (no secret in them)."""
        return [self.message] + [r.line() for r in self.resources.values()]

    def as_dict(self) -> dict:
        return {"enabled": self.enabled, "message": self.message,
                "resources": {name: {"action": r.action, "id": r.id, "expires": _iso(r.expires),
                                     "duplicates_deleted": r.duplicates_deleted}
                              for name, r in self.resources.items()}}


def stored_subscriptions(state: StateStore) -> dict[str, dict]:
    """The ``subscriptions`` checkpoint ({resource: {"id", "expires"}}); {} when missing or unreadable."""
    try:
        stored = json.loads(state.checkpoint(CHECKPOINT) or "{}")
    except ValueError:
        log.warning("the subscriptions checkpoint is unreadable; it will be rebuilt")
        return {}
    if not isinstance(stored, dict):
        return {}
    return {k: v for k, v in stored.items() if isinstance(v, dict) and isinstance(v.get("id"), str)}


def subscription_ids(state: StateStore) -> dict[str, str] | None:
    """Our subscription ids -> resource ("users"/"groups"), for the webhook; None when none is known yet."""
    return {sub["id"]: resource for resource, sub in stored_subscriptions(state).items()} or None


def ensure_subscriptions(graph: GraphClient, state: StateStore, settings: Settings,
                         now: dt.datetime | None = None, renew: set[str] = frozenset()) -> SubscriptionReport:
    """Make sure Graph notifies ``settings.notification_url`` of user and group changes (see the module
    docstring); subscriptions whose id is in ``renew`` are renewed whatever their expiry.

    Raises ``SubscriptionQuotaError`` when Graph's quota is used up, ``SubscriptionError`` when Graph refuses a
    subscription (most often: the webhook did not answer the validation handshake), ``GraphPermissionError``
    and ``RemoteError`` as the Graph client does.
    """
    url = settings.notification_url
    if not url:
        return SubscriptionReport(False, "WEBHOOK_URL is not set: no Graph subscriptions (changes are found by "
                                         "the timer's delta sync only)")
    if not settings.webhook_client_state:
        raise SubscriptionError("WEBHOOK_CLIENT_STATE is required with WEBHOOK_URL")
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    wanted = [RESOURCES[t] for t in RESOURCES if t in settings.object_types]
    stored = stored_subscriptions(state)
    listed = [s for s in graph.objects("subscriptions") if same_url(s.get("notificationUrl"), url)]
    ours: dict[str, list[dict]] = {}
    for sub in listed:
        resource = _resource(sub.get("resource"))
        if resource in RESOURCES.values():
            ours.setdefault(resource, []).append(sub)
    where = f"Event Grid (partner topic {settings.eventgrid_partner_topic})" if settings.event_grid else "the webhook"
    report = SubscriptionReport(True, f"Graph notifies {where} of changes to {' and '.join(wanted)}" if wanted
                                else "neither users nor groups are synced: no Graph subscriptions are needed")
    for resource in wanted:
        report.resources[resource] = _ensure_one(graph, settings, resource, ours.get(resource, []),
                                                 stored.get(resource), now, renew)
    for resource in sorted(set(ours) - set(wanted)):
        for sub in ours[resource]:
            _delete(graph, sub["id"])
        report.resources[resource] = ResourceSubscription(resource, "deleted", None, None)
    checkpoint = {name: {"id": r.id, "expires": _iso(r.expires)}
                  for name, r in report.resources.items() if r.action != "deleted" and r.id}
    if checkpoint != stored:
        state.commit({}, {CHECKPOINT: json.dumps(checkpoint, sort_keys=True) if checkpoint else None})
    for r in report.resources.values():
        if r.action != "kept" or r.duplicates_deleted:
            log.info("graph subscription for %s %s (id %s, expires %s)", r.resource, r.action, r.id, _iso(r.expires))
    return report


def _ensure_one(graph: GraphClient, settings: Settings, resource: str, ours: list[dict], stored: dict | None,
                now: dt.datetime, renew: set[str]) -> ResourceSubscription:
    stored_id = stored.get("id") if stored else None
    ours = sorted(ours, key=lambda s: (s.get("id") == stored_id, _expiry(s) or now), reverse=True)
    keep, duplicates = (ours[0], ours[1:]) if ours else (None, [])
    for sub in duplicates:
        _delete(graph, sub["id"])
    if keep is not None and not _reusable(keep, settings.notification_url):
        _delete(graph, keep["id"])
        keep, stored_id = None, stored_id or keep["id"]
    if keep is None:
        sub, action = _create(graph, settings, resource, now)
        if action == "created" and stored_id:
            action = "recreated"
        return ResourceSubscription(resource, action, sub["id"], _expiry(sub), len(duplicates))
    expires = _expiry(keep)
    if expires is not None and expires - now > RENEW_MARGIN and keep["id"] not in renew:
        return ResourceSubscription(resource, "kept", keep["id"], expires, len(duplicates))
    try:
        renewed = graph.send("PATCH", f"subscriptions/{keep['id']}",
                             {"expirationDateTime": _iso(now + MAX_EXPIRATION - EXPIRY_MARGIN)})
    except RemoteError as exc:
        if exc.http_status != 404:
            raise _refused(exc, resource, settings) from None
        sub, _ = _create(graph, settings, resource, now)  # deleted by Graph between our list and the PATCH
        return ResourceSubscription(resource, "recreated", sub["id"], _expiry(sub), len(duplicates))
    except GraphPermissionError as exc:
        raise _refused(exc, resource, settings) from None
    return ResourceSubscription(resource, "renewed", keep["id"], _expiry(renewed or {}) or expires,
                                len(duplicates))


def _create(graph: GraphClient, settings: Settings, resource: str, now: dt.datetime) -> tuple[dict, str]:
    """POST a subscription; on 409 adopt the existing one. Returns (subscription, "created" | "adopted")."""
    body = {"changeType": CHANGE_TYPE, "notificationUrl": settings.notification_url,
            "lifecycleNotificationUrl": settings.notification_url, "resource": resource,
            "expirationDateTime": _iso(now + MAX_EXPIRATION - EXPIRY_MARGIN),
            "clientState": settings.webhook_client_state.reveal(), "latestSupportedTlsVersion": "v1_2"}
    try:
        return graph.send("POST", "subscriptions", body) or {}, "created"
    except (RemoteError, GraphPermissionError) as exc:
        if getattr(exc, "http_status", None) != 409:
            raise _refused(exc, resource, settings) from None
        conflict = exc
    found = _EXISTING_ID.search(getattr(conflict, "detail", "") or "")
    listed = [s for s in graph.objects("subscriptions")
              if same_url(s.get("notificationUrl"), settings.notification_url)
              and _resource(s.get("resource")) == resource]
    match = next((s for s in listed if found and s.get("id") == found.group(1)), None) or \
        (max(listed, key=lambda s: _expiry(s) or now) if listed else None)
    if match is None and found:
        match = graph.get(f"subscriptions/{found.group(1)}")
    if match is None:
        raise SubscriptionError(f"Microsoft Graph says a subscription to /{resource} for this URL already "
                                "exists (409) but does not list it; try again later")
    return match, "adopted"


def _delete(graph: GraphClient, sid: str) -> None:
    try:
        graph.send("DELETE", f"subscriptions/{sid}")
    except RemoteError as exc:
        if exc.http_status != 404:  # already gone: what we wanted
            raise


def _refused(exc: EntraAssetsError, resource: str, settings: Settings) -> EntraAssetsError:
    """A clear error for a refused create or renewal; the message is Graph's (it never holds the clientState)."""
    status, code, detail = getattr(exc, "http_status", None), getattr(exc, "code", ""), getattr(exc, "detail", "")
    if status == 403 and code != "Authorization_RequestDenied" and any(w in detail.lower() for w in _QUOTA_WORDS):
        return SubscriptionQuotaError(
            f"Microsoft Graph refused a subscription to /{resource}: the subscription quota is used up (403: "
            f"{detail}). Graph allows 100 user and 100 group subscriptions per app and tenant; delete unused "
            "subscriptions of this app registration (GET /subscriptions lists them)")
    if status == 403:
        return GraphPermissionError(
            f"Microsoft Graph denied a subscription to /{resource} (403 {code}): grant the application permission "
            f"{SUBSCRIPTION_PERMISSIONS[resource]} to the app registration and give admin consent")
    if status == 400 and settings.event_grid:
        return SubscriptionError(
            f"Microsoft Graph refused the subscription to /{resource} (400 {code}: {detail}); check that the "
            f"Microsoft Graph API partner is authorized on resource group {settings.eventgrid_resource_group} "
            "(infra/eventgrid.bicep's partner configuration, or Event Grid > Partner configurations in the "
            "portal) and that EVENTGRID_SUBSCRIPTION_ID, EVENTGRID_RESOURCE_GROUP and EVENTGRID_LOCATION name it")
    if status == 400:
        return SubscriptionError(
            f"Microsoft Graph refused the subscription to /{resource} (400 {code}: {detail}); when the validation "
            "request failed, check that WEBHOOK_URL reaches the graph_webhook function and answers within 10 s")
    return exc


def _reusable(sub: dict, url: str) -> bool:
    """Ours as we would create it: both change types and lifecycle notifications to the same place."""
    kinds = {p.strip() for p in str(sub.get("changeType") or "").split(",")}
    return kinds == set(CHANGE_TYPE.split(",")) and same_url(sub.get("lifecycleNotificationUrl"), url)


def same_url(listed: object, ours: str) -> bool:
    """``listed`` (a URL Graph returned) is ``ours``. An ``EventGrid:`` URL is compared by its parameters,
    case-insensitively: whether Graph returns it exactly as given is UNCONFIRMED."""
    if not isinstance(listed, str):
        return False
    if not ours.casefold().startswith("eventgrid:"):
        return listed == ours
    return listed.casefold().startswith("eventgrid:") and _event_grid_target(listed) == _event_grid_target(ours)


def _event_grid_target(url: str) -> dict[str, str]:
    return {k.casefold(): v.casefold() for k, v in parse_qsl(url.partition("?")[2])}


def _resource(value: object) -> str:
    return str(value or "").strip().strip("/").casefold()


def _expiry(sub: dict) -> dt.datetime | None:
    raw = sub.get("expirationDateTime") or sub.get("expires")
    if not raw:
        return None
    try:
        moment = dt.datetime.fromisoformat(str(raw))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def _iso(moment: dt.datetime | None) -> str | None:
    """``2026-11-20T10:00:00Z`` (UTC, whole seconds)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None
