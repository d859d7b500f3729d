"""Telemetry: no personal data or secrets in the logs of a whole demo, a correlation id from the webhook to the
Assets execution, and the export to Application Insights (a loopback ingestion endpoint, sandbox/appinsights_emulator)."""
from __future__ import annotations

import io
import json
import logging
import re
import time
import uuid

import azure.functions as func
import httpx
import pytest
from azure.functions.queue import QueueMessage as FuncQueueMessage
from rich.console import Console

import sandbox.tools.demo as demo_module
from sandbox.emulators import Sandbox
from sandbox.host.appinsights import AppInsightsEmulator
from sandbox.host.functions_host import app_functions
from sandbox.host.live import CLIENT_STATE
from sandbox.tenant.generator import generate_tenant
from sandbox.tenant.model import Tenant
from shared import telemetry
from shared.admin.setup import run_setup
from shared.app import open_backend
from shared.settings import load_settings

USERS_SUB, GROUPS_SUB = "sub-users-0001", "sub-groups-0002"
SECRET_NAMES = re.compile(r"TOKEN|SECRET|KEY|PASSWORD|STATE|JIRA_EMAIL|AzureWebJobsStorage", re.IGNORECASE)


# -- helpers -------------------------------------------------------------------------------------------------

@pytest.fixture
def captured():
    """The CLI's logging (root logger, INFO, JSON lines) into a buffer, redaction off: the scan below checks
    the log calls themselves, not the safety net. Restores the logging set-up afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    buffer = io.StringIO()
    telemetry.configure_logging(logging.INFO, "json", stream=buffer, redacting=False)
    yield buffer
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    telemetry.install_record_factory(redacting=True)


def records(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]


def personal_data(tenants: list[Tenant]) -> set[str]:
    """Every e-mail address, UPN, display name and phone number of the tenants' users, and group addresses."""
    found: set[str] = set()
    for tenant in tenants:
        for user in tenant.users.values():
            found.update(v for k in ("mail", "userPrincipalName", "displayName", "mobilePhone") if (v := user.get(k)))
            found.update(user.get("businessPhones") or [])
            if user.get("givenName") and user.get("surname"):
                found.add(f"{user['givenName']} {user['surname']}")
        found.update(g["mail"] for g in tenant.groups.values() if g.get("mail"))
    return {v for v in found if len(v) >= 5}  # nothing that short is a name or an address here


def secrets(settings: dict[str, str]) -> set[str]:
    """The values of every setting that holds a secret (tokens, keys, client state, connection strings), and the
    account key inside a storage connection string."""
    values = {v for k, v in settings.items() if SECRET_NAMES.search(k) and v}
    for value in list(values):
        values.update(m.group(1) for m in re.finditer(r"AccountKey=([^;]+)", value))
    return values


def leaks(text: str, needles: set[str]) -> list[str]:
    """The needles found in ``text``, also JSON-escaped (non-ASCII names) and URL-encoded (e-mails in queries)."""
    from urllib.parse import quote

    return sorted(n for n in needles
                  if n in text or json.dumps(n)[1:-1] in text or quote(n) in text or quote(n, safe="") in text)


# -- the personal-data scan ----------------------------------------------------------------------------------

def test_a_full_demo_logs_no_personal_data_and_no_secret(captured, monkeypatch):
    boxes: list[Sandbox] = []
    start = demo_module.start_sandbox
    monkeypatch.setattr(demo_module, "start_sandbox", lambda **kw: boxes.append(start(**kw)) or boxes[-1])
    with telemetry.correlation():  # as `entra-assets demo` runs it: one correlation id for the command
        assert demo_module.run_demo(users=150, seed=5, console=Console(file=io.StringIO())) == 0
    [box] = boxes
    text = captured.getvalue()
    logged = records(captured)

    # The logs are not trivially clean: every stage of the run, the live notifications and the executions are in.
    events = {r.get("event") for r in logged}
    assert {"notification", "worker.drained", "execution.started", "execution.finished"} <= events
    assert sum(r["logger"] == "functions.graph_webhook" and r.get("status") == 202 for r in logged) >= 4
    assert all(r.get("cid") for r in logged if r["logger"].startswith(("shared.", "functions.")))

    needles = personal_data([generate_tenant(users=150, seed=5), box.tenant])
    assert len(needles) > 300 and "Grace Hopper" in needles and "ada@sandbox.example" in needles
    hidden = secrets({**box.settings(), "WEBHOOK_CLIENT_STATE": CLIENT_STATE})
    assert {"sandbox-graph-token", "sandbox-import-token", CLIENT_STATE} <= hidden
    assert leaks(text, needles) == []
    assert leaks(text, hidden) == []

    # Control: the same scan finds an address that is logged, and the redaction (on by default) hides it.
    address = box.tenant.users[sorted(box.tenant.users)[3]]["mail"] or "someone@sandbox.example"
    logging.getLogger("shared.control").info("lookup of %s", address)
    assert leaks(captured.getvalue(), needles | {address}) == [address]
    telemetry.install_record_factory(redacting=True)
    before = len(captured.getvalue())
    logging.getLogger("shared.control").info("lookup of %s with Bearer %s", address, "sandbox-graph-token")
    assert leaks(captured.getvalue()[before:], needles | hidden | {address}) == []
    assert "<email>" in captured.getvalue()[before:]


def test_redact_masks_addresses_tokens_and_keys():
    text = ("user anna.silva@contoso.example, guest bob_partner.example#EXT#@contoso.onmicrosoft.com, "
            "Authorization: Bearer eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl, "
            "AccountName=dev;AccountKey=Eby8vdM02x==;EndpointSuffix=x https://a.blob/x?sv=1&sig=abc%2Bdef "
            "https://f.example/api/hook?code=k3y&x=1 clientState=s3cret object 3f2b-11 pushed 12 records")
    cleaned = telemetry.redact(text)
    for secret in ("anna.silva", "bob_partner", "eyJ0eXAi", "Eby8vdM02x", "abc%2Bdef", "k3y", "s3cret"):
        assert secret not in cleaned
    assert "AccountKey=<redacted>" in cleaned and "sig=<redacted>" in cleaned and "?code=<redacted>" in cleaned
    assert cleaned.endswith("object 3f2b-11 pushed 12 records")  # ids and counts stay readable
    assert telemetry.redact("status code=500 for 7 users") == "status code=500 for 7 users"


def test_third_party_loggers_that_log_urls_are_quiet(captured):
    for name in ("httpx", "httpcore", "azure.core.pipeline.policies.http_logging_policy"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
    logging.getLogger("httpx").info("HTTP Request: GET https://graph.example/users?$filter=mail eq 'a@b.example'")
    assert "a@b.example" not in captured.getvalue()


# -- correlation: notification -> queue -> worker -> Assets execution ---------------------------------------

@pytest.fixture(scope="module")
def functions():
    return app_functions()


@pytest.fixture
def webhook_env(box, app_env, monkeypatch):
    """The Functions app on Azurite and the emulators, with two subscriptions known to the webhook."""
    env = {**app_env, "WEBHOOK_CLIENT_STATE": CLIENT_STATE}
    monkeypatch.setenv("WEBHOOK_CLIENT_STATE", CLIENT_STATE)
    run_setup(load_settings(env))  # the schema and mapping; no WEBHOOK_URL, so no subscription is made here
    backend = open_backend(load_settings(env))
    backend.state.commit({}, {"subscriptions": json.dumps({"users": {"id": USERS_SUB, "expires": "2099-01-01T00:00Z"},
                                                           "groups": {"id": GROUPS_SUB, "expires": "2099-01-01T00:00Z"}})})
    return box, env, backend


def _notify_then_work(functions, box: Sandbox, backend) -> list[str]:
    """Two notification POSTs (two users changed), then one delivery to the worker, which drains both messages
    into one Assets execution. Returns the correlation ids of the queued messages, in queue order."""
    webhook = functions["graph_webhook"].get_user_function()
    for uid in sorted(box.tenant.users)[:2]:
        box.tenant.update_user(uid, jobTitle="Telemetry tester")
        body = {"value": [{"subscriptionId": USERS_SUB, "clientState": CLIENT_STATE, "changeType": "updated",
                           "resource": f"Users/{uid}", "tenantId": box.tenant.tenant_id, "resourceData": {"id": uid}}]}
        response = webhook(func.HttpRequest("POST", "http://localhost/api/graph-webhook", body=json.dumps(body).encode(),
                                            headers={"Content-Type": "application/json"}, params={}))
        assert response.status_code == 202
    messages = backend.queue.receive(max_messages=32, visibility_timeout=1)  # look, then let them reappear
    cids = [m.body.get("cid") for m in messages]
    assert len(messages) == 2 and all(cids) and len(set(cids)) == 2
    time.sleep(1.1)
    [trigger] = backend.queue.receive(max_messages=1, visibility_timeout=60)
    functions["submit_worker"].get_user_function()(FuncQueueMessage(
        id=trigger.id, body=json.dumps(trigger.body).encode(), dequeue_count=trigger.dequeue_count, pop_receipt="x"))
    backend.queue.delete(trigger)
    assert backend.queue.depth().messages == 0
    return cids


def test_a_notification_cid_is_logged_with_the_execution_that_carried_it(functions, webhook_env, captured):
    box, env, backend = webhook_env
    cids = _notify_then_work(functions, box, backend)
    logged = records(captured)
    accepted = [r for r in logged if r.get("event") == "notification"]
    assert {r["cid"] for r in accepted} == set(cids) and all(r["status"] == 202 for r in accepted)
    [started] = [r for r in logged if r.get("event") == "execution.started"]
    [finished] = [r for r in logged if r.get("event") == "execution.finished"]
    assert set(started["cids"]) == set(cids) and started["execution"] == finished["execution"]
    assert started["execution"] in started["message"] and all(c in started["message"] for c in cids)
    assert finished["records"] >= 2
    # The worker pass runs under the cid of the message that triggered it: its drain line carries it.
    [drained] = [r for r in logged if r.get("event") == "worker.drained"]
    assert drained["cid"] in cids and drained["messages"] == 2
    assert started["execution"] == box.assets.executions[-1].id  # the id Assets gave the execution
    assert leaks(captured.getvalue(), secrets(env) | personal_data([box.tenant])) == []


# -- export to Application Insights --------------------------------------------------------------------------

@pytest.fixture
def appinsights(monkeypatch):
    """The ingestion emulator and the export pointed at it; nothing leaves the machine (no statsbeat to
    Microsoft's endpoint, no remote configuration); shut down afterwards."""
    for name in ("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED",
                 "APPLICATIONINSIGHTS_SDKSTATS_DISABLED"):
        monkeypatch.setenv(name, "true")
    emulator = AppInsightsEmulator().start()
    monkeypatch.setenv(telemetry.CONNECTION_STRING, emulator.connection_string())
    assert telemetry._export is None  # no export is running
    export = telemetry.configure_export(emulator.connection_string(), offline_storage=False)
    yield emulator, export
    export.shutdown()
    emulator.stop()


def test_spans_logs_and_metrics_reach_application_insights(functions, webhook_env, captured, appinsights):
    emulator, export = appinsights
    box, env, backend = webhook_env
    cids = _notify_then_work(functions, box, backend)
    assert export.flush()

    requests = {e["data"]["baseData"]["name"]: e for e in emulator.named("RequestData")}
    assert {"graph_webhook", "submit_worker"} <= set(requests)
    webhook_cids = {e["data"]["baseData"]["properties"]["cid"] for e in emulator.named("RequestData")
                    if e["data"]["baseData"]["name"] == "graph_webhook"}
    assert webhook_cids == set(cids)
    [execution] = [e for e in emulator.named("RemoteDependencyData")
                   if e["data"]["baseData"]["name"] == "assets_execution"]
    properties = execution["data"]["baseData"]["properties"]
    assert set(properties["cids"].split(",")) == set(cids) and properties["execution"] == box.assets.executions[-1].id
    # The execution span sits in the trace of the worker invocation that ran it.
    assert execution["tags"]["ai.operation.id"] == requests["submit_worker"]["tags"]["ai.operation.id"]
    messages = emulator.named("MessageData")
    started = [m for m in messages if m["data"]["baseData"]["properties"].get("event") == "execution.started"]
    assert len(started) == 1 and started[0]["data"]["baseData"]["properties"]["cid"] in cids
    metrics = {m["name"]: m["value"] for e in emulator.named("MetricData") for m in e["data"]["baseData"]["metrics"]}
    assert metrics.get("entra_assets.records_pushed", 0) >= 2
    assert all(e["iKey"] == emulator.instrumentation_key for e in emulator.envelopes)
    assert all(r.path == "/v2.1/track" for r in emulator.requests)
    exported = json.dumps(emulator.envelopes, ensure_ascii=False)
    assert leaks(exported, secrets(env) | personal_data([box.tenant])) == []
    # The exporter's own HTTP calls are neither logged at INFO nor exported (no feedback loop).
    assert not any(e["data"]["baseData"].get("properties", {}).get("logger_name", "").startswith("azure.")
                   for e in messages)


def test_a_bad_connection_string_is_named_not_shown_and_nothing_is_exported(captured):
    assert telemetry.export_from({telemetry.CONNECTION_STRING: "InstrumentationKey=;Secret=hunter2"}) is None
    assert telemetry._export is None  # no export is running
    [error] = [r for r in records(captured) if r["level"] == "ERROR"]
    assert telemetry.CONNECTION_STRING in error["message"] and "hunter2" not in captured.getvalue()
    assert telemetry.export_from({}) is None


def test_the_ingestion_emulator_refuses_what_the_service_refuses():
    emulator = AppInsightsEmulator().start()
    try:
        good = {"name": "Microsoft.ApplicationInsights.Message", "time": "2026-11-23T10:00:00Z",
                "iKey": emulator.instrumentation_key, "data": {"baseType": "MessageData", "baseData": {"message": "x"}}}
        with httpx.Client(base_url=emulator.url) as client:
            assert client.get("/v2.1/track").status_code == 405
            assert client.post("/v2/nothing", json=[good]).status_code == 404
            assert client.post("/v2.1/track", content=b"[]", headers={"Content-Type": "text/plain"}).status_code == 415
            assert client.post("/v2.1/track", content=b"[{", headers={"Content-Type": "application/json"}).status_code == 400
            wrong_key = {**good, "iKey": str(uuid.uuid4())}
            partial = client.post(f"{emulator.url}//v2.1/track", json=[good, wrong_key, {**good, "time": ""}])
            assert partial.status_code == 206
            body = partial.json()
            assert (body["itemsReceived"], body["itemsAccepted"]) == (3, 1)
            assert [e["index"] for e in body["errors"]] == [1, 2] and "instrumentation key" in body["errors"][0]["message"]
            assert client.post("/v2.1/track", json=[wrong_key]).status_code == 400
            assert client.post("/v2.1/track", json=[good]).json() == {"itemsReceived": 1, "itemsAccepted": 1,
                                                                     "appId": None, "errors": []}
        assert len(emulator.envelopes) == 2
    finally:
        emulator.stop()


# -- log formats ---------------------------------------------------------------------------------------------

def test_json_lines_carry_the_cid_and_the_extras():
    buffer = io.StringIO()
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        telemetry.configure_logging(logging.INFO, "json", stream=buffer)
        with telemetry.correlation() as cid:
            logging.getLogger("shared.x").info("pushed %d records", 3, extra={"event": "e", "cids": [cid]})
        logging.getLogger("shared.x").warning("outside")
        telemetry.configure_logging(logging.INFO, "text", stream=buffer)  # replaces the JSON handler
        logging.getLogger("shared.x").info("as text")
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)
    first, second, third = buffer.getvalue().splitlines()
    assert json.loads(first) | {"time": 0} == {"time": 0, "level": "INFO", "logger": "shared.x",
                                              "message": "pushed 3 records", "cid": cid, "event": "e", "cids": [cid]}
    assert "cid" not in json.loads(second)
    assert third.endswith("INFO shared.x [-] as text")
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        telemetry.log_format_from({"LOG_FORMAT": "xml"})
    assert telemetry.log_format_from({"LOG_FORMAT": " JSON "}) == "json" and telemetry.log_format_from({}) == "text"


def test_cli_refuses_an_unknown_log_format(monkeypatch):
    from click.testing import CliRunner

    from shared.cli import main

    monkeypatch.setenv("LOG_FORMAT", "xml")
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 2 and "LOG_FORMAT must be one of text, json" in result.output


def test_carried_cids_are_distinct_valid_and_bounded():
    bodies = [{"cid": f"{i:016x}"} for i in range(30)] + [{"cid": "0" * 16}, {"cid": "bad cid!"}, {}, {"cid": 7}]
    cids, more = telemetry.carried_cids(bodies)
    assert cids == [f"{i:016x}" for i in range(telemetry.MAX_CIDS)] and more == 30 - telemetry.MAX_CIDS
    with telemetry.correlation("not valid!") as cid:
        assert telemetry.valid_cid(cid) == cid and telemetry.stamped({"v": 1}) == {"v": 1, "cid": cid}
        with telemetry.correlation() as inner:
            assert inner == cid  # joins
        assert telemetry.stamped({"cid": "other"}) == {"cid": "other"}
    assert telemetry.current_cid() is None and telemetry.stamped({"v": 1}) == {"v": 1}


def test_the_events_the_alerts_read_are_logged_with_their_fields(box, tmp_path, caplog):
    """infra/alerts.bicep queries these events: a timer tick that begins a full run logs the queue's depth and
    each credential's days left; every run recorded in the history logs how it finished."""
    from shared.app import sync_full, timer_tick

    settings = load_settings({**box.settings(), "ENTRA_ASSETS_HOME": str(tmp_path / "home")})
    run_setup(settings)
    caplog.set_level(logging.INFO)
    timer_tick(settings)
    sync_full(settings)
    events = [r.__dict__ for r in caplog.records if getattr(r, "event", None)]
    depth = [e for e in events if e["event"] == "queue.depth"]
    assert depth and {"messages", "poison"} <= depth[0].keys() and depth[0]["poison"] == 0
    kinds = {e["kind"]: e["days_left"] for e in events if e["event"] == "credential.status"}
    assert set(kinds) == {"access_token", "import_token"}
    finished = [(e["kind"], e["stage"]) for e in events if e["event"] == "run.finished"]
    assert ("full", "Done") in finished
