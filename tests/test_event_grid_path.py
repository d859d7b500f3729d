"""NOTIFICATION_DELIVERY=eventgrid end to end, on Azurite under the host stand-in: a change in the tenant travels
Graph -> the emulated Event Grid partner topic -> the Azurite sync queue -> submit_worker -> Assets, with no
webhook; lifecycle events renew or recreate the subscription; check and status say what is missing."""
from __future__ import annotations

import time

import httpx
import pytest

from sandbox.emulators import (
    AZURE_SUBSCRIPTION,
    DELIVERY_IDENTITY,
    MANAGEMENT_TOKEN,
    PARTNER_TOPIC,
    RESOURCE_GROUP,
)
from sandbox.eventgrid.emulator import EventGridEmulator
from sandbox.host.live import CLIENT_STATE, live
from shared.admin.event_grid import event_grid_status
from shared.admin.setup import run_setup
from shared.admin.status import check_all, collect_status
from shared.app import open_backend, sync_full
from shared.errors import EventGridError
from shared.produce.subscriptions import stored_subscriptions
from shared.settings import load_settings
from shared.store import history


@pytest.fixture
def grid_box(box):
    """``box`` with Event Grid: the Graph partner authorized on the sandbox's resource group (the Bicep's job)."""
    grid = EventGridEmulator(AZURE_SUBSCRIPTION, MANAGEMENT_TOKEN).start()
    grid.authorize_graph(RESOURCE_GROUP)
    box.graph.subscriptions.event_grid = box.event_grid = grid
    yield box
    grid.stop()


@pytest.fixture
def grid_env(grid_box, app_env) -> dict[str, str]:
    return {**app_env, **grid_box.event_grid_settings(), "WEBHOOK_CLIENT_STATE": CLIENT_STATE}


@pytest.fixture
def running(grid_box, app_env, grid_env):
    """Synced once, then live: setup subscribed Graph to the partner topic and activated it, the event
    subscription to the queue is deployed (sandbox.host.live.connect_event_grid)."""
    settings = load_settings(grid_env)
    run_setup(load_settings(app_env))  # the schema only: Graph is subscribed once the host runs (live)
    sync_full(settings)  # before the host runs: its queue worker would compete for the same messages
    with live(grid_box, app_env, "eventgrid") as host:
        yield grid_box, host, open_backend(settings), settings


def _eventually(check, seconds: float = 15.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)


def _users_subscription(box) -> dict:
    [sub] = [s for s in box.graph.subscriptions.live() if s["resource"].strip("/") == "users"]
    return sub


def test_a_change_travels_through_event_grid_and_the_queue_to_assets_without_the_webhook(running):
    box, host, backend, settings = running
    sub = _users_subscription(box)
    assert sub["notificationUrl"] == sub["lifecycleNotificationUrl"] == settings.notification_url
    uid = sorted(box.tenant.users)[11]
    executions = len(box.assets.executions)
    box.tenant.update_user(uid, jobTitle="Via Event Grid")
    _eventually(lambda: box.assets.find("User", "Entra Object ID", uid).attributes.get("Job Title")
                == ["Via Event Grid"])
    delivered = [event for _, outcome, event in box.event_grid.published if outcome == "delivered"]
    assert any(e["type"] == "Microsoft.Graph.UserUpdated" and e["subject"] == f"Users/{uid}" for e in delivered)
    assert len(box.assets.executions) == executions + 1
    assert not [name for name, *_ in host.invocations if name == "graph_webhook"]  # no webhook involved
    _eventually(lambda: "eventgrid" in history.read_runs(backend.state)[0]["triggers"])  # written after the commit
    # A soft delete arrives as UserUpdated (the docs), a permanent one as UserDeleted: both mark Deleted.
    soft, hard = [u for u in sorted(box.tenant.users)[40:] if u not in box.tenant.managers.values()][:2]
    seen = len(box.event_grid.published)
    box.tenant.delete_user(soft)
    box.tenant.delete_user(hard, permanent=True)
    _eventually(lambda: all(box.assets.find("User", "Entra Object ID", gone).attributes.get("Status") == ["Deleted"]
                            for gone in (soft, hard)))
    kinds = {e["subject"]: e["type"] for _, o, e in box.event_grid.published[seen:]
             if o == "delivered" and e["subject"].startswith("Users/")}  # (their groups' events too)
    assert kinds == {f"Users/{soft}": "Microsoft.Graph.UserUpdated", f"Users/{hard}": "Microsoft.Graph.UserDeleted"}


def test_reauthorization_renews_and_removal_recreates_the_subscription(running):
    box, _, backend, settings = running
    sid = _users_subscription(box)["id"]
    box.graph.reset_log()
    box.graph.subscriptions.send_lifecycle(sid, "reauthorizationRequired")  # far from expiry: renewed anyway
    _eventually(lambda: any(r.method == "PATCH" and r.path.endswith(f"/subscriptions/{sid}")
                            for r in box.graph.requests))
    assert stored_subscriptions(backend.state)["users"]["id"] == sid
    box.graph.subscriptions.remove_subscription(sid, notify=True)  # subscriptionRemoved, then gone
    _eventually(lambda: stored_subscriptions(backend.state)["users"]["id"] != sid
                and any(s["resource"].strip("/") == "users" for s in box.graph.subscriptions.live()))
    new = _users_subscription(box)
    assert new["id"] != sid and new["notificationUrl"] == settings.notification_url
    # The recreated subscription delivers to the same topic: a change still arrives.
    uid = sorted(box.tenant.users)[12]
    box.tenant.update_user(uid, jobTitle="After Recreation")
    _eventually(lambda: box.assets.find("User", "Entra Object ID", uid).attributes.get("Job Title")
                == ["After Recreation"])


def test_until_delivery_is_complete_check_says_what_is_missing_and_setup_completes_it(grid_box, grid_env):
    box = grid_box
    without_identity = load_settings({k: v for k, v in grid_env.items() if k != "EVENTGRID_DELIVERY_IDENTITY"})
    before = event_grid_status(without_identity)
    assert not before.ready and "does not exist in resource group rg-entra-assets yet" in before.problems[0]
    run_setup(without_identity)  # Graph creates the topic with the subscriptions; setup activates it
    after = event_grid_status(without_identity)
    assert after.activation == "Activated"
    [problem] = after.problems
    assert "no event subscription of partner topic entra-assets-sandbox delivers to the queue" in problem
    assert "set EVENTGRID_DELIVERY_IDENTITY" in problem
    uid = sorted(box.tenant.users)[3]
    box.tenant.update_user(uid, jobTitle="Lost Without A Subscription")
    _eventually(lambda: any(o == "no_subscription" for _, o, _ in box.event_grid.published))
    # With the delivery identity, setup attaches it to the topic and creates the event subscription.
    settings = load_settings(grid_env)
    notes = run_setup(settings).notes
    assert any(n.startswith("Event Grid: event subscription entra-assets-queue created") for n in notes)
    report = check_all(settings)
    assert report.ready, report.lines
    assert "Event Grid: partner topic entra-assets-sandbox Activated, delivering to" in "\n".join(report.lines)
    [created] = [r for r in box.event_grid.requests if r.method == "PUT" and "/eventSubscriptions/" in r.path]
    delivery = created.json["properties"]["deliveryWithResourceIdentity"]
    assert delivery["identity"] == {"type": "UserAssigned", "userAssignedIdentity": DELIVERY_IDENTITY}
    assert delivery["destination"]["properties"]["queueName"] == settings.queue_name
    assert delivery["destination"]["properties"]["resourceId"].endswith("/storageAccounts/devstoreaccount1")
    assert created.json["properties"]["eventDeliverySchema"] == "CloudEventSchemaV1_0"
    assert len(run_setup(settings).notes) == len(notes) - 1  # again: nothing to create (only "activated" gone)
    # Deactivated behind our back: check is not ready and says to run setup; setup activates it again.
    deactivate = (f"{box.event_grid.url}/subscriptions/{AZURE_SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
                  f"Microsoft.EventGrid/partnerTopics/{PARTNER_TOPIC}/deactivate?api-version=2025-02-15")
    assert httpx.post(deactivate, headers={"Authorization": f"Bearer {MANAGEMENT_TOKEN}"}).status_code == 200
    report = check_all(settings)
    assert not report.ready and report.status == "IDLE"  # syncs go on; only the notifications wait
    assert any("is Deactivated, so no events flow: run `entra-assets setup`" in line for line in report.lines)
    assert "Event Grid: partner topic entra-assets-sandbox activated" in run_setup(settings).notes
    assert event_grid_status(settings).ready


def test_setup_refused_the_identity_attachment_says_which_role_is_missing(grid_box, grid_env):
    grid_box.event_grid.deny("Microsoft.EventGrid/partnerTopics/write")
    with pytest.raises(EventGridError, match="may not attach the delivery identity.*Owner of resource group"):
        run_setup(load_settings(grid_env))
    assert not [r for r in grid_box.event_grid.requests if r.method == "PUT" and "/eventSubscriptions/" in r.path]


def test_a_missing_role_is_one_line_naming_it_in_check_and_status(grid_box, grid_env):
    box = grid_box
    settings = load_settings(grid_env)
    run_setup(settings)
    box.event_grid.deny("Microsoft.EventGrid/partnerTopics/read")
    report = check_all(settings)
    assert not report.ready
    [line] = [line for line in report.lines if line.startswith("the app's Azure identity")]
    assert "EventGrid Contributor" in line and "rg-entra-assets" in line
    data = collect_status(settings)
    assert data["event_grid"]["ready"] is False and "EventGrid Contributor" in data["event_grid"]["problems"][0]
    assert MANAGEMENT_TOKEN not in str(data)


def test_the_demo_shows_live_changes_through_event_grid_without_the_webhook(caplog):
    import io

    from rich.console import Console

    from sandbox.tools.demo import run_demo

    out = io.StringIO()
    assert run_demo(users=150, seed=5, console=Console(file=out, width=200), delivery="eventgrid") == 0
    text = " ".join(out.getvalue().split())  # the table's title wraps to its width
    assert "(Graph event → Event Grid → queue → worker" in text
    assert "4 events delivered to the queue, the webhook called 0 times" in text
    assert MANAGEMENT_TOKEN not in caplog.text and CLIENT_STATE not in caplog.text
