"""The Event Grid emulator (sandbox/eventgrid/emulator.py): its ARM endpoints through the real
``azure-mgmt-eventgrid`` client, and Graph subscriptions delivering through it (``EventGrid:`` URLs)."""
from __future__ import annotations

import base64
import datetime as dt
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.mgmt.eventgrid import EventGridManagementClient
from azure.mgmt.eventgrid import models as eg
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from sandbox.emulators import GRAPH_TOKEN
from sandbox.eventgrid.emulator import GRAPH_PARTNER_ID, EventGridEmulator, azurite_sink
from sandbox.graph.emulator import GraphEmulator
from sandbox.graph.subscriptions import wait_for
from sandbox.tenant.generator import generate_tenant
from sandbox.tenant.model import Tenant

AZURE_SUB = "3f2b9c1e-8a47-4d2b-9e61-5c0d7a8b9f12"
RG = "rg-entra-assets"
TOPIC = "entra-assets-graph"
QUEUE = "entra-sync"
STORAGE_ID = f"/subscriptions/{AZURE_SUB}/resourceGroups/{RG}/providers/Microsoft.Storage/storageAccounts/stsandbox"
SECRET = "client-state-secret"
HTTP = {"enforce_https": False}   # azure-core refuses a bearer token over plain http otherwise
TOPIC_ID = f"/subscriptions/{AZURE_SUB}/resourceGroups/{RG}/providers/Microsoft.EventGrid/partnerTopics/{TOPIC}"


def eventgrid_url(**override: str) -> str:
    params = {"azuresubscriptionid": AZURE_SUB, "resourcegroup": RG, "partnertopic": TOPIC, "location": "westeurope",
              **override}
    return "EventGrid:?" + "&".join(f"{k}={v}" for k, v in params.items() if v is not None)


class Credential:
    """A TokenCredential handing out a fixed token."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


@pytest.fixture
def tenant() -> Tenant:
    return generate_tenant(users=50, seed=1)


@pytest.fixture
def grid() -> Iterator[EventGridEmulator]:
    emulator = EventGridEmulator(AZURE_SUB).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def graph(tenant, grid) -> Iterator[GraphEmulator]:
    emulator = GraphEmulator(tenant, token=GRAPH_TOKEN).start()
    emulator.subscriptions.event_grid = grid
    yield emulator
    emulator.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(headers={"Authorization": f"Bearer {GRAPH_TOKEN}"}, timeout=20) as client:
        yield client


@pytest.fixture
def arm(grid) -> Iterator[EventGridManagementClient]:
    with EventGridManagementClient(Credential(grid.token), AZURE_SUB, base_url=grid.url) as client:
        yield client


@pytest.fixture
def sent(grid) -> list[tuple[str, dict]]:
    """What Event Grid wrote to queues: (queue name, CloudEvent)."""
    written: list[tuple[str, dict]] = []
    grid.sink = lambda queue, event: written.append((queue, event))
    return written


def subscribe(graph: GraphEmulator, http: httpx.Client, resource: str = "users", **extra: str) -> httpx.Response:
    expires = dt.datetime.fromtimestamp(time.time() + 86400, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"changeType": "updated,deleted", "notificationUrl": eventgrid_url(),
            "lifecycleNotificationUrl": eventgrid_url(), "resource": resource, "expirationDateTime": expires,
            "clientState": SECRET, **extra}
    return http.post(f"{graph.base_url}/subscriptions", json=body)


def graph_error(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "InvalidRequest"
    return response.json()["error"]["message"]


def topic_ready(grid: EventGridEmulator, arm: EventGridManagementClient) -> None:
    """What setup and the second deployment do: activate the topic, subscribe the sync queue to it."""
    arm.partner_topics.activate(RG, TOPIC, **HTTP)
    grid.add_queue_subscription(RG, TOPIC, "entra-assets-queue", QUEUE, STORAGE_ID)


# -- ARM through azure-mgmt-eventgrid ------------------------------------------------------------------------

def test_graph_creates_the_topic_that_the_sdk_reads_activates_and_subscribes(graph, grid, arm, http):
    partner = eg.Partner(partner_registration_immutable_id=GRAPH_PARTNER_ID, partner_name="MicrosoftGraphAPI")
    config = arm.partner_configurations.begin_create_or_update(RG, eg.PartnerConfiguration(
        location="global", partner_authorization=eg.PartnerAuthorization(authorized_partners_list=[partner])),
        **HTTP).result()
    assert config.provisioning_state == "Succeeded"
    assert arm.partner_configurations.get(RG, **HTTP).partner_authorization.authorized_partners_list[0] \
        .authorization_expiration_time_in_utc > dt.datetime.now(dt.UTC)   # the default days from now
    assert subscribe(graph, http).status_code == 201
    assert graph.subscriptions.deliveries == []   # no validation handshake for Event Grid

    topic = arm.partner_topics.get(RG, TOPIC, **HTTP)
    assert (topic.id, topic.location, topic.activation_state, topic.provisioning_state) == (
        TOPIC_ID, "westeurope", "NeverActivated", "Succeeded")
    assert topic.source == graph.subscriptions.source == \
        f"/tenants/{graph.tenant.tenant_id}/applications/{graph.subscriptions.application_id}"
    assert topic.partner_registration_immutable_id == GRAPH_PARTNER_ID
    assert [t.name for t in arm.partner_topics.list_by_resource_group(RG, **HTTP)] == [TOPIC]
    assert arm.partner_topics.activate(RG, TOPIC, **HTTP).activation_state == "Activated"
    assert arm.partner_topics.get(RG, TOPIC, **HTTP).activation_state == "Activated"

    destination = eg.StorageQueueEventSubscriptionDestination(resource_id=STORAGE_ID, queue_name=QUEUE,
                                                              queue_message_time_to_live_in_seconds=86400)
    subscription = eg.EventSubscription(
        event_delivery_schema="CloudEventSchemaV1_0", delivery_with_resource_identity=eg.DeliveryWithResourceIdentity(
            identity=eg.EventSubscriptionIdentity(type="UserAssigned", user_assigned_identity="/identities/x"),
            destination=destination))
    # Event Grid delivers with an identity of the topic's own: not attached yet, refused (the stricter reading).
    with pytest.raises(HttpResponseError, match="is not assigned to the partner topic"):
        arm.partner_topic_event_subscriptions.begin_create_or_update(RG, TOPIC, "to-queue", subscription,
                                                                     **HTTP).result()
    arm.partner_topics.update(RG, TOPIC, eg.PartnerTopicUpdateParameters(identity=eg.IdentityInfo(
        type="UserAssigned", user_assigned_identities={"/identities/x": eg.UserIdentityProperties()})), **HTTP)
    created = arm.partner_topic_event_subscriptions.begin_create_or_update(RG, TOPIC, "to-queue", subscription,
                                                                           **HTTP).result()
    assert (created.provisioning_state, created.topic) == ("Succeeded", TOPIC_ID)
    listed = list(arm.partner_topic_event_subscriptions.list_by_partner_topic(RG, TOPIC, **HTTP))
    assert [s.name for s in listed] == ["to-queue"]
    got = arm.partner_topic_event_subscriptions.get(RG, TOPIC, "to-queue", **HTTP)
    assert got.delivery_with_resource_identity.destination.queue_name == QUEUE
    assert got.event_delivery_schema == "CloudEventSchemaV1_0"
    arm.partner_topic_event_subscriptions.begin_delete(RG, TOPIC, "to-queue", **HTTP).result()
    assert list(arm.partner_topic_event_subscriptions.list_by_partner_topic(RG, TOPIC, **HTTP)) == []
    assert arm.partner_topics.deactivate(RG, TOPIC, **HTTP).activation_state == "Deactivated"
    assert all(r.query == {"api-version": "2025-02-15"} for r in grid.requests)


def test_a_wrong_token_is_401(grid):
    with (EventGridManagementClient(Credential("not-the-token"), AZURE_SUB, base_url=grid.url) as client,
          pytest.raises(ClientAuthenticationError) as info):
        client.partner_topics.get(RG, TOPIC, **HTTP)
    assert info.value.status_code == 401 and info.value.error.code == "AuthenticationFailed"


def test_a_denied_action_is_403_in_arms_wording_until_allowed(graph, grid, arm, http):
    grid.authorize_graph(RG)
    assert subscribe(graph, http).status_code == 201
    grid.deny("Microsoft.EventGrid/partnerTopics/activate/action")
    with pytest.raises(HttpResponseError) as info:
        arm.partner_topics.activate(RG, TOPIC, **HTTP)
    assert info.value.status_code == 403 and info.value.error.code == "AuthorizationFailed"
    assert info.value.error.message == (
        f"The client '{grid.principal_id}' with object id '{grid.principal_id}' does not have authorization to "
        f"perform action 'Microsoft.EventGrid/partnerTopics/activate/action' over scope '{TOPIC_ID}' or the scope "
        "is invalid. If access was recently granted, please refresh your credentials.")
    assert arm.partner_topics.get(RG, TOPIC, **HTTP).activation_state == "NeverActivated"   # reading is allowed
    grid.deny("Microsoft.EventGrid/partnerTopics/eventSubscriptions/read")
    with pytest.raises(HttpResponseError) as info:
        list(arm.partner_topic_event_subscriptions.list_by_partner_topic(RG, TOPIC, **HTTP))
    assert info.value.status_code == 403
    grid.allow("Microsoft.EventGrid/partnerTopics/activate/action")
    assert arm.partner_topics.activate(RG, TOPIC, **HTTP).activation_state == "Activated"


def test_unknown_topic_and_event_subscription_are_404(grid, arm):
    with pytest.raises(ResourceNotFoundError) as info:
        arm.partner_topics.get(RG, "no-such-topic", **HTTP)
    assert info.value.error.code == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError):
        arm.partner_topics.activate(RG, "no-such-topic", **HTTP)
    with pytest.raises(ResourceNotFoundError):
        arm.partner_configurations.get(RG, **HTTP)


def test_api_version_and_subscription_are_checked(grid):
    headers = {"Authorization": f"Bearer {grid.token}"}
    path = f"/resourceGroups/{RG}/providers/Microsoft.EventGrid/partnerTopics"
    answers = {
        "InvalidApiVersionParameter": httpx.get(f"{grid.url}/subscriptions/{AZURE_SUB}{path}?api-version=2022-06-15",
                                                headers=headers),
        "MissingApiVersionParameter": httpx.get(f"{grid.url}/subscriptions/{AZURE_SUB}{path}", headers=headers),
        "SubscriptionNotFound": httpx.get(f"{grid.url}/subscriptions/00000000-0000-0000-0000-000000000000{path}"
                                          "?api-version=2025-02-15", headers=headers),
        "AuthenticationFailed": httpx.get(f"{grid.url}/subscriptions/{AZURE_SUB}{path}?api-version=2025-02-15"),
    }
    assert {code: (r.status_code, r.json()["error"]["code"]) for code, r in answers.items()} == {
        "InvalidApiVersionParameter": (400, "InvalidApiVersionParameter"),
        "MissingApiVersionParameter": (400, "MissingApiVersionParameter"),
        "SubscriptionNotFound": (404, "SubscriptionNotFound"), "AuthenticationFailed": (401, "AuthenticationFailed")}
    ok = httpx.get(f"{grid.url}/subscriptions/{AZURE_SUB}{path}?api-version=2025-02-15", headers=headers)
    assert (ok.status_code, ok.json()) == (200, {"value": []})


# -- Graph subscriptions with EventGrid: URLs -----------------------------------------------------------------

def test_without_the_graph_partner_authorized_nothing_is_created(graph, grid, arm, http):
    message = graph_error(subscribe(graph, http))
    assert "'MicrosoftGraphAPI' (Microsoft Graph API) is not authorized" in message and RG in message
    # another partner's id under Graph's name does not authorize Graph
    arm.partner_configurations.authorize_partner(RG, eg.Partner(
        partner_name="MicrosoftGraphAPI", partner_registration_immutable_id="11111111-1111-1111-1111-111111111111"),
        **HTTP)
    graph_error(subscribe(graph, http))
    assert list(arm.partner_topics.list_by_resource_group(RG, **HTTP)) == []
    assert graph.subscriptions.live() == []
    grid.authorize_graph(RG, days=-1)   # expired
    graph_error(subscribe(graph, http))


@pytest.mark.parametrize("url, fragment", [
    (eventgrid_url(location=None), "needs the parameter 'location'"),
    (eventgrid_url(partnertopic=""), "needs the parameter 'partnertopic'"),
    (eventgrid_url() + "&extra=1", "unknown parameter 'extra'"),
    ("EventGrid:azuresubscriptionid=x", "an Event Grid URL has the form"),
])
def test_an_incomplete_eventgrid_url_is_400(graph, grid, http, url, fragment):
    grid.authorize_graph(RG)
    message = graph_error(subscribe(graph, http, notificationUrl=url, lifecycleNotificationUrl=eventgrid_url()))
    assert "notificationUrl" in message and fragment in message


def test_both_urls_must_name_one_topic_and_the_scheme_is_case_insensitive(graph, grid, http):
    grid.authorize_graph(RG)
    message = graph_error(subscribe(graph, http, lifecycleNotificationUrl=eventgrid_url(partnertopic="other")))
    assert "same Event Grid partner topic" in message
    assert subscribe(graph, http, notificationUrl="eventgrid" + eventgrid_url()[len("EventGrid"):]).status_code == 201


def test_eventgrid_urls_are_refused_without_an_event_grid(graph, http):
    graph.subscriptions.event_grid = None
    assert "Event Grid delivery is not available in this sandbox" in graph_error(subscribe(graph, http))


def test_a_user_change_is_dropped_before_activation_and_queued_after(graph, grid, arm, http, sent):
    grid.authorize_graph(RG)
    sid = subscribe(graph, http).json()["id"]
    tenant, subs = graph.tenant, graph.subscriptions
    uid = list(tenant.users)[3]
    tenant.update_user(uid, jobTitle="Astronaut")
    assert wait_for(lambda: grid.published)
    assert [outcome for _, outcome, _ in grid.published] == ["not_activated"] and sent == []
    assert [(d.kind, d.ok, d.error) for d in subs.deliveries] == [("notification", False, "not_activated")]

    topic_ready(grid, arm)
    tenant.update_user(uid, jobTitle="Cosmonaut")
    assert wait_for(lambda: len(sent) == 1)
    queue, event = sent[0]
    assert queue == QUEUE and grid.published[-1][1:] == ("delivered", event)
    assert set(event) == {"id", "type", "source", "subject", "time", "datacontenttype", "specversion", "data"}
    assert (event["type"], event["source"], event["subject"], event["datacontenttype"], event["specversion"]) == (
        "Microsoft.Graph.UserUpdated", subs.source, f"Users/{uid}", "application/json", "1.0")
    data = event["data"]
    resource_data = data.pop("resourceData")
    assert data == {"changeType": "updated", "clientState": SECRET, "resource": f"Users/{uid}", "subscriptionId": sid,
                    "subscriptionExpirationDateTime": subs.live()[0]["expirationDateTime"],
                    "tenantId": tenant.tenant_id}
    assert resource_data.pop("sequenceNumber") == 2   # the second event of this app
    assert abs(dt.datetime.fromisoformat(resource_data.pop("eventTime")).timestamp() - time.time()) < 5
    assert resource_data == {"@odata.type": "#Microsoft.Graph.User", "@odata.id": f"Users/{uid}", "id": uid,
                             "organizationId": tenant.tenant_id}
    delivery = subs.deliveries[-1]
    assert (delivery.kind, delivery.url, delivery.subscription_ids, delivery.ok, delivery.payload) == (
        "notification", eventgrid_url(), (sid,), True, event)
    assert delivery.observed <= delivery.sent + delivery.elapsed


def test_deletes_give_user_deleted_only_when_permanent(graph, grid, arm, http, sent):
    grid.authorize_graph(RG)
    subscribe(graph, http)
    topic_ready(grid, arm)
    soft, hard = list(graph.tenant.users)[5:7]

    def event_of(uid: str) -> dict | None:   # a delete also notifies the reports whose manager link went
        return next((e for _, e in sent if e["subject"] == f"Users/{uid}"), None)
    graph.tenant.delete_user(soft)
    assert wait_for(lambda: event_of(soft))
    graph.tenant.delete_user(hard, permanent=True)
    assert wait_for(lambda: event_of(hard))
    assert [(e["type"], e["data"]["changeType"]) for e in (event_of(soft), event_of(hard))] == [
        ("Microsoft.Graph.UserUpdated", "updated"), ("Microsoft.Graph.UserDeleted", "deleted")]


def test_a_group_change_gives_group_updated(graph, grid, arm, http, sent):
    grid.authorize_graph(RG)
    assert subscribe(graph, http, resource="groups").status_code == 201
    topic_ready(grid, arm)
    gid = next(iter(graph.tenant.groups))
    graph.tenant.update_group(gid, description="renamed")
    assert wait_for(lambda: sent)
    assert [(e["type"], e["subject"], e["data"]["resourceData"]["@odata.type"]) for _, e in sent] == [
        ("Microsoft.Graph.GroupUpdated", f"Groups/{gid}", "#Microsoft.Graph.Group")]


def test_lifecycle_events_go_to_the_topic(graph, grid, arm, http, sent):
    grid.authorize_graph(RG)
    sid = subscribe(graph, http).json()["id"]
    topic_ready(grid, arm)
    delivery = graph.subscriptions.send_lifecycle(sid)
    graph.subscriptions.send_lifecycle(sid, "missed")
    assert delivery.kind == "lifecycle" and delivery.ok and delivery.url == eventgrid_url()
    assert [(e["type"], e["subject"], e["data"]["lifecycleEvent"]) for _, e in sent] == [
        ("Microsoft.Graph.SubscriptionReauthorizationRequired", f"Subscriptions/{sid}", "reauthorizationRequired"),
        ("Microsoft.Graph.SubscriptionMissed", f"Subscriptions/{sid}", "missed")]
    assert sent[0][1]["data"] == {"subscriptionId": sid, "subscriptionExpirationDateTime": delivery.payload["data"][
        "subscriptionExpirationDateTime"], "tenantId": graph.tenant.tenant_id,
        "organizationId": graph.tenant.tenant_id, "clientState": SECRET, "lifecycleEvent": "reauthorizationRequired"}
    with pytest.raises(ValueError):
        graph.subscriptions.send_lifecycle(sid, "somethingElse")


def test_patch_to_another_topic_creates_it_without_a_handshake(graph, grid, arm, http, sent):
    grid.authorize_graph(RG)
    sid = subscribe(graph, http, notificationUrl=eventgrid_url(partnertopic="first"),
                    lifecycleNotificationUrl=eventgrid_url(partnertopic="first")).json()["id"]
    message = graph_error(http.patch(f"{graph.base_url}/subscriptions/{sid}", json={"notificationUrl": eventgrid_url()}))
    assert "same Event Grid partner topic" in message   # the lifecycle URL still names "first"
    sid = subscribe(graph, http, lifecycleNotificationUrl=None, resource="groups").json()["id"]
    http.patch(f"{graph.base_url}/subscriptions/{sid}", json={"notificationUrl": eventgrid_url(partnertopic="moved")})
    assert arm.partner_topics.get(RG, "moved", **HTTP).activation_state == "NeverActivated"
    assert graph.subscriptions.deliveries == []


def test_filters_and_a_failing_sink_are_outcomes(graph, grid, arm, http):
    grid.authorize_graph(RG)
    subscribe(graph, http)
    arm.partner_topics.activate(RG, TOPIC, **HTTP)
    event = {"id": "1", "type": "Microsoft.Graph.UserUpdated"}
    assert grid.publish(AZURE_SUB, RG, TOPIC, event) == "no_subscription"
    grid.add_queue_subscription(RG, TOPIC, "q", QUEUE, STORAGE_ID)
    assert grid.publish(AZURE_SUB, RG, TOPIC, event) == "no_sink"

    def broken(queue: str, event: dict) -> None:
        raise OSError("queue unreachable")
    grid.sink = broken
    assert grid.publish(AZURE_SUB, RG, TOPIC, event) == "sink_failed"
    assert grid.publish(AZURE_SUB, RG, "other", event) == "no_topic"
    grid.sink = lambda queue, event: None
    arm.partner_topic_event_subscriptions.begin_create_or_update(RG, TOPIC, "q", eg.EventSubscription(
        destination=eg.StorageQueueEventSubscriptionDestination(resource_id=STORAGE_ID, queue_name=QUEUE),
        filter=eg.EventSubscriptionFilter(included_event_types=["Microsoft.Graph.GroupUpdated"])), **HTTP).result()
    assert grid.publish(AZURE_SUB, RG, TOPIC, event) == "no_subscription"
    assert grid.publish(AZURE_SUB, RG, TOPIC, {**event, "type": "Microsoft.Graph.GroupUpdated"}) == "delivered"
    assert [o for _, o, _ in grid.published] == ["no_subscription", "no_sink", "sink_failed", "no_topic",
                                                 "no_subscription", "delivered"]


def test_azurite_sink_writes_base64_json_messages(azurite):
    sink = azurite_sink(azurite.connection_string)
    queue = f"eg{time.time_ns()}"
    event = {"id": "e1", "type": "Microsoft.Graph.UserUpdated", "data": {"resource": "Users/é"}}
    sink(queue, event)
    sink(queue, {**event, "id": "e2"})
    raw = QueueClient.from_connection_string(azurite.connection_string, queue).peek_messages(max_messages=5)
    assert [json.loads(base64.b64decode(m.content)) for m in raw] == [event, {**event, "id": "e2"}]
    decoded = QueueClient.from_connection_string(azurite.connection_string, queue,
                                                 message_decode_policy=TextBase64DecodePolicy())
    assert [json.loads(m.content)["id"] for m in decoded.receive_messages()] == ["e1", "e2"]
