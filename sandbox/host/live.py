"""Live changes through the whole near-real-time path, timed: tenant → Graph notification → graph_webhook →
queue → submit_worker → Assets. Used by the demo (a few changes, shown) and ``make bench`` (hundreds, p50/p95).

The functions run under the local host stand-in (``sandbox/host/functions_host.py``) with the settings in
``os.environ``; the Graph emulator holds real subscriptions created by ``setup`` through the validation
handshake, and notifies the webhook the way Graph does. With ``delivery="eventgrid"`` there is no webhook:
``setup`` subscribes Graph to the partner topic and activates it, the sandbox then adds the event subscription
to the sync queue (the second deployment of README step 3b), and each change travels tenant → Graph event →
Event Grid → queue → submit_worker → Assets.
"""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from sandbox.emulators import PARTNER_TOPIC, RESOURCE_GROUP, Sandbox
from sandbox.eventgrid.emulator import azurite_sink
from sandbox.host.functions_host import FunctionsHost
from shared.admin.event_grid import event_grid_status, queue_account_id
from shared.admin.setup import run_setup
from shared.clients.event_grid import DELIVERY
from shared.settings import Settings, load_settings
from shared.store.local import LocalQueue

CLIENT_STATE = "sandbox-client-state"


@dataclass(frozen=True)
class Timing:
    """One change: when the webhook had queued its notification, and when Assets showed it (epoch seconds)."""

    label: str
    notified: float
    in_assets: float

    @property
    def latency(self) -> float:
        return self.in_assets - self.notified


@contextmanager
def live(box: Sandbox, env: dict[str, str], delivery: str = "webhook") -> Iterator[FunctionsHost]:
    """Run the functions with ``env`` (set in ``os.environ`` while live) and subscribe Graph: to the webhook,
    or with ``delivery="eventgrid"`` to the sandbox's partner topic (``box.event_grid``)."""
    extra = {"WEBHOOK_CLIENT_STATE": CLIENT_STATE, "TIMER_SYNC_SCHEDULE": "0 0 0 1 1 *"}
    if delivery == "eventgrid":
        extra |= box.event_grid_settings()
    saved = {name: os.environ.get(name) for name in [*env, *extra, "WEBHOOK_URL"]}
    os.environ.update(env | extra)
    host = FunctionsHost(run_timer=False).start()
    try:
        if delivery == "eventgrid":
            connect_event_grid(box, settings())
        else:
            os.environ["WEBHOOK_URL"] = host.function_url("graph-webhook")  # with its key, as in Azure
            run_setup(settings())  # creates the subscriptions: Graph's handshake reaches the webhook
        yield host
    finally:
        host.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def settings() -> Settings:
    return load_settings(os.environ)


def connect_event_grid(box: Sandbox, settings: Settings) -> None:
    """Event Grid delivery as an admin sets it up: ``setup`` (Graph creates the partner topic; setup activates it
    and delivers it to the sync queue). The embedded store (the demo) is no storage account setup could name:
    there the sandbox adds the event subscription itself, as the template's second deployment would. Raises
    RuntimeError unless ``check`` then finds Event Grid ready."""
    grid = box.event_grid
    grid.sink = queue_sink(settings)
    run_setup(settings)
    if queue_account_id(settings) is None:
        grid.add_queue_subscription(RESOURCE_GROUP, PARTNER_TOPIC, DELIVERY, settings.queue_name,
                                    f"/subscriptions/{grid.subscription_id}/resourceGroups/{RESOURCE_GROUP}/providers"
                                    "/Microsoft.Storage/storageAccounts/embedded")
    report = event_grid_status(settings)
    if not report.ready:
        raise RuntimeError("Event Grid is not ready after setup: " + "; ".join(report.problems))


def queue_sink(settings: Settings):
    """Where Event Grid's storage-queue delivery writes in this sandbox: Azurite (base64 JSON, as Event Grid
    does) when the app runs on it, else the CLI's embedded queue."""
    if settings.uses_azure_storage:
        return azurite_sink(settings.storage_connection_string.reveal())
    return lambda queue_name, event: LocalQueue(settings.home, queue_name).send(event)


def timed_change(box: Sandbox, label: str, change: Callable[[], None], done: Callable[[], bool],
                 timeout: float = 30.0) -> Timing:
    """Make ``change`` in the tenant and wait until ``done()`` holds in Assets. ``notified`` is when the
    webhook had answered the emulator's notification POST (the change was queued), from its delivery log."""
    deliveries = len(box.graph.subscriptions.deliveries)
    change()
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{label}: not in Assets after {timeout:.0f} s")
        time.sleep(0.005)
    in_assets = time.time()
    sent = [d for d in box.graph.subscriptions.deliveries[deliveries:] if d.kind == "notification" and d.ok]
    return Timing(label, sent[0].sent + sent[0].elapsed if sent else in_assets, in_assets)


def percentile(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] if len(values) > 1 else values[0]


def webhook_load(url: str, rate: float = 100.0, seconds: float = 5.0) -> list[float]:
    """POST notifications (valid, unknown subscription: nothing queued) at ``rate`` per second for ``seconds``,
    from one keep-alive client; returns each response time."""
    body = {"value": [{"subscriptionId": "load-test", "changeType": "updated", "clientState": CLIENT_STATE,
                       "resource": "Users/00000000-0000-0000-0000-000000000000"}]}
    times: list[float] = []
    with httpx.Client(timeout=10) as client:
        start = time.monotonic()
        for n in range(int(rate * seconds)):
            time.sleep(max(0.0, start + n / rate - time.monotonic()))
            sent = time.monotonic()
            client.post(url, json=body).raise_for_status()
            times.append(time.monotonic() - sent)
    return times
