"""Change-notification subscriptions of the Graph emulator (reference/graph.md §3), served under ``/v1.0``.

``GraphEmulator`` routes ``/subscriptions`` here and starts/stops the notifier; tests turn the knobs on
``emulator.subscriptions`` (a ``Subscriptions``).

Endpoints:
- ``POST /subscriptions``: Graph's checks (required changeType, notificationUrl, resource, expirationDateTime;
  clientState at most 128 characters; resource ``users``/``groups`` (also ``/users``, ``/groups``); changeType
  a comma list of ``updated``/``deleted``; https URLs, plain http only on loopback; expiration at most 41,760
  minutes ahead, raised to 45 minutes when sooner), 409 for a duplicate (same resource, changeType and
  notificationUrl), 403 over ``quota`` subscriptions per resource, then the validation handshake: a real
  ``POST <notificationUrl>?validationToken=<token>`` (``&validationToken=`` when the URL already has a query)
  with ``Content-Type: text/plain; charset=utf-8`` that must answer 200 with exactly the token (text/plain)
  within ``validation_timeout`` (10 s); the same for ``lifecycleNotificationUrl`` (two validations when both
  URLs are equal). Any failure: 400 and no subscription. Success: 201 + the subscription.
- ``GET /subscriptions`` (``value``), ``GET|PATCH|DELETE /subscriptions/{id}`` (PATCH renews
  ``expirationDateTime`` with the same bounds, or moves ``notificationUrl`` after a new handshake; DELETE 204),
  ``POST /subscriptions/{id}/reauthorize`` (204); 404 for unknown or expired ids.
- Notifications: a dispatcher thread polls ``tenant.version`` every ``POLL_INTERVAL`` (10 ms); after the first
  change it waits ``window`` (50 ms) to collect more, then reads the tenant's change log
  (``changes_since(kind="users"|"groups")``, one entry per changed object in the window) and POSTs basic
  notifications (§3.3) to every live subscription of that resource, at most ``BATCH_LIMIT`` (100) per POST as
  ``{"value": [...]}`` (one POST may carry several subscriptions sharing a notificationUrl). ``changeType`` is
  "deleted" for a permanent delete and "updated" for create, update and soft delete (§3.1). A POST that does
  not answer 2xx within ``delivery_timeout`` (3 s, §3.4) is retried after ``retry_delays``.
- ``deliveries`` records every attempt (validations, notifications, lifecycle notifications) as a ``Delivery``.
- Event Grid (https://learn.microsoft.com/azure/event-grid/subscribe-to-graph-api-events): a notificationUrl or
  lifecycleNotificationUrl ``EventGrid:?azuresubscriptionid=<id>&resourcegroup=<rg>&partnertopic=<name>&location=
  <region>`` (scheme in any case, the four parameters required) needs ``event_grid`` (an ``EventGridEmulator``).
  No handshake: on create (and PATCH) Graph asks Event Grid for the partner topic, with source
  ``/tenants/<tenant id>/applications/<application id>`` (400 when the partner is not authorized there). Each
  notification item is then published as one CloudEvent 1.0 (https://learn.microsoft.com/azure/event-grid/
  microsoft-entra-events): ``id`` (a new GUID), ``type`` ``Microsoft.Graph.UserUpdated|UserDeleted|GroupUpdated|
  GroupDeleted``, ``source``, ``subject`` ``Users/<id>``, ``time``, ``datacontenttype`` application/json,
  ``specversion`` 1.0, ``data`` the webhook item plus ``resourceData.eventTime`` and ``.sequenceNumber``. Its
  ``Delivery`` is ok when Event Grid wrote it to a queue (status 200); a topic not yet activated drops it.

Knobs: ``quota``, ``window``, ``retry_delays``, ``delivery_timeout``, ``validation_timeout``,
``expire_subscription(id)``, ``remove_subscription(id, notify=False)``, ``send_lifecycle(id, event)``,
``advance_clock(seconds)`` (the emulator's notion of now, for expiry and renewal tests), ``reset_deliveries()``.

UNCONFIRMED behaviours (emulator choices; wording of every error message and code below included):
- 400 ``InvalidRequest`` for a missing/invalid property, an unsupported resource, a ``created`` or unknown
  changeType for users/groups (a 2026 Q&A suggests Graph may accept ``created`` on ``/users`` and simply never
  fire it; the emulator is strict so the product cannot rely on it), a non-https URL, an expiration past the
  41,760-minute maximum ("Subscription expiration can only be 41760 minutes in the future.") and a failed
  handshake ("Subscription validation request failed. …" plus the emulator's reason in parentheses).
- Only collection resources (``users``, ``groups``) are supported, not ``/users/{id}`` or ``/groups/{id}/members``.
- 409 ``Conflict`` "Subscription Id <id> already exists for the requested combination"; duplicates are
  compared on the normalised resource, the set of change types and the exact notificationUrl. The duplicate
  and quota checks run before the handshake (and again after it, for concurrent creates).
- 403 ``Forbidden`` for the quota with the limit in the message; 404 ``ResourceNotFound`` for unknown ids.
- The validation token looks like the ones seen in the wild ("Validation: Testing client application
  reachability for subscription Request-Id: <guid>": spaces and colons, so the receiver must URL-decode it);
  the handshake answer must have a text/plain Content-Type.
- Changes are coalesced per object within one window (Graph's own coalescing is undocumented); group
  notifications also fire for membership and owner changes (§3.1 community reports); a subscription gets only
  changes made after it was created. Notifications carry no ``id``; ``resource`` is ``Users/<id>`` or
  ``Groups/<id>`` and ``@odata.type`` ``#Microsoft.Graph.User`` / ``#Microsoft.Graph.Group``.
- Retries: 3 attempts within about a second (``retry_delays`` 0.2 s, 0.8 s) instead of Graph's exponential
  backoff for up to 4 hours (§3.4); the slow/drop endpoint states of §3.4 are not modelled.
- Lifecycle notifications carry both ``tenantId`` and ``organizationId`` (§3.6 shows one, a real payload the
  other); ``send_lifecycle`` sends to ``lifecycleNotificationUrl`` or, without one, to ``notificationUrl``.
- An expired subscription disappears (404, not listed, no notifications) as Graph deletes it.
- Event Grid: no validation handshake (the docs describe none); both URLs Event Grid ones must name the same
  partner topic (the docs: "should be the same"; 400 here), a webhook and an Event Grid URL may be mixed; the
  parameter names are lowercase as documented, an unknown one is 400; the 400 when the partner is not
  authorized (its wording). Lifecycle events go to the same topic as CloudEvents of type
  ``Microsoft.Graph.SubscriptionReauthorizationRequired`` (the docs write
  ``microsoft.graph.subscriptionReauthorizationRequired``), ``…SubscriptionRemoved`` and ``…SubscriptionMissed``,
  subject ``Subscriptions/<id>``, ``data`` the webhook lifecycle item; ``sequenceNumber`` counts the app's events
  from 1; ``eventTime`` is when the emulator published (not when the object changed); no retries towards Event
  Grid.
"""
from __future__ import annotations

import datetime as dt
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

import httpx
import orjson
from werkzeug.wrappers import Request, Response

from sandbox.eventgrid.emulator import EventGridEmulator, PartnerNotAuthorized
from sandbox.graph.directory import GraphError
from sandbox.tenant.model import Change, Tenant

__all__ = ["BATCH_LIMIT", "DEFAULT_QUOTA", "LIFECYCLE_EVENTS", "LIFECYCLE_EVENT_TYPES", "MAX_CLIENT_STATE",
           "MAX_EXPIRATION_MINUTES", "MIN_EXPIRATION_MINUTES", "Delivery", "EventGridTarget", "Subscriptions",
           "eventgrid_target", "with_query"]

MAX_EXPIRATION_MINUTES = 41_760   # users, groups and other directory resources (reference §3.1)
MIN_EXPIRATION_MINUTES = 45       # sooner expirations are raised to this (reference §3.1)
MAX_CLIENT_STATE = 128
DEFAULT_QUOTA = 100               # per app + tenant and resource (reference §3.1)
BATCH_LIMIT = 100                 # notifications per POST (UNCONFIRMED)
POLL_INTERVAL = 0.01              # how often the dispatcher looks at tenant.version
COLLECT_WINDOW = 0.05             # how long it collects changes after the first one before sending
VALIDATION_TIMEOUT = 10.0         # reference §3.2
DELIVERY_TIMEOUT = 3.0            # a 2xx within 3 s counts as delivered (reference §3.4)
# Graph retries with exponential backoff for up to 4 hours (reference §3.4); the sandbox gives up after three
# attempts within about a second so tests and benchmarks see retries without waiting.
RETRY_DELAYS = (0.2, 0.8)
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")
# CloudEvent types of the lifecycle events delivered through Event Grid (UNCONFIRMED, see the module docstring)
LIFECYCLE_EVENT_TYPES = {"reauthorizationRequired": "Microsoft.Graph.SubscriptionReauthorizationRequired",
                         "subscriptionRemoved": "Microsoft.Graph.SubscriptionRemoved",
                         "missed": "Microsoft.Graph.SubscriptionMissed"}
_EVENTGRID_PARAMETERS = ("azuresubscriptionid", "resourcegroup", "partnertopic", "location")
CHANGE_TYPES = ("updated", "deleted")
# resource kind -> (resource prefix of notifications, @odata.type)
_NOTIFY = {"users": ("Users", "#Microsoft.Graph.User"), "groups": ("Groups", "#Microsoft.Graph.Group")}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
_TEXT = "text/plain; charset=utf-8"
_REQUIRED = ("changeType", "notificationUrl", "resource", "expirationDateTime")
_CREATABLE = {*_REQUIRED, "clientState", "lifecycleNotificationUrl", "latestSupportedTlsVersion",
              "includeResourceData", "@odata.type"}
_PATCHABLE = {"expirationDateTime", "notificationUrl", "@odata.type"}
_TLS_VERSIONS = ("v1_0", "v1_1", "v1_2", "v1_3")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """One POST the emulator sent to a subscriber (every attempt, failed ones and validations included), or one
    event it published to an Event Grid partner topic.

    ``kind``: "validation", "notification" or "lifecycle". ``sent``: ``time.time()`` when the request left;
    ``elapsed``: seconds until the answer or the failure; ``status``: the HTTP status, None when the endpoint
    timed out or refused the connection (``error`` names the exception; for a validation also a wrong echo).
    ``observed`` (notifications): when the dispatcher first saw the tenant change of this batch, so
    ``sent + elapsed - observed`` bounds the notification latency. ``payload``: the JSON body sent (None for a
    validation). An Event Grid event (``url`` the EventGrid: URL, one item): ``payload`` is the CloudEvent,
    ``status`` 200 when it was written to a queue, else None with ``error`` the outcome of
    ``EventGridEmulator.publish`` ("not_activated", "no_subscription", ...)."""

    kind: str
    url: str
    subscription_ids: tuple[str, ...]
    items: int
    attempt: int
    sent: float
    status: int | None
    elapsed: float
    error: str | None = None
    observed: float | None = None
    payload: dict | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """The subscriber accepted it (2xx; for a validation: 200 with the exact token)."""
        return self.error is None and self.status is not None and 200 <= self.status < 300


@dataclass
class _Subscription:
    id: str
    resource: str                 # as given (``users`` or ``/users``)
    kind: str                     # "users" | "groups"
    change_type: str              # as given
    change_types: frozenset[str]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expiration: float             # epoch seconds (emulator clock)
    since: int                    # tenant version at creation: only later changes are notified
    tls: str
    application_id: str
    creator_id: str

    def body(self) -> dict:
        return {"id": self.id, "resource": self.resource, "applicationId": self.application_id,
                "changeType": self.change_type, "clientState": self.client_state,
                "notificationUrl": self.notification_url, "notificationQueryOptions": None,
                "lifecycleNotificationUrl": self.lifecycle_url, "expirationDateTime": format_time(self.expiration),
                "creatorId": self.creator_id, "includeResourceData": False,
                "latestSupportedTlsVersion": self.tls, "encryptionCertificate": None,
                "encryptionCertificateId": None, "notificationUrlAppId": None}


def format_time(epoch: float) -> str:
    """Graph's form: ``2026-11-20T10:00:00.1234560Z`` (seven fractional digits, UTC)."""
    moment = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond:06d}0Z"


def with_query(url: str, name: str, value: str) -> str:
    """``url`` with ``name=value`` appended to its query string (kept as is: ``?code=…`` survives)."""
    parts = urlsplit(url)
    extra = f"{name}={quote(value, safe='')}"
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


@dataclass(frozen=True)
class EventGridTarget:
    """The partner topic an ``EventGrid:?…`` notification URL names."""

    azure_subscription_id: str
    resource_group: str
    partner_topic: str
    location: str

    def same_topic(self, other: EventGridTarget) -> bool:
        """Both name one topic (Azure compares names without case)."""
        return [v.casefold() for v in vars(self).values()] == [v.casefold() for v in vars(other).values()]


def eventgrid_target(url: str, name: str = "notificationUrl") -> EventGridTarget | None:
    """The partner topic of ``EventGrid:?azuresubscriptionid=…&resourcegroup=…&partnertopic=…&location=…`` (the
    scheme in any case), None for any other URL. 400 ``InvalidRequest`` (naming ``name``) for a missing, empty,
    repeated or unknown parameter."""
    scheme, colon, rest = url.partition(":")
    if not colon or scheme.strip().casefold() != "eventgrid":
        return None
    if not rest.startswith("?"):
        raise _invalid(f"Invalid {name} '{url}': an Event Grid URL has the form EventGrid:?azuresubscriptionid="
                       "<id>&resourcegroup=<name>&partnertopic=<name>&location=<region>.")
    params = parse_qs(rest[1:], keep_blank_values=True)
    unknown = sorted(set(params) - set(_EVENTGRID_PARAMETERS))
    if unknown:
        raise _invalid(f"Invalid {name}: unknown parameter '{unknown[0]}' in the Event Grid URL.")
    for key in _EVENTGRID_PARAMETERS:
        values = params.get(key, [])
        if len(values) != 1 or not values[0].strip():
            raise _invalid(f"Invalid {name}: the Event Grid URL needs the parameter '{key}' (once, not empty).")
    return EventGridTarget(*(params[key][0] for key in _EVENTGRID_PARAMETERS))


def _invalid(message: str) -> GraphError:
    return GraphError(400, "InvalidRequest", message)


def _not_found(sid: str) -> GraphError:
    return GraphError(404, "ResourceNotFound", f"The subscription '{sid}' does not exist.")


class Subscriptions:
    """Subscriptions of one emulated app in one tenant, their validation handshakes and notifications."""

    def __init__(self, tenant: Tenant, *, quota: int = DEFAULT_QUOTA, application_id: str | None = None,
                 creator_id: str | None = None):
        self.tenant = tenant
        self.quota = quota
        self.application_id = application_id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"app:{tenant.tenant_id}"))
        self.creator_id = creator_id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{tenant.tenant_id}"))
        self.window = COLLECT_WINDOW
        self.retry_delays: Sequence[float] = RETRY_DELAYS
        self.delivery_timeout = DELIVERY_TIMEOUT
        self.validation_timeout = VALIDATION_TIMEOUT
        self.clock_offset = 0.0
        self.deliveries: list[Delivery] = []
        # Where EventGrid: URLs deliver (set by the sandbox's wiring); None: such URLs are refused with 400.
        self.event_grid: EventGridEmulator | None = None
        self._sequence = itertools.count(1)   # resourceData.sequenceNumber of Event Grid notifications
        self._subs: dict[str, _Subscription] = {}
        self._lock = threading.RLock()
        self._http: httpx.Client | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._running = False   # between start() and stop(): the dispatcher may run

    # -- knobs ---------------------------------------------------------------------------------------------

    def now(self) -> float:
        """The emulator's clock (epoch seconds): real time plus ``clock_offset``."""
        return time.time() + self.clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move the emulator's clock forward (subscriptions expire, renewal bounds move)."""
        self.clock_offset += seconds

    def expire_subscription(self, sid: str) -> None:
        """Let the subscription's expiration pass now: Graph deletes it (404, no more notifications)."""
        with self._lock:
            if sid not in self._subs:
                raise KeyError(sid)
            self._subs[sid].expiration = self.now() - 1

    def remove_subscription(self, sid: str, notify: bool = False) -> None:
        """Drop the subscription as if Graph removed it; with ``notify`` then send ``subscriptionRemoved`` (after
        the removal, as Graph reports one that is gone: a receiver that looks finds it missing)."""
        with self._lock:
            sub = self._subs.pop(sid, None)
        if sub is None:
            raise KeyError(sid)
        if notify:
            self._send_lifecycle(sub, "subscriptionRemoved")

    def send_lifecycle(self, sid: str, event: str = "reauthorizationRequired") -> Delivery:
        """Send a lifecycle notification (§3.6) to the lifecycleNotificationUrl (else the notificationUrl), in
        the calling thread: a POST with retries, returning the last attempt, or for an EventGrid: URL one
        CloudEvent of type ``LIFECYCLE_EVENT_TYPES[event]`` published to the partner topic (ValueError for
        another event). KeyError for an unknown subscription."""
        with self._lock:
            sub = self._live().get(sid)
            if sub is None:
                raise KeyError(sid)
        return self._send_lifecycle(sub, event)

    def _send_lifecycle(self, sub: _Subscription, event: str) -> Delivery:
        item = {"subscriptionId": sub.id, "subscriptionExpirationDateTime": format_time(sub.expiration),
                "tenantId": self.tenant.tenant_id, "organizationId": self.tenant.tenant_id,
                "clientState": sub.client_state, "lifecycleEvent": event}
        url = sub.lifecycle_url or sub.notification_url
        target = eventgrid_target(url)
        if target is None:
            return self._deliver("lifecycle", url, {"value": [item]}, (sub.id,), None)
        if event not in LIFECYCLE_EVENT_TYPES:
            raise ValueError(f"no Event Grid event type for the lifecycle event {event!r}")
        cloud_event = self._cloud_event(LIFECYCLE_EVENT_TYPES[event], f"Subscriptions/{sub.id}", item)
        return self._publish("lifecycle", url, target, cloud_event, sub.id, None)

    def reset_deliveries(self) -> None:
        with self._lock:
            self.deliveries.clear()

    @property
    def source(self) -> str:
        """The ``source`` of the app's Event Grid events and partner topics."""
        return f"/tenants/{self.tenant.tenant_id}/applications/{self.application_id}"

    def live(self) -> list[dict]:
        """The live subscriptions as Graph returns them."""
        with self._lock:
            return [s.body() for s in self._live().values()]

    # -- lifecycle of the emulator ---------------------------------------------------------------------------

    def start(self) -> None:
        """Allow the dispatcher to run (it starts with the first subscription). Idempotent."""
        with self._lock:
            self._running = True
            if self._thread is None and self._stop.is_set():
                self._stop = threading.Event()
            if self._subs:
                self._ensure_dispatcher(self.tenant.version)

    def stop(self) -> None:
        """Stop the dispatcher, abort pending retries and close connections (idempotent)."""
        with self._lock:
            self._running = False
            thread, pool, client = self._thread, self._pool, self._http
            self._thread = self._pool = self._http = None
            self._stop.set()
        if thread:
            thread.join(timeout=5)
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
        if client:
            client.close()

    def _client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                self._http = httpx.Client(timeout=self.delivery_timeout, follow_redirects=False)
            return self._http

    def _ensure_dispatcher(self, version: int) -> None:
        """Start the dispatcher thread (under ``_lock``) reporting changes after ``version``."""
        if self._thread is not None or not self._running:
            return
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="graph-notify")
        self._thread = threading.Thread(target=self._run, args=(version, self._stop), name="graph-notifier",
                                        daemon=True)
        self._thread.start()

    # -- HTTP ------------------------------------------------------------------------------------------------

    def handle(self, request: Request, segments: list[str], base: str) -> Response:
        """Answer ``/v1.0/subscriptions[/{id}[/reauthorize]]`` (``segments`` follow "subscriptions")."""
        method = request.method
        match segments, method:
            case [], "GET":
                with self._lock:
                    value = [s.body() for s in self._live().values()]
                return self._json({"@odata.context": f"{base}/$metadata#subscriptions", "value": value})
            case [], "POST":
                sub = self._create(self._body(request))
                return self._json({"@odata.context": f"{base}/$metadata#subscriptions/$entity", **sub.body()}, 201)
            case [sid], "GET":
                return self._json({"@odata.context": f"{base}/$metadata#subscriptions/$entity",
                                   **self._get(sid).body()})
            case [sid], "PATCH":
                sub = self._patch(sid, self._body(request))
                return self._json({"@odata.context": f"{base}/$metadata#subscriptions/$entity", **sub.body()})
            case [sid], "DELETE":
                with self._lock:
                    self._get(sid)
                    del self._subs[sid]
                return Response(status=204)
            case [sid, "reauthorize"], "POST":
                self._get(sid)
                return Response(status=204)
            case ([] | [_] | [_, "reauthorize"]), _:
                raise GraphError(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request uri.")
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segments[-1]}'.")

    @staticmethod
    def _json(body: dict, status: int = 200) -> Response:
        return Response(orjson.dumps(body), status, content_type=_JSON)

    @staticmethod
    def _body(request: Request) -> dict:
        try:
            body = orjson.loads(request.get_data() or b"null")
        except orjson.JSONDecodeError:
            raise GraphError(400, "BadRequest", "Invalid request body: not valid JSON.") from None
        if not isinstance(body, dict):
            raise GraphError(400, "BadRequest", "Invalid request body: expected a JSON object.")
        return body

    def _live(self) -> dict[str, _Subscription]:
        """The subscriptions not yet expired (under ``_lock``); expired ones are deleted as Graph does."""
        now = self.now()
        for sid in [s.id for s in self._subs.values() if s.expiration <= now]:
            del self._subs[sid]
        return self._subs

    def _get(self, sid: str) -> _Subscription:
        with self._lock:
            sub = self._live().get(sid)
        if sub is None:
            raise _not_found(sid)
        return sub

    # -- create, renew ---------------------------------------------------------------------------------------

    def _create(self, body: dict) -> _Subscription:
        unknown = sorted(set(body) - _CREATABLE)
        if unknown:
            raise _invalid(f"Property '{unknown[0]}' is not supported on a subscription create request.")
        for name in _REQUIRED:
            if not isinstance(body.get(name), str) or not body[name].strip():
                raise _invalid(f"The '{name}' property is required and must be a non-empty string.")
        client_state = body.get("clientState")
        if client_state is not None and (not isinstance(client_state, str) or len(client_state) > MAX_CLIENT_STATE):
            raise _invalid(f"clientState must be a string of at most {MAX_CLIENT_STATE} characters.")
        if body.get("includeResourceData"):
            raise _invalid("Rich notifications (includeResourceData) are not supported for resource "
                           f"'{body['resource']}'.")
        tls = body.get("latestSupportedTlsVersion") or "v1_2"
        if tls not in _TLS_VERSIONS:
            raise _invalid(f"Invalid latestSupportedTlsVersion '{tls}'.")
        resource = body["resource"]
        kind = resource.strip().strip("/").casefold()
        if kind not in _NOTIFY or resource.strip().count("/") > 1:
            raise _invalid(f"Resource '{resource}' is not supported: this emulator subscribes to 'users' and "
                           "'groups' only.")
        change_types = self._change_types(body["changeType"], kind)
        target = self._check_url(body["notificationUrl"], "notificationUrl")
        lifecycle = body.get("lifecycleNotificationUrl")
        lifecycle_target = None
        if lifecycle is not None:
            if not isinstance(lifecycle, str):
                raise _invalid("lifecycleNotificationUrl must be a string.")
            lifecycle_target = self._check_url(lifecycle, "lifecycleNotificationUrl")
        self._same_topic(target, lifecycle_target)
        expiration = self._expiration(body["expirationDateTime"])
        with self._lock:
            self._admit(kind, change_types, body["notificationUrl"])
        sid = str(uuid.uuid4())
        if target is None:   # no handshake for Event Grid: Graph itself creates the topic it delivers to
            self._validate(body["notificationUrl"], sid)
        if lifecycle and lifecycle_target is None:
            self._validate(lifecycle, sid)
        if target or lifecycle_target:   # both given: the same topic (checked above)
            self._create_topic(target or lifecycle_target)
        with self._lock:
            self._admit(kind, change_types, body["notificationUrl"])
            sub = _Subscription(sid, resource, kind, body["changeType"], change_types, body["notificationUrl"],
                                lifecycle, client_state, expiration, self.tenant.version, tls,
                                self.application_id, self.creator_id)
            self._subs[sid] = sub
            self._ensure_dispatcher(sub.since)
        return sub

    def _admit(self, kind: str, change_types: frozenset[str], url: str) -> None:
        """409 for a duplicate, 403 over the quota (under ``_lock``)."""
        live = self._live()
        for other in live.values():
            if other.kind == kind and other.change_types == change_types and other.notification_url == url:
                raise GraphError(409, "Conflict",
                                 f"Subscription Id {other.id} already exists for the requested combination")
        if sum(1 for s in live.values() if s.kind == kind) >= self.quota:
            raise GraphError(403, "Forbidden", f"The number of subscriptions to resource '{kind}' has reached the "
                                               f"limit of {self.quota} per application and tenant.")

    @staticmethod
    def _change_types(raw: str, kind: str) -> frozenset[str]:
        parts = [p.strip() for p in raw.split(",")]
        for part in parts:
            if part == "created":
                raise _invalid(f"The change type 'created' is not supported for resource '{kind}'; use "
                               "'updated' and/or 'deleted'.")
            if part not in CHANGE_TYPES:
                raise _invalid(f"Invalid changeType '{part}'. Supported values for resource '{kind}': updated, "
                               "deleted.")
        return frozenset(parts)

    def _check_url(self, url: str, name: str) -> EventGridTarget | None:
        """400 unless ``url`` is an https URL (http on loopback) or, with ``event_grid`` set, an EventGrid: URL,
        whose partner topic is returned."""
        target = eventgrid_target(url, name)
        if target is not None:
            if self.event_grid is None:
                raise _invalid(f"Invalid {name}: Event Grid delivery is not available in this sandbox.")
            return target
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _invalid(f"Invalid {name} '{url}': an absolute https URL is required.")
        if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
            raise _invalid(f"Invalid {name}: the URL must use https (the sandbox allows http on loopback only).")
        return None

    @staticmethod
    def _same_topic(target: EventGridTarget | None, lifecycle: EventGridTarget | None) -> None:
        """400 when both URLs are Event Grid ones naming different partner topics."""
        if target is not None and lifecycle is not None and not target.same_topic(lifecycle):
            raise _invalid("notificationUrl and lifecycleNotificationUrl must name the same Event Grid partner topic.")

    def _create_topic(self, target: EventGridTarget) -> None:
        """Have Event Grid create the partner topic (a no-op when it exists); 400 when it refuses."""
        grid = self.event_grid
        if grid is None:
            raise _invalid("Event Grid delivery is not available in this sandbox.")
        try:
            grid.create_partner_topic(target.azure_subscription_id, target.resource_group, target.partner_topic,
                                      target.location, self.source)
        except (PartnerNotAuthorized, ValueError) as exc:
            raise _invalid(f"The Event Grid partner topic '{target.partner_topic}' could not be created: {exc}") \
                from None

    def _expiration(self, raw: object) -> float:
        """The requested expiration as epoch seconds: 400 beyond the maximum, raised to the minimum."""
        try:
            moment = dt.datetime.fromisoformat(str(raw).strip())
        except ValueError:
            raise _invalid(f"Invalid expirationDateTime '{raw}': use an ISO 8601 date and time in UTC.") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        value, now = moment.timestamp(), self.now()
        if value > now + MAX_EXPIRATION_MINUTES * 60:
            raise _invalid(f"Subscription expiration can only be {MAX_EXPIRATION_MINUTES} minutes in the future.")
        return max(value, now + MIN_EXPIRATION_MINUTES * 60)

    def _patch(self, sid: str, body: dict) -> _Subscription:
        current = self._get(sid)
        unknown = sorted(set(body) - _PATCHABLE)
        if unknown:
            raise _invalid(f"Property '{unknown[0]}' cannot be updated; only expirationDateTime and "
                           "notificationUrl can (a lifecycleNotificationUrl needs a new subscription).")
        expiration = self._expiration(body["expirationDateTime"]) if "expirationDateTime" in body else None
        url = body.get("notificationUrl")
        if url is not None:
            if not isinstance(url, str):
                raise _invalid("notificationUrl must be a string.")
            target = self._check_url(url, "notificationUrl")
            if target is None:
                self._validate(url, sid)
            else:
                self._same_topic(target, eventgrid_target(current.lifecycle_url or ""))
                self._create_topic(target)
        with self._lock:
            sub = self._get(sid)
            if expiration is not None:
                sub.expiration = expiration
            if url is not None:
                sub.notification_url = url
            return sub

    def _validate(self, url: str, sid: str) -> None:
        """The handshake (§3.2): 400 unless ``url`` echoes the token with 200 text/plain in time."""
        token = f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"
        sent, start = time.time(), time.perf_counter()
        status, error = None, None
        try:
            response = self._client().post(with_query(url, "validationToken", token), content=b"",
                                           headers={"Content-Type": _TEXT}, timeout=self.validation_timeout)
            status = response.status_code
            if status != 200:
                error = f"the endpoint answered HTTP {status}"
            elif not response.headers.get("Content-Type", "").lower().startswith("text/plain"):
                error = "the answer is not text/plain"
            elif response.text != token:
                error = "the answer does not match the validation token"
        except httpx.TimeoutException:
            error = f"no answer within {self.validation_timeout:g} seconds"
        except httpx.HTTPError as exc:
            error = f"the endpoint could not be reached ({type(exc).__name__})"
        self._record(Delivery("validation", url, (sid,), 0, 1, sent, status, time.perf_counter() - start, error))
        if error is None:
            return
        if status == 200:
            raise _invalid(f"Subscription validation request failed. Response must exactly match validationToken "
                           f"query parameter. ({error})")
        raise _invalid("Subscription validation request failed. Notification endpoint must respond with 200 OK to "
                       f"validation request. ({error})")

    # -- notifications ---------------------------------------------------------------------------------------

    def _run(self, version: int, stop: threading.Event) -> None:
        """The dispatcher: poll the tenant version, collect for ``window``, hand batches to the pool."""
        seen = version
        while not stop.wait(POLL_INTERVAL):
            if self.tenant.version == seen:
                continue
            observed = time.time()
            if stop.wait(self.window):
                return
            try:
                seen = self._dispatch(seen, observed)
            except Exception:  # the sandbox keeps notifying whatever one round did
                log.exception("graph emulator: notifying the changes after version %d failed", seen)
                seen = self.tenant.version

    def _dispatch(self, seen: int, observed: float) -> int:
        """Send the notifications for the tenant changes after ``seen``; returns the version sent up to."""
        with self.tenant.lock:
            version = self.tenant.version
            with self._lock:
                subs = [s for s in self._live().values() if s.since < version]
            cache: dict[tuple[str, int], list[Change]] = {}
            for sub in subs:
                key = (sub.kind, max(seen, sub.since))
                if key not in cache:
                    cache[key] = self.tenant.changes_since(key[1], version, kind=sub.kind)
        by_url: dict[str, list[tuple[str, dict]]] = {}
        tenant_id = self.tenant.tenant_id
        for sub in subs:
            prefix, odata_type = _NOTIFY[sub.kind]
            expires = format_time(sub.expiration)
            for change in cache[(sub.kind, max(seen, sub.since))]:
                change_type = "deleted" if change.removed == "deleted" else "updated"
                if change_type not in sub.change_types:
                    continue
                path = f"{prefix}/{change.uid}"
                by_url.setdefault(sub.notification_url, []).append((sub.id, {
                    "subscriptionId": sub.id, "subscriptionExpirationDateTime": expires, "changeType": change_type,
                    "clientState": sub.client_state, "resource": path, "tenantId": tenant_id,
                    "resourceData": {"@odata.type": odata_type, "@odata.id": path, "id": change.uid,
                                     "organizationId": tenant_id}}))
        with self._lock:
            pool = self._pool
        for url, items in by_url.items():
            target = eventgrid_target(url)
            if target is not None:
                if pool is not None:
                    pool.submit(self._publish_changes, url, target, items, observed)
                continue
            for start in range(0, len(items), BATCH_LIMIT):
                chunk = items[start:start + BATCH_LIMIT]
                ids = tuple(dict.fromkeys(sid for sid, _ in chunk))
                if pool is not None:
                    pool.submit(self._deliver, "notification", url, {"value": [i for _, i in chunk]}, ids, observed)
        return version

    def _deliver(self, kind: str, url: str, payload: dict, ids: tuple[str, ...], observed: float | None) -> Delivery:
        """POST ``payload`` with retries (``retry_delays``); every attempt is recorded. Returns the last one."""
        content = orjson.dumps(payload)
        stop = self._stop
        attempt = 0
        while True:
            attempt += 1
            sent, start = time.time(), time.perf_counter()
            status, error = None, None
            try:
                status = self._client().post(url, content=content, headers={"Content-Type": "application/json"},
                                             timeout=self.delivery_timeout).status_code
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            record = Delivery(kind, url, ids, len(payload["value"]), attempt, sent, status,
                              time.perf_counter() - start, error, observed, payload)
            self._record(record)
            if record.ok or attempt > len(self.retry_delays) or stop.wait(self.retry_delays[attempt - 1]):
                return record

    def _publish_changes(self, url: str, target: EventGridTarget, items: list[tuple[str, dict]],
                         observed: float) -> None:
        """Publish one CloudEvent per notification item to the partner topic (Graph → Event Grid)."""
        for sid, item in items:
            resource_data = {**item["resourceData"], "eventTime": format_time(self.now()),
                             "sequenceNumber": next(self._sequence)}
            # "#Microsoft.Graph.User" + "updated" -> "Microsoft.Graph.UserUpdated"
            event_type = resource_data["@odata.type"].lstrip("#") + item["changeType"].capitalize()
            event = self._cloud_event(event_type, item["resource"], {**item, "resourceData": resource_data})
            self._publish("notification", url, target, event, sid, observed)

    def _cloud_event(self, event_type: str, subject: str, data: dict) -> dict:
        return {"id": str(uuid.uuid4()), "type": event_type, "source": self.source, "subject": subject,
                "time": format_time(self.now()), "datacontenttype": "application/json", "specversion": "1.0",
                "data": data}

    def _publish(self, kind: str, url: str, target: EventGridTarget, event: dict, sid: str,
                 observed: float | None) -> Delivery:
        """Publish ``event`` and record it: status 200 when Event Grid delivered it, else None with the outcome
        as ``error`` (e.g. "not_activated")."""
        grid = self.event_grid
        sent, start = time.time(), time.perf_counter()
        outcome = grid.publish(target.azure_subscription_id, target.resource_group, target.partner_topic, event) \
            if grid is not None else "no_event_grid"
        delivered = outcome == "delivered"
        record = Delivery(kind, url, (sid,), 1, 1, sent, 200 if delivered else None, time.perf_counter() - start,
                          None if delivered else outcome, observed, event)
        self._record(record)
        return record

    def _record(self, delivery: Delivery) -> None:
        with self._lock:
            self.deliveries.append(delivery)


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it is truthy or ``timeout`` passes (a helper for tests and demos)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
