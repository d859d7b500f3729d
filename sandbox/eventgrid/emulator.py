"""An emulator of Azure Event Grid for Graph change notifications: the Azure Resource Manager (ARM) endpoints of
``Microsoft.EventGrid`` that ``azure-mgmt-eventgrid`` 10.4.0 calls (api-version 2025-02-15), over real HTTP on
loopback, and the delivery of partner events to Storage queues.

Microsoft Graph delivers the change notifications of a subscription whose notificationUrl is
``EventGrid:?azuresubscriptionid=…&resourcegroup=…&partnertopic=…&location=…`` to a *partner topic* it creates in
that resource group, if the resource group's partner configuration authorizes the Microsoft Graph API partner
(https://learn.microsoft.com/azure/event-grid/subscribe-to-graph-api-events). The topic starts
"NeverActivated"; events flow only once it is activated, and only to its event subscriptions. The Graph
emulator (``sandbox/graph/subscriptions.py``) calls ``create_partner_topic`` and ``publish`` in-process;
``EventGridManagementClient(credential, subscription_id, base_url=emulator.url)`` talks to the ARM side (the
caller passes ``enforce_https=False`` per call: azure-core's bearer policy refuses plain http otherwise).

ARM endpoints, all under ``/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.EventGrid``:
- ``PUT|GET partnerConfigurations/default``, ``POST partnerConfigurations/default/authorizePartner``;
- ``GET partnerTopics``, ``GET|PATCH partnerTopics/{name}`` (PATCH: ``tags``, ``identity``),
  ``POST partnerTopics/{name}/activate|deactivate`` (200 + the topic);
- ``GET partnerTopics/{name}/eventSubscriptions``, ``PUT|GET|DELETE …/eventSubscriptions/{es}``.
Every request needs ``Authorization: Bearer <token>`` (401 ``AuthenticationFailed``), the emulator's
subscription id (404 ``SubscriptionNotFound``) and ``api-version=2025-02-15`` (400
``MissingApiVersionParameter`` / ``InvalidApiVersionParameter``); then the RBAC action is checked (``deny``:
403 ``AuthorizationFailed`` in ARM's wording), then the resource (404 ``ResourceNotFound``). Errors have ARM's
shape ``{"error": {"code", "message"}}``. Long-running PUTs (partner configuration, event subscription) answer
201 (new) or 200 (replaced) with ``provisioningState`` "Succeeded" and no polling header, so azure-mgmt-core's
ARM poller is done after the first response.

Delivery: ``publish`` hands an Activated topic's event to ``sink(queue name, CloudEvent)`` once per
StorageQueue event subscription whose ``filter.includedEventTypes`` (when set) names its type, in the calling
thread. ``azurite_sink`` writes each event as one queue message, base64 of the JSON.

Knobs: ``authorize_graph``, ``add_queue_subscription``, ``deny``/``allow``, ``sink``; inspection:
``requests``, ``published``.

UNCONFIRMED (emulator choices): every error message except the 403's, the codes ``BadRequest`` (an invalid
event subscription), ``InvalidRequestContent`` (a body that is not a JSON object), ``InvalidResourceType`` (an
unknown path) and ``MethodNotAllowed``; 401 ``AuthenticationFailed`` also for a wrong token (ARM may say
``InvalidAuthenticationToken``); resource groups always exist; a partner entry authorizes Graph by its immutable
id, or by the name ``MicrosoftGraphAPI`` when it has no id; a partner without ``authorizationExpirationTimeInUtc``
is authorized for ``defaultMaximumExpirationTimeInDays`` (default 7) from the PUT; the topic's
``partnerTopicFriendlyDescription`` and null ``messageForActivation``; a topic Graph asks for again with another
source is refused (``TopicConflict``); event subscriptions to other endpoint types are kept but never delivered
to; a user-assigned delivery identity must be attached to the topic before an event subscription (PUT)
delivers with it (the knob ``add_queue_subscription`` does not check); queue messages are base64 (a 2022 report, MicrosoftDocs/azure-docs#102923; older docs say plain text); retries, dead-lettering and
``queueMessageTimeToLiveInSeconds`` are not modelled.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, TextBase64EncodePolicy
from werkzeug.wrappers import Request, Response

from sandbox.http import RecordedRequest, Served

__all__ = ["API_VERSION", "GRAPH_PARTNER_ID", "GRAPH_PARTNER_NAME", "EventGridEmulator", "PartnerNotAuthorized",
           "TopicConflict", "UnknownAzureSubscription", "azurite_sink"]

API_VERSION = "2025-02-15"
GRAPH_PARTNER_NAME = "MicrosoftGraphAPI"
GRAPH_PARTNER_ID = "c02e0126-707c-436d-b6a1-175d2748fb58"   # UNCONFIRMED, as in infra/eventgrid.bicep
_PROVIDER = "Microsoft.EventGrid"
_DEFAULT_AUTHORIZATION_DAYS = 7
# (route, method) -> the RBAC action ARM checks before the resource provider sees the request
_ACTIONS = {
    ("config", "GET"): "Microsoft.EventGrid/partnerConfigurations/read",
    ("config", "PUT"): "Microsoft.EventGrid/partnerConfigurations/write",
    ("config/authorizePartner", "POST"): "Microsoft.EventGrid/partnerConfigurations/authorizePartner/action",
    ("topics", "GET"): "Microsoft.EventGrid/partnerTopics/read",
    ("topic", "GET"): "Microsoft.EventGrid/partnerTopics/read",
    ("topic", "PATCH"): "Microsoft.EventGrid/partnerTopics/write",
    ("topic/activate", "POST"): "Microsoft.EventGrid/partnerTopics/activate/action",
    ("topic/deactivate", "POST"): "Microsoft.EventGrid/partnerTopics/deactivate/action",
    ("eventSubscriptions", "GET"): "Microsoft.EventGrid/partnerTopics/eventSubscriptions/read",
    ("eventSubscription", "GET"): "Microsoft.EventGrid/partnerTopics/eventSubscriptions/read",
    ("eventSubscription", "PUT"): "Microsoft.EventGrid/partnerTopics/eventSubscriptions/write",
    ("eventSubscription", "DELETE"): "Microsoft.EventGrid/partnerTopics/eventSubscriptions/delete",
}
log = logging.getLogger(__name__)


class PartnerNotAuthorized(Exception):
    """The resource group's partner configuration does not authorize the Microsoft Graph API partner."""


class UnknownAzureSubscription(ValueError):
    """An Azure subscription id other than the emulator's."""


class TopicConflict(ValueError):
    """The partner topic exists with another source (another application or tenant)."""


class _ArmError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


@dataclass
class _EventSubscription:
    name: str
    properties: dict

    def queue(self) -> str | None:
        """The queue name when this delivers to a Storage queue, else None."""
        holder = self.properties.get("deliveryWithResourceIdentity") or self.properties
        destination = holder.get("destination") or {}
        if destination.get("endpointType") != "StorageQueue":
            return None
        return destination["properties"]["queueName"]

    def accepts(self, event_type: str) -> bool:
        included = (self.properties.get("filter") or {}).get("includedEventTypes")
        return not included or event_type.casefold() in {t.casefold() for t in included}


@dataclass
class _Topic:
    subscription_id: str
    resource_group: str
    name: str
    location: str
    source: str
    activation_state: str = "NeverActivated"
    tags: dict | None = None
    identity: dict | None = None
    event_subscriptions: dict[str, _EventSubscription] = field(default_factory=dict)   # by casefolded name

    @property
    def id(self) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}/providers/{_PROVIDER}"
                f"/partnerTopics/{self.name}")

    def body(self) -> dict:
        return {"id": self.id, "name": self.name, "type": "Microsoft.EventGrid/partnerTopics",
                "location": self.location, "tags": self.tags, "identity": self.identity,
                "properties": {"partnerRegistrationImmutableId": GRAPH_PARTNER_ID, "source": self.source,
                               "activationState": self.activation_state, "provisioningState": "Succeeded",
                               "partnerTopicFriendlyDescription": "Microsoft Graph API change notifications",
                               "messageForActivation": None}}

    def subscription_body(self, sub: _EventSubscription) -> dict:
        return {"id": f"{self.id}/eventSubscriptions/{sub.name}", "name": sub.name,
                "type": "Microsoft.EventGrid/eventSubscriptions",
                "properties": {**sub.properties, "topic": self.id, "provisioningState": "Succeeded"}}


def _parse_time(raw: object) -> float:
    """An ISO 8601 time as epoch seconds (.NET's seven fractional digits cut to Python's six)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", str(raw).strip())
    moment = dt.datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def _format_time(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _partner_key(partner: dict) -> tuple[str, str]:
    """What designates a partner: its immutable id, else its name."""
    immutable_id = partner.get("partnerRegistrationImmutableId")
    return ("id", str(immutable_id).casefold()) if immutable_id else ("name", str(partner.get("partnerName")).casefold())


def _is_graph(partner: dict) -> bool:
    return _partner_key(partner) in {("id", GRAPH_PARTNER_ID), ("name", GRAPH_PARTNER_NAME.casefold())}


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers=headers, content_type="application/json; charset=utf-8")


def _route(rest: list[str]) -> str | None:
    """The route of the path below ``providers/Microsoft.EventGrid`` (ARM matches type names in any case)."""
    match [s.casefold() for s in rest]:
        case ["partnerconfigurations", "default"]:
            return "config"
        case ["partnerconfigurations", "default", "authorizepartner"]:
            return "config/authorizePartner"
        case ["partnertopics"]:
            return "topics"
        case ["partnertopics", _]:
            return "topic"
        case ["partnertopics", _, ("activate" | "deactivate") as action]:
            return f"topic/{action}"
        case ["partnertopics", _, "eventsubscriptions"]:
            return "eventSubscriptions"
        case ["partnertopics", _, "eventsubscriptions", _]:
            return "eventSubscription"
    return None


class EventGridEmulator(Served):
    """Partner configurations, partner topics and their event subscriptions of one Azure subscription, served
    as ARM does, and the delivery of the events Graph publishes. Thread-safe; see the module docstring."""

    def __init__(self, subscription_id: str, token: str = "sandbox-management-token"):
        self.subscription_id = subscription_id
        self.token = token
        # The object id the 403 message names: the caller's identity, stable per token.
        self.principal_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"arm-principal:{token}"))
        self.requests: list[RecordedRequest] = []
        self.published: list[tuple[float, str, dict]] = []   # (time.time(), outcome, CloudEvent)
        self.sink: Callable[[str, dict], None] | None = None   # (queue name, CloudEvent): writes one message
        self._configs: dict[str, dict] = {}                  # casefolded resource group -> partner configuration
        self._topics: dict[tuple[str, str], _Topic] = {}     # (casefolded resource group, casefolded name)
        self._denied: set[str] = set()
        self._lock = threading.RLock()

    # -- knobs ---------------------------------------------------------------------------------------------

    def authorize_graph(self, resource_group: str, days: float = 365) -> None:
        """Authorize the Microsoft Graph API partner in ``resource_group`` for ``days`` (what the Bicep does)."""
        with self._lock:
            self._authorize(resource_group, {"partnerRegistrationImmutableId": GRAPH_PARTNER_ID,
                                             "partnerName": GRAPH_PARTNER_NAME,
                                             "authorizationExpirationTimeInUtc": _format_time(time.time() + days * 86400)})

    def add_queue_subscription(self, resource_group: str, topic: str, name: str, queue_name: str,
                               storage_account_id: str) -> dict:
        """Create (or replace) the event subscription ``name`` on ``topic`` delivering CloudEvents to the Storage
        queue ``queue_name`` with a user-assigned identity, as ``infra/eventgrid.bicep`` deploys it. Returns the
        resource; KeyError for an unknown topic."""
        identity = (f"/subscriptions/{self.subscription_id}/resourceGroups/{resource_group}/providers/"
                    "Microsoft.ManagedIdentity/userAssignedIdentities/id-eventgrid-sandbox")
        properties = {"eventDeliverySchema": "CloudEventSchemaV1_0", "deliveryWithResourceIdentity": {
            "identity": {"type": "UserAssigned", "userAssignedIdentity": identity},
            "destination": {"endpointType": "StorageQueue", "properties": {
                "resourceId": storage_account_id, "queueName": queue_name, "queueMessageTimeToLiveInSeconds": 86400}}},
            "retryPolicy": {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1440}}
        with self._lock:
            found = self._topics.get((resource_group.casefold(), topic.casefold()))
            if found is None:
                raise KeyError(topic)
            sub = found.event_subscriptions[name.casefold()] = _EventSubscription(name, properties)
            return found.subscription_body(sub)

    def deny(self, action: str) -> None:
        """Answer requests needing the RBAC ``action`` (e.g. "Microsoft.EventGrid/partnerTopics/read") with 403."""
        with self._lock:
            self._denied.add(action.casefold())

    def allow(self, action: str) -> None:
        """Undo ``deny(action)``."""
        with self._lock:
            self._denied.discard(action.casefold())

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()
            self.published.clear()

    # -- the Graph-facing side -----------------------------------------------------------------------------

    def create_partner_topic(self, azure_subscription_id: str, resource_group: str, name: str, location: str,
                             source: str) -> None:
        """Create the partner topic Graph asks for ("NeverActivated"). A topic that exists with the same source
        is left as it is. Raises ``UnknownAzureSubscription``, ``PartnerNotAuthorized`` or ``TopicConflict``."""
        with self._lock:
            if azure_subscription_id.casefold() != self.subscription_id.casefold():
                raise UnknownAzureSubscription(f"The Azure subscription '{azure_subscription_id}' could not be found.")
            if not self._graph_authorized(resource_group):
                raise PartnerNotAuthorized(
                    f"The partner '{GRAPH_PARTNER_NAME}' (Microsoft Graph API) is not authorized to create partner "
                    f"topics in resource group '{resource_group}' of Azure subscription '{azure_subscription_id}': "
                    "authorize it in the resource group's partner configuration.")
            key = (resource_group.casefold(), name.casefold())
            existing = self._topics.get(key)
            if existing is not None:
                if existing.source != source:
                    raise TopicConflict(f"The partner topic '{name}' already exists with the source "
                                        f"'{existing.source}'.")
                return
            self._topics[key] = _Topic(self.subscription_id, resource_group, name, location, source)

    def publish(self, azure_subscription_id: str, resource_group: str, topic: str, event: dict) -> str:
        """Deliver one CloudEvent published to the partner topic; returns what happened: "delivered" (written to
        the queue of every matching StorageQueue event subscription), "not_activated" (dropped: the topic is not
        Activated), "no_subscription" (dropped: no matching event subscription), "no_topic", "no_sink" (nothing
        to write with) or "sink_failed" (a write raised; logged). Recorded in ``published``."""
        queues: list[str] = []
        with self._lock:
            found = self._topics.get((resource_group.casefold(), topic.casefold()))
            if azure_subscription_id.casefold() != self.subscription_id.casefold() or found is None:
                outcome = "no_topic"
            elif found.activation_state != "Activated":
                outcome = "not_activated"
            else:
                queues = [q for s in found.event_subscriptions.values()
                          if (q := s.queue()) is not None and s.accepts(str(event.get("type", "")))]
                outcome = "delivered" if queues else "no_subscription"
            sink = self.sink
        if queues and sink is None:
            outcome = "no_sink"
        elif queues:
            for queue in queues:   # outside the lock: a slow queue must not hold up ARM requests
                try:
                    sink(queue, event)
                except Exception:
                    log.exception("event grid emulator: writing event %s to queue %s failed", event.get("id"), queue)
                    outcome = "sink_failed"
        with self._lock:
            self.published.append((time.time(), outcome, event))
        return outcome

    def _graph_authorized(self, resource_group: str) -> bool:
        config = self._configs.get(resource_group.casefold())
        partners = config["properties"]["partnerAuthorization"]["authorizedPartnersList"] if config else []
        now = time.time()
        return any(_is_graph(p) and _parse_time(p["authorizationExpirationTimeInUtc"]) > now for p in partners)

    # -- WSGI ----------------------------------------------------------------------------------------------

    def __call__(self, environ: dict, start_response):
        request = Request(environ)
        raw = request.get_data()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        with self._lock:
            self.requests.append(RecordedRequest(request.method, request.path, request.args.to_dict(),
                                                 dict(request.headers), raw, body))
        try:
            if raw and not isinstance(body, dict):
                raise _ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be "
                                                              "deserialized: expected a JSON object.")
            with self._lock:
                response = self._respond(request, body or {})
        except _ArmError as exc:
            response = _json({"error": {"code": exc.code, "message": exc.message}}, exc.status, exc.headers)
        response.headers["x-ms-request-id"] = str(uuid.uuid4())
        return response(environ, start_response)

    def _respond(self, request: Request, body: dict) -> Response:
        """Authentication, subscription, api-version, route, RBAC, then the resource - ARM's order."""
        auth = request.headers.get("Authorization", "")
        if auth != f"Bearer {self.token}":
            problem = "The 'Authorization' header is missing." if not auth else "The access token is invalid."
            raise _ArmError(401, "AuthenticationFailed", f"Authentication failed. {problem}", {
                "WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/common", '
                                    'error="invalid_token", error_description="The authentication failed."'})
        segments = request.path.strip("/").split("/")
        if len(segments) < 2 or segments[0].casefold() != "subscriptions":
            raise _ArmError(404, "InvalidResourceType", f"No resource is served at '{request.path}'.")
        if segments[1].casefold() != self.subscription_id.casefold():
            raise _ArmError(404, "SubscriptionNotFound", f"The subscription '{segments[1]}' could not be found.")
        version = request.args.get("api-version")
        if version is None:
            raise _ArmError(400, "MissingApiVersionParameter",
                            "The api-version query parameter (?api-version=) is required for all requests.")
        if version != API_VERSION:
            raise _ArmError(400, "InvalidApiVersionParameter",
                            f"The api-version '{version}' is invalid. The supported versions are '{API_VERSION}'.")
        prefix = [s.casefold() for s in segments[2:6:2]]
        route = _route(segments[6:]) if prefix == ["resourcegroups", "providers"] and len(segments) > 6 \
            and segments[5].casefold() == _PROVIDER.casefold() else None
        if route is None:
            raise _ArmError(400, "InvalidResourceType", f"The resource type of '{request.path}' could not be found "
                                                        f"in the namespace '{_PROVIDER}' for api version '{API_VERSION}'.")
        action = _ACTIONS.get((route, request.method))
        if action is None:
            raise _ArmError(405, "MethodNotAllowed",
                            f"The requested resource does not support http method '{request.method}'.")
        resource_group, names = segments[3], segments[7::2]
        if action.casefold() in self._denied:
            # the scope is the resource, not its action (…/activate acts on the topic)
            scope = "/" + "/".join(segments[:-1] if route.endswith(("activate", "authorizePartner")) else segments)
            raise _ArmError(403, "AuthorizationFailed",
                            f"The client '{self.principal_id}' with object id '{self.principal_id}' does not have "
                            f"authorization to perform action '{action}' over scope '{scope}' or the scope is "
                            "invalid. If access was recently granted, please refresh your credentials.")
        if route.startswith("config"):
            return self._config(request.method, route, resource_group, body)
        return self._topic_request(request.method, route, resource_group, names, body)

    # -- resources (under ``_lock``) -------------------------------------------------------------------------

    def _config_id(self, resource_group: str) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{resource_group}/providers/{_PROVIDER}"
                "/partnerConfigurations/default")

    def _authorize(self, resource_group: str, partner: dict) -> dict:
        """Add ``partner`` to the resource group's configuration (creating it), replacing the same partner."""
        config = self._configs.setdefault(resource_group.casefold(), {
            "id": self._config_id(resource_group), "name": "default",
            "type": "Microsoft.EventGrid/partnerConfigurations", "location": "global", "properties": {
                "partnerAuthorization": {"defaultMaximumExpirationTimeInDays": _DEFAULT_AUTHORIZATION_DAYS,
                                         "authorizedPartnersList": []}, "provisioningState": "Succeeded"}})
        authorization = config["properties"]["partnerAuthorization"]
        added = self._with_expiry(partner, authorization["defaultMaximumExpirationTimeInDays"])
        authorization["authorizedPartnersList"] = [p for p in authorization["authorizedPartnersList"]
                                                   if _partner_key(p) != _partner_key(added)] + [added]
        return config

    @staticmethod
    def _with_expiry(partner: object, default_days: int) -> dict:
        if not isinstance(partner, dict) or not (partner.get("partnerRegistrationImmutableId")
                                                 or partner.get("partnerName")):
            raise _ArmError(400, "BadRequest", "Each authorized partner needs a partnerRegistrationImmutableId or a "
                                               "partnerName.")
        expires = partner.get("authorizationExpirationTimeInUtc")
        try:
            epoch = time.time() + default_days * 86400 if expires is None else _parse_time(expires)
        except ValueError:
            raise _ArmError(400, "BadRequest", f"Invalid authorizationExpirationTimeInUtc '{expires}'.") from None
        return {**partner, "authorizationExpirationTimeInUtc": _format_time(epoch)}

    def _config(self, method: str, route: str, resource_group: str, body: dict) -> Response:
        key = resource_group.casefold()
        if route == "config/authorizePartner":
            return _json(self._authorize(resource_group, body))
        if method == "GET":
            if key not in self._configs:
                raise _ArmError(404, "ResourceNotFound", f"The Resource '{_PROVIDER}/partnerConfigurations/default' "
                                                         f"under resource group '{resource_group}' was not found.")
            return _json(self._configs[key])
        authorization = (body.get("properties") or {}).get("partnerAuthorization") or {}
        days = authorization.get("defaultMaximumExpirationTimeInDays") or _DEFAULT_AUTHORIZATION_DAYS
        partners = [self._with_expiry(p, days) for p in authorization.get("authorizedPartnersList") or []]
        existed = key in self._configs
        # A PUT replaces the list: the Bicep's partners are then the only ones authorized (infra/eventgrid.bicep)
        self._configs[key] = {
            "id": self._config_id(resource_group), "name": "default", "type": "Microsoft.EventGrid/partnerConfigurations",
            "location": body.get("location") or "global", "tags": body.get("tags"), "properties": {
                "partnerAuthorization": {"defaultMaximumExpirationTimeInDays": days, "authorizedPartnersList": partners},
                "provisioningState": "Succeeded"}}
        return _json(self._configs[key], 200 if existed else 201)

    def _topic_request(self, method: str, route: str, resource_group: str, names: list[str], body: dict) -> Response:
        if route == "topics":
            return _json({"value": [t.body() for (rg, _), t in self._topics.items() if rg == resource_group.casefold()]})
        topic = self._topics.get((resource_group.casefold(), names[0].casefold()))
        if topic is None:
            raise _ArmError(404, "ResourceNotFound", f"The Resource '{_PROVIDER}/partnerTopics/{names[0]}' under "
                                                     f"resource group '{resource_group}' was not found.")
        match route, method:
            case "topic", "PATCH":
                topic.tags = body.get("tags", topic.tags)
                topic.identity = body.get("identity", topic.identity)
            case "topic/activate", _:
                topic.activation_state = "Activated"
            case "topic/deactivate", _:
                topic.activation_state = "Deactivated"
            case "eventSubscriptions", _:
                return _json({"value": [topic.subscription_body(s) for s in topic.event_subscriptions.values()]})
            case "eventSubscription", _:
                return self._event_subscription(method, topic, names[1], body)
        return _json(topic.body())

    def _event_subscription(self, method: str, topic: _Topic, name: str, body: dict) -> Response:
        key = name.casefold()
        sub = topic.event_subscriptions.get(key)
        if method == "PUT":
            properties = body.get("properties")
            if not isinstance(properties, dict):
                raise _ArmError(400, "InvalidRequestContent", "The event subscription needs its properties.")
            _check_destination(properties)
            _check_identity(topic, properties)
            topic.event_subscriptions[key] = _EventSubscription(name, properties)
            return _json(topic.subscription_body(topic.event_subscriptions[key]), 200 if sub else 201)
        if sub is None:
            if method == "DELETE":
                return Response(status=204)
            raise _ArmError(404, "ResourceNotFound", f"The Resource '{_PROVIDER}/partnerTopics/{topic.name}/"
                                                     f"eventSubscriptions/{name}' was not found.")
        if method == "DELETE":
            del topic.event_subscriptions[key]
            return Response(status=200)
        return _json(topic.subscription_body(sub))


def _check_identity(topic: _Topic, properties: dict) -> None:
    """400 when delivery uses a user-assigned identity the topic does not have: Event Grid "uses the managed
    identity setup on the parent resource" (https://learn.microsoft.com/azure/event-grid/
    managed-service-identity); the wording of the refusal is UNCONFIRMED."""
    identity = ((properties.get("deliveryWithResourceIdentity") or {}).get("identity") or {})
    wanted = identity.get("userAssignedIdentity")
    if identity.get("type") != "UserAssigned" or not wanted:
        return
    attached = {k.casefold() for k in ((topic.identity or {}).get("userAssignedIdentities") or {})}
    if wanted.casefold() not in attached:
        raise _ArmError(400, "BadRequest", f"The user-assigned identity '{wanted}' is not assigned to the partner "
                                           f"topic '{topic.name}'.")


def _check_destination(properties: dict) -> None:
    """400 unless the event subscription names one destination, a StorageQueue one with its queue."""
    with_identity = properties.get("deliveryWithResourceIdentity")
    if bool(properties.get("destination")) == bool(with_identity):
        raise _ArmError(400, "BadRequest", "Exactly one of destination and deliveryWithResourceIdentity is required.")
    destination = (with_identity or properties).get("destination")
    if not isinstance(destination, dict) or not destination.get("endpointType"):
        raise _ArmError(400, "BadRequest", "The destination needs an endpointType.")
    if destination["endpointType"] == "StorageQueue":
        queue = destination.get("properties") or {}
        if not queue.get("resourceId") or not queue.get("queueName"):
            raise _ArmError(400, "BadRequest", "A StorageQueue destination needs resourceId and queueName.")


def azurite_sink(connection_string: str) -> Callable[[str, dict], None]:
    """A ``sink`` writing each CloudEvent as one message (base64 of the UTF-8 JSON, as Event Grid does) to the
    queue of that name in the storage account of ``connection_string``; the queue is created when missing."""
    clients: dict[str, QueueClient] = {}
    lock = threading.Lock()

    def write(queue_name: str, event: dict) -> None:
        with lock:
            client = clients.get(queue_name)
            if client is None:
                client = QueueClient.from_connection_string(connection_string, queue_name,
                                                            message_encode_policy=TextBase64EncodePolicy())
                try:
                    client.create_queue()
                except ResourceExistsError:
                    pass
                clients[queue_name] = client
        client.send_message(orjson.dumps(event).decode())

    return write
