"""NOTIFICATION_DELIVERY=eventgrid, the product's side: settings, Graph's CloudEvents read by the worker (the same
checks as the webhook's), subscriptions to the EventGrid: URL and the renewal they force. The path through the
emulated partner topic (Graph -> Event Grid -> queue -> worker -> Assets) is tests/test_event_grid_path.py."""
from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter

import pytest

from shared.admin.setup import run_setup
from shared.app import assets_client, catch_up_planner, event_checks, open_backend, sync_full
from shared.contract.messages import ChangesMessage, LifecycleMessage, NotifiedChange
from shared.contract.notifications import Expected, cloud_event_message, is_cloud_event
from shared.deliver.drain import drain
from shared.deliver.worker import push_queued
from shared.errors import SettingsError
from shared.settings import load_settings
from shared.store.ports import QueueDepth

TENANT = "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"
AZURE_SUBSCRIPTION = "8a8a8a8a-4b4b-4c4c-4d4d-12e12e12e12e"
SECRET = "sandbox-client-state"
GRID = {"NOTIFICATION_DELIVERY": "eventgrid", "EVENTGRID_PARTNER_TOPIC": "entra-assets-abc",
        "EVENTGRID_SUBSCRIPTION_ID": AZURE_SUBSCRIPTION, "EVENTGRID_RESOURCE_GROUP": "rg-entra-assets",
        "EVENTGRID_LOCATION": "westeurope", "WEBHOOK_CLIENT_STATE": SECRET, "AZURE_TENANT_ID": TENANT}


def event(kind: str, uid: str, subscription: str, *, secret: str = SECRET, tenant: str = TENANT,
          when: str = "2026-12-07T10:00:00.1234567Z", data: dict | None = None) -> dict:
    """A CloudEvent as Graph publishes it to the partner topic (https://learn.microsoft.com/azure/event-grid/
    microsoft-entra-events), ``kind`` e.g. "UserUpdated"."""
    resource = ("Users" if kind.startswith("User") else "Groups") + f"/{uid}"
    odata = "#Microsoft.Graph.User" if kind.startswith("User") else "#Microsoft.Graph.Group"
    return {"id": str(uuid.uuid4()), "type": f"Microsoft.Graph.{kind}", "source": f"/tenants/{tenant}/applications/x",
            "subject": resource, "time": when, "datacontenttype": "application/json", "specversion": "1.0",
            "data": data if data is not None else {
                "changeType": "deleted" if kind.endswith("Deleted") else "updated", "clientState": secret,
                "resource": resource, "subscriptionId": subscription, "tenantId": tenant,
                "subscriptionExpirationDateTime": "2026-12-30T00:00:00Z",
                "resourceData": {"@odata.type": odata, "@odata.id": resource, "id": uid, "organizationId": tenant,
                                 "eventTime": when, "sequenceNumber": 1}}}


EXPECTED = Expected.of(SECRET, {"sub-users": "users", "sub-groups": "groups"}, TENANT)


# ---------------------------------------------------------------- the contract: one event, one message


def test_user_and_group_events_become_the_changes_a_webhook_post_would_queue():
    counts = Counter()
    updated = cloud_event_message(event("UserUpdated", "u1", "sub-users"), EXPECTED, 2e9, counts)
    deleted = cloud_event_message(event("UserDeleted", "u2", "sub-users"), EXPECTED, 2e9, counts)
    group = cloud_event_message(event("GroupUpdated", "g1", "sub-groups"), EXPECTED, 2e9, counts)
    assert updated == ChangesMessage((NotifiedChange("users", "u1", "updated"),),
                                     dt.datetime(2026, 12, 7, 10, 0, 0, 123456, dt.UTC).timestamp(), 0, "eventgrid")
    assert deleted.changes == (NotifiedChange("users", "u2", "deleted"),)
    assert group.changes == (NotifiedChange("groups", "g1", "updated"),)
    assert counts["accepted"] == 3


def test_an_event_is_never_dated_after_it_was_read():
    future = cloud_event_message(event("UserUpdated", "u1", "sub-users", when="2099-01-01T00:00:00Z"),
                                 EXPECTED, 1_000.0, Counter())
    assert future.read_time == 1_000.0
    unreadable = cloud_event_message(event("UserUpdated", "u1", "sub-users", when="yesterday"), EXPECTED, 7.0,
                                     Counter())
    assert unreadable.read_time == 7.0


@pytest.mark.parametrize(("kind", "data", "expected"), [
    ("SubscriptionReauthorizationRequired", None, "reauthorizationRequired"),   # the event named by the type
    ("SubscriptionRemoved", None, "subscriptionRemoved"),
    ("subscriptionReauthorizationRequired", "missed", "missed"),                 # the data's own word wins
])
def test_lifecycle_events_are_read_from_the_data_or_else_the_type(kind, data, expected):
    body = {"id": "1", "specversion": "1.0", "type": f"microsoft.graph.{kind}", "time": "2026-12-07T10:00:00Z",
            "data": {"subscriptionId": "sub-groups", "clientState": SECRET, "tenantId": TENANT,
                     **({"lifecycleEvent": data} if data else {})}}
    message = cloud_event_message(body, EXPECTED, 2e9, Counter())
    assert message == LifecycleMessage(expected, "sub-groups", message.received, "groups", "eventgrid")


@pytest.mark.parametrize(("changes", "refusal"), [
    ({"secret": "guess"}, "forged"),
    ({"tenant": str(uuid.uuid4())}, "foreign_tenant"),
    ({"subscription": "someone-elses"}, "unknown_subscription"),
])
def test_events_that_are_not_ours_become_nothing(changes, refusal):
    counts = Counter()
    body = event("UserUpdated", "u1", changes.pop("subscription", "sub-users"), **changes)
    assert cloud_event_message(body, EXPECTED, 2e9, counts) is None
    assert counts[refusal] == 1 and counts["accepted"] == 0


def test_other_event_types_and_bodies_are_refused_and_ours_are_not_events():
    counts = Counter()
    other = {**event("UserUpdated", "u1", "sub-users"), "type": "Microsoft.Storage.BlobCreated"}
    assert cloud_event_message(other, EXPECTED, 2e9, counts) is None and counts["event_type_unknown"] == 1
    no_data = {**event("UserUpdated", "u1", "sub-users"), "data": "text"}
    assert cloud_event_message(no_data, EXPECTED, 2e9, counts) is None and counts["malformed"] == 1
    group_by_users = event("GroupUpdated", "g1", "sub-users")  # a users subscription never notifies a group
    assert cloud_event_message(group_by_users, EXPECTED, 2e9, counts) is None and counts["resource_mismatch"] == 1
    assert is_cloud_event(event("UserUpdated", "u1", "s"))
    assert not is_cloud_event(ChangesMessage((NotifiedChange("users", "u1"),), 1.0).body())


# ---------------------------------------------------------------- settings


def test_event_grid_settings_name_the_partner_topic_in_the_notification_url():
    settings = load_settings(GRID)
    assert settings.event_grid
    assert settings.notification_url == (
        f"EventGrid:?azuresubscriptionid={AZURE_SUBSCRIPTION}&resourcegroup=rg-entra-assets"
        "&partnertopic=entra-assets-abc&location=westeurope")
    assert load_settings({}).notification_url is None and not load_settings({}).event_grid


def test_event_grid_settings_report_every_problem_by_name():
    with pytest.raises(SettingsError) as refused:
        load_settings({"NOTIFICATION_DELIVERY": "eventgrid", "EVENTGRID_LOCATION": "West Europe",
                       "EVENTGRID_DELIVERY_IDENTITY": "id-eventgrid-abc",
                       "WEBHOOK_URL": "https://example.org/api/graph-webhook", "AZURE_TENANT_ID": "contoso.com"})
    text = str(refused.value)
    for name in ("EVENTGRID_PARTNER_TOPIC is required", "EVENTGRID_SUBSCRIPTION_ID is required",
                 "EVENTGRID_RESOURCE_GROUP is required", "EVENTGRID_LOCATION 'West Europe' is not valid",
                 "WEBHOOK_URL is set but NOTIFICATION_DELIVERY=eventgrid", "WEBHOOK_CLIENT_STATE is required",
                 "AZURE_TENANT_ID must be the tenant's id",
                 "EVENTGRID_DELIVERY_IDENTITY 'id-eventgrid-abc' must be the resource id of a user-assigned"):
        assert name in text
    with pytest.raises(SettingsError, match="NOTIFICATION_DELIVERY 'pigeon' must be webhook or eventgrid"):
        load_settings({"NOTIFICATION_DELIVERY": "pigeon"})


# ---------------------------------------------------------------- the worker reads events from the queue


@pytest.fixture
def grid_settings(box, tmp_path):
    """The sandbox synced once, with Event Grid settings and our two subscriptions known (as setup leaves them;
    the subscriptions themselves are the path test's)."""
    env = {**box.settings(), **GRID, "AZURE_TENANT_ID": box.tenant.tenant_id, "ENTRA_ASSETS_HOME": str(tmp_path)}
    settings = load_settings(env)
    run_setup(load_settings({k: v for k, v in env.items() if k not in GRID or k == "AZURE_TENANT_ID"}))
    sync_full(settings)
    open_backend(settings).state.commit({}, {"subscriptions": '{"groups": {"id": "sub-groups", "expires": null}, '
                                                              '"users": {"id": "sub-users", "expires": null}}'})
    return settings


def test_an_event_on_the_queue_is_caught_up_into_assets(box, grid_settings):
    backend = open_backend(grid_settings)
    uid = sorted(box.tenant.users)[7]
    box.tenant.update_user(uid, jobTitle="Through Event Grid")
    backend.queue.send(event("UserUpdated", uid, "sub-users", tenant=box.tenant.tenant_id))
    executions = len(box.assets.executions)
    result = push_queued(backend.queue, backend.payloads, backend.state, _assets(grid_settings),
                         catch_up=_catch_up(grid_settings, backend), events=event_checks(grid_settings, backend.state))
    assert result.messages == 1 and result.triggers["eventgrid"] == 1
    assert box.assets.find("User", "Entra Object ID", uid).attributes["Job Title"] == ["Through Event Grid"]
    assert len(box.assets.executions) == executions + 1
    assert backend.queue.depth().messages <= 1  # at most the follow-up of the notified id (follow_ups.py)


def test_a_refused_event_is_acknowledged_not_poisoned_and_starts_nothing(box, grid_settings):
    backend = open_backend(grid_settings)
    uid = sorted(box.tenant.users)[8]
    backend.queue.send(event("UserUpdated", uid, "sub-users", secret="guess", tenant=box.tenant.tenant_id))
    backend.queue.send(event("UserUpdated", uid, "sub-users", tenant=box.tenant.tenant_id))  # control: ours
    events = event_checks(grid_settings, backend.state)
    drained = drain(backend.queue, None, events)
    assert [d.message.trigger for d in drained] == ["eventgrid"]   # only ours
    assert backend.queue.depth() == QueueDepth(1, 0)  # ours is in flight; the forged one deleted, not poisoned
    # With Event Grid delivery off, every event is refused the same way.
    backend.queue.send(event("UserUpdated", uid, "sub-users", tenant=box.tenant.tenant_id))
    assert drain(backend.queue, None, None) == [] and backend.queue.depth().poison == 0


def _assets(settings):
    return assets_client(settings)


def _catch_up(settings, backend):
    return catch_up_planner(settings, backend.state, lambda stage, n: None)[0]
