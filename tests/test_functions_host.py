"""The app's functions under the local host stand-in, over Azurite: notification → webhook → queue → worker."""
from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from sandbox.emulators import Sandbox
from sandbox.functions_host import FunctionsHost
from shared.runtime import open_backend, sync_full
from shared.settings import load_settings
from shared.setup import run_setup

SECRET = "sandbox-client-state"
SUBSCRIPTION = "7f0e5a3c-1d2b-4c6e-8f9a-0b1c2d3e4f5a"


@pytest.fixture
def running(tenant, graph_emulator, assets_emulator, azurite, monkeypatch):
    box = Sandbox(tenant, graph_emulator, assets_emulator)
    env = {**box.settings(), "AzureWebJobsStorage": azurite.connection_string,
           "SYNC_QUEUE_NAME": f"q{uuid.uuid4().hex[:12]}", "WEBHOOK_CLIENT_STATE": SECRET,
           "WEBHOOK_URL": "http://127.0.0.1:1/api/graph-webhook", "TIMER_SYNC_SCHEDULE": "0 0 0 1 1 *"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(env)
    run_setup(settings)
    sync_full(settings)
    backend = open_backend(settings)
    backend.state.commit({}, {"subscriptions": json.dumps({"users": {"id": SUBSCRIPTION, "expires": "2099-01-01"}})})
    host = FunctionsHost(run_timer=False).start()
    yield box, host, backend
    host.stop()


def _notify(host: FunctionsHost, uid: str, client_state: str = SECRET) -> httpx.Response:
    body = {"value": [{"subscriptionId": SUBSCRIPTION, "changeType": "updated", "clientState": client_state,
                       "resource": f"Users/{uid}", "tenantId": "t",
                       "resourceData": {"@odata.type": "#Microsoft.Graph.User", "@odata.id": f"Users/{uid}",
                                        "id": uid}}]}
    return httpx.post(f"{host.url}/graph-webhook", json=body, timeout=10)


def _eventually(check, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_change_travels_from_notification_to_assets(running):
    box, host, backend = running
    handshake = httpx.post(f"{host.url}/graph-webhook", params={"validationToken": "abc <b>"}, timeout=10)
    assert handshake.status_code == 200 and handshake.text == "abc <b>"
    assert handshake.headers["content-type"].startswith("text/plain")
    uid = sorted(box.tenant.users)[11]
    box.tenant.update_user(uid, jobTitle="Notified")
    executions = len(box.assets.executions)
    assert _notify(host, uid).status_code == 202
    _eventually(lambda: box.assets.find("User", "Entra Object ID", uid).attributes.get("Job Title") == ["Notified"])
    assert len(box.assets.executions) == executions + 1
    _eventually(lambda: backend.queue.depth().messages == 0)
    # Duplicate and repeated notifications change nothing more: the delta link has no new changes.
    assert _notify(host, uid).status_code == 202 and _notify(host, uid).status_code == 202
    _eventually(lambda: backend.queue.depth().messages == 0)
    time.sleep(0.3)
    assert len(box.assets.executions) == executions + 1


def test_a_forged_notification_queues_nothing(running):
    box, host, backend = running
    uid = sorted(box.tenant.users)[12]
    assert _notify(host, uid, client_state="guess").status_code == 202
    time.sleep(0.3)
    assert backend.queue.depth().messages == 0
    assert [i for i in host.invocations if i[0] == "submit_worker"] == []
