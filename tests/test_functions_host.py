"""The app's functions under the local host stand-in, over Azurite: notification → webhook → queue → worker."""
from __future__ import annotations

import itertools
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from sandbox.assets.emulator import AssetsEmulator
from sandbox.emulators import GRAPH_TOKEN, IMPORT_TOKEN, Sandbox
from sandbox.graph.emulator import GraphEmulator
from sandbox.host.functions_host import FunctionsHost
from sandbox.tenant.generator import generate_tenant
from shared.admin.setup import run_setup
from shared.app import open_backend, sync_full
from shared.produce.subscriptions import stored_subscriptions
from shared.settings import load_settings

SECRET = "sandbox-client-state"


@pytest.fixture
def running(box, app_env, monkeypatch):
    env = {**app_env, "WEBHOOK_CLIENT_STATE": SECRET, "TIMER_SYNC_SCHEDULE": "0 0 0 1 1 *"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(env)
    run_setup(settings)
    sync_full(settings)  # before the host runs: its queue worker would compete for the same messages
    host = FunctionsHost(run_timer=False).start()
    monkeypatch.setenv("WEBHOOK_URL", host.function_url("graph-webhook"))
    # Now the subscriptions: Graph's validation handshake reaches the webhook through the host.
    run_setup(load_settings({**env, "WEBHOOK_URL": host.function_url("graph-webhook")}))
    yield box, host, open_backend(settings)
    host.stop()


def _notify(host: FunctionsHost, backend, uid: str, client_state: str = SECRET, *,
            tenant: str | None = None) -> httpx.Response:
    """POST one user notification as Graph does (``tenant``: the tenant it names, the configured one if None)."""
    subscription = stored_subscriptions(backend.state)["users"]["id"]
    tenant = tenant or os.environ["AZURE_TENANT_ID"]
    body = {"value": [{"subscriptionId": subscription, "changeType": "updated", "clientState": client_state,
                       "resource": f"Users/{uid}", "tenantId": tenant,
                       "resourceData": {"@odata.type": "#Microsoft.Graph.User", "@odata.id": f"Users/{uid}",
                                        "id": uid, "organizationId": tenant}}]}
    return httpx.post(host.function_url("graph-webhook"), json=body, timeout=10)


def _eventually(check, seconds: float = 10.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)


def test_a_change_travels_from_the_tenant_through_graph_notifications_to_assets(running):
    box, host, backend = running
    assert sorted(s["resource"].strip("/") for s in box.graph.subscriptions.live()) == ["groups", "users"]
    uid = sorted(box.tenant.users)[11]
    executions = len(box.assets.executions)
    box.tenant.update_user(uid, jobTitle="Notified")  # the emulator notifies the webhook, as Graph does
    _eventually(lambda: box.assets.find("User", "Entra Object ID", uid).attributes.get("Job Title") == ["Notified"])
    assert len(box.assets.executions) == executions + 1
    assert any(d.kind == "notification" and d.status == 202 for d in box.graph.subscriptions.deliveries)
    _eventually(lambda: backend.queue.depth().messages == 0)
    # Duplicate notifications change nothing more: the delta link has no new changes. (Delta could be lagging
    # them, so each is followed up once more 30 s later - a delayed message, shared/deliver/follow_ups.py.)
    workers = len([i for i in host.invocations if i[0] == "submit_worker"])
    assert _notify(host, backend, uid).status_code == 202 and _notify(host, backend, uid).status_code == 202
    _eventually(lambda: len([i for i in host.invocations if i[0] == "submit_worker"]) >= workers + 1)
    time.sleep(0.3)
    assert len(box.assets.executions) == executions + 1 and backend.queue.depth().messages <= 2


def test_a_forged_notification_queues_nothing(running):
    box, host, backend = running
    handshake = httpx.post(f"{host.url}/graph-webhook", timeout=10,
                           params={"validationToken": "abc <b>", "code": host.function_key})
    assert handshake.status_code == 200 and handshake.text == "abc <b>"
    assert handshake.headers["content-type"].startswith("text/plain")
    workers = len([i for i in host.invocations if i[0] == "submit_worker"])
    assert _notify(host, backend, sorted(box.tenant.users)[12], client_state="guess").status_code == 202
    # The right secret and subscription, but another tenant's id: refused as well (shared.produce.notifications).
    assert _notify(host, backend, sorted(box.tenant.users)[13], tenant=str(uuid.uuid4())).status_code == 202
    time.sleep(0.3)
    assert backend.queue.depth().messages == 0
    assert len([i for i in host.invocations if i[0] == "submit_worker"]) == workers
    # Control: the same notification naming the box's tenant (what AZURE_TENANT_ID says) is queued.
    assert box.settings()["AZURE_TENANT_ID"] == box.tenant.tenant_id
    assert _notify(host, backend, sorted(box.tenant.users)[13]).status_code == 202
    _eventually(lambda: len([i for i in host.invocations if i[0] == "submit_worker"]) > workers)


@pytest.fixture
def bare_host(app_storage, monkeypatch):
    """The host over Azurite with a subscriptions checkpoint, no Graph and no Assets behind it: enough for
    the webhook to queue (and for a wrongly reached worker to show in ``invocations``)."""
    env = {**app_storage, "WEBHOOK_CLIENT_STATE": SECRET, "AZURE_TENANT_ID": TENANT,
           "TIMER_SYNC_SCHEDULE": "0 0 0 1 1 *"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    backend = open_backend(load_settings(env))
    backend.state.commit({}, {"subscriptions": json.dumps({"users": {"id": USERS_SUB, "expires": "2099-01-01T00:00:00Z"}})})
    host = FunctionsHost(run_timer=False).start()
    yield host, backend
    host.stop()


TENANT = "e1ad7f5c-f009-4bbc-9d22-129eb7c92c5e"
USERS_SUB = "acdf75db-b5d6-4811-8995-aa3b5a7e42bd"
NOTIFICATION = {"value": [{"subscriptionId": USERS_SUB, "changeType": "updated", "clientState": SECRET,
                           "resource": "Users/7540ee2b-ec66-4735-babd-ba1b2aa6c584", "tenantId": TENANT,
                           "resourceData": {"id": "7540ee2b-ec66-4735-babd-ba1b2aa6c584"}}]}


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
def test_a_method_the_webhook_does_not_declare_is_404_before_the_key_check_and_nothing_runs(bare_host, method):
    """graph_webhook declares methods=["POST"]: any other method is answered by the host's routing (404, as
    the real host does - see sandbox/host/functions_host.py) - with or without the key, even with a body that a
    POST would queue - and neither the webhook nor the worker runs."""
    host, backend = bare_host
    with httpx.Client(timeout=10) as client:
        for url in (host.function_url("graph-webhook"), f"{host.url}/graph-webhook"):
            response = client.request(method, url, json=NOTIFICATION)
            assert (response.status_code, response.content) == (404, b""), url
    assert host.invocations == []
    assert backend.queue.depth().messages == 0


def test_unknown_routes_are_404_and_the_declared_methods_still_work(bare_host):
    host, _ = bare_host
    with httpx.Client(timeout=10) as client:
        for path in ("nope", "graph-webhook/extra", "status/x"):
            response = client.get(f"{host.url}/{path}", params={"code": host.function_key})
            assert (response.status_code, response.content) == (404, b""), path
        assert client.post(host.function_url("status")).status_code == 404  # status_page declares GET only
        assert host.invocations == []
        # Control: the declared method reaches the function - after the key check.
        assert client.post(f"{host.url}/graph-webhook", json=NOTIFICATION).status_code == 401
        assert host.invocations == []
        assert client.post(host.function_url("graph-webhook"), json=NOTIFICATION).status_code == 202
    assert host.invocations[0][0] == "graph_webhook"


def test_a_burst_of_10000_changes_in_1000_notifications_is_a_handful_of_executions(app_storage, monkeypatch):
    tenant = generate_tenant(users=10_000, seed=3, groups=10, devices=10, applications=5)
    graph, assets = GraphEmulator(tenant, token=GRAPH_TOKEN).start(), AssetsEmulator(token=IMPORT_TOKEN).start()
    host = None
    try:
        box = Sandbox(tenant, graph, assets)
        env = {**box.settings(), **app_storage, "WEBHOOK_CLIENT_STATE": SECRET, "TIMER_SYNC_SCHEDULE": "0 0 0 1 1 *"}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = load_settings(env)
        run_setup(settings)
        sync_full(settings)
        backend = open_backend(settings)
        backend.state.commit({}, {"subscriptions": '{"users": {"id": "s-users", "expires": "2099-01-01T00:00:00Z"}}'})
        host = FunctionsHost(run_timer=False).start()
        first = len(assets.executions)
        ids = sorted(tenant.users)
        for uid in ids:
            tenant.update_user(uid, jobTitle="Burst")
        url = host.function_url("graph-webhook")

        def notify(batch: list[str]) -> int:
            value = [{"subscriptionId": "s-users", "changeType": "updated", "clientState": SECRET,
                      "resource": f"Users/{uid}", "tenantId": tenant.tenant_id, "resourceData": {"id": uid}}
                     for uid in batch]
            return client.post(url, json={"value": value}).status_code

        # 1,000 POSTs of 10 notifications, four at a time (Graph delivers concurrently), as fast as they are taken.
        with httpx.Client(timeout=10) as client, ThreadPoolExecutor(4) as senders:
            statuses = list(senders.map(notify, (ids[i:i + 10] for i in range(0, len(ids), 10))))
        assert statuses == [202] * 1000
        _eventually(lambda: all(o.attributes.get("Job Title") == ["Burst"] for o in assets.objects("User")), 120, 1)
        burst = assets.executions[first:]
        # Coalesced: each worker pass takes everything waiting, so the count follows how many passes the
        # POSTs span (a handful on an idle machine), not the 1,000 notifications. The bound leaves room for a
        # loaded CI machine without letting one execution per notification (or per 10) pass.
        assert 1 <= len(burst) <= 25, len(burst)
        spans = sorted((e.started, e.ended) for e in burst)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # never two at once
    finally:
        if host:
            host.stop()
        graph.stop()
        assets.stop()
