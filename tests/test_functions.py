"""The Functions app: bindings as the host reads them, and the handlers run against Azurite and the emulators."""
from __future__ import annotations

import json

import pytest
from azure.functions.queue import QueueMessage as FuncQueueMessage
from azure.functions.timer import TimerRequest

from sandbox.host.functions_host import app_functions
from sandbox.tools.verify import verify_users
from shared.admin.setup import run_setup
from shared.app import open_backend
from shared.settings import load_settings


@pytest.fixture(scope="module")
def functions():
    return app_functions()


def test_bindings_as_the_host_reads_them(functions):
    assert set(functions) == {"timer_sync", "submit_worker", "full_run_segment", "graph_webhook", "status_page"}
    timer = json.loads(functions["timer_sync"].get_function_json())["bindings"][0]
    assert timer["type"] == "timerTrigger" and timer["schedule"] == "%TIMER_SYNC_SCHEDULE%"
    assert timer["runOnStartup"] is False
    queue = json.loads(functions["submit_worker"].get_function_json())["bindings"][0]
    assert queue["type"] == "queueTrigger" and queue["queueName"] == "%SYNC_QUEUE_NAME%"
    assert queue["connection"] == "AzureWebJobsStorage"
    runs = json.loads(functions["full_run_segment"].get_function_json())["bindings"][0]
    assert runs["type"] == "queueTrigger" and runs["queueName"] == "%RUN_QUEUE_NAME%"
    assert runs["connection"] == "AzureWebJobsStorage"


def test_host_json_queue_settings():
    with open("host.json") as f:
        host = json.load(f)
    queues = host["extensions"]["queues"]
    assert queues["maxDequeueCount"] == 5 and queues["messageEncoding"] == "base64"
    assert queues["batchSize"] == 1 and queues["newBatchThreshold"] == 0  # one writer per instance


@pytest.fixture
def azure_env(box, app_env):
    run_setup(load_settings(app_env))
    return box, load_settings(app_env)


def _deliver(functions, backend):
    """Do what the Functions host does: take a message, run the handler, complete the message."""
    [message] = backend.queue.receive(max_messages=1, visibility_timeout=60)
    handler = functions["submit_worker"].get_user_function()
    handler(FuncQueueMessage(id=message.id, body=json.dumps(message.body).encode(),
                             dequeue_count=message.dequeue_count, pop_receipt="x"))
    backend.queue.delete(message)


def test_timer_then_worker_over_azurite(functions, azure_env):
    box, settings = azure_env
    backend = open_backend(settings)
    timer = functions["timer_sync"].get_user_function()
    timer(TimerRequest(past_due=False))
    assert backend.queue.depth().messages == 1
    _deliver(functions, backend)
    facts = verify_users(box.tenant, box.assets)
    assert facts["users in Assets"] == facts["users in tenant"]
    assert facts["managers resolved"] == facts["managers in tenant"]
    assert len(dict(backend.state.hashes("user"))) == len(box.tenant.users)
    assert backend.queue.depth().messages == 0
    # Not due again within FULL_SYNC_INTERVAL_HOURS: the next tick reads nothing from Graph itself and queues
    # a delta catch-up; the worker runs it from the stored delta links and, the tenant unchanged, pushes nothing.
    box.graph.reset_log()
    timer(TimerRequest(past_due=True))
    assert box.graph.requests == [] and backend.queue.depth().messages == 1
    executions = len(box.assets.executions)
    _deliver(functions, backend)
    assert [r.path.rsplit("/", 2)[-2:] for r in box.graph.requests] == [["users", "delta"], ["groups", "delta"]]
    assert all("$deltatoken" in r.query for r in box.graph.requests)
    assert len(box.assets.executions) == executions and backend.queue.depth().messages == 0


def test_unchanged_tenant_starts_no_execution(functions, azure_env, monkeypatch):
    """An unchanged full run still queues its (empty) payload: the worker commits its checkpoints and notes that
    Assets holds the tenant as of its read, which older payloads must not undo (shared/deliver/freshness.py)."""
    box, settings = azure_env
    backend = open_backend(settings)
    timer = functions["timer_sync"].get_user_function()
    timer(TimerRequest(past_due=False))
    _deliver(functions, backend)
    executions = len(box.assets.executions)
    monkeypatch.setenv("FULL_SYNC_INTERVAL_HOURS", "0.000001")
    timer(TimerRequest(past_due=False))
    assert backend.queue.depth().messages == 1
    _deliver(functions, backend)
    assert backend.queue.depth().messages == 0 and len(box.assets.executions) == executions


def test_malformed_trigger_message_raises_for_redelivery(functions, azure_env):
    handler = functions["submit_worker"].get_user_function()
    with pytest.raises(ValueError, match="not an entra-assets message"):
        handler(FuncQueueMessage(id="m1", body=b'{"kind": "other"}', dequeue_count=1, pop_receipt="x"))
