"""The status page: JSON or HTML, escaped, behind the function key - and rendered by a real headless Chromium
(Debian's package, driven by Playwright) from the functions host after real runs on Azurite."""
from __future__ import annotations

import json
import shutil
import time

import httpx
import pytest

from sandbox.host.functions_host import FunctionsHost
from shared.admin.setup import run_setup
from shared.admin.status import collect_status
from shared.admin.status_page import HEADERS, duration, render_html, respond, wants_json
from shared.app import sync_full, timer_tick
from shared.records.schema import OBJECT_TYPES
from shared.settings import load_settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TYPES = tuple(t.name for t in OBJECT_TYPES)
EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _data(**extra) -> dict:
    run = {"triggers": ["webhook"], "kind": "catch-up", "started": "2026-11-22T14:00:00Z", "seconds": 0.25,
           "stage": "Failed", "messages": 1, "run": None, "read": {"User": 1}, "records": {"User": 1},
           "records_pushed": 1, "executions": 1, "created": 0, "updated": 1, "identical": 0, "deactivated": {},
           "held_back": {}, "errors": [EVIL], "warnings": [], "repeated": 1, "last_started": None}
    return {"importer_status": "DISABLED", "message": EVIL, "current": None, "runs": [run],
            "subscriptions": {"users": {"id": EVIL, "expires": "2026-11-25T14:00:00Z"}},
            "queue": {"name": "entra-assets-changes", "messages": 2, "poison": 1},
            "credentials": None, "jira": None} | extra


def test_format_negotiation():
    assert wants_json({"format": "json"}, {}) and wants_json({}, {"Accept": "application/json"})
    assert not wants_json({}, {}) and not wants_json({"format": "html"}, {"Accept": "application/json"})
    assert not wants_json({}, {"accept": "text/html,application/xhtml+xml,application/json;q=0.9,*/*;q=0.8"})
    assert wants_json({}, {"accept": "application/json, text/html;q=0.5"})


def test_every_value_is_escaped_and_the_page_is_self_contained():
    credentials = {"graph_credential": {"kind": "client_secret", "expires": "2026-12-01T00:00:00+00:00",
                                        "days_left": 8, "source": "app registration", "age_days": None},
                   "import_token": {"kind": "import_token", "expires": None, "days_left": None,
                                    "source": "unknown", "age_days": 3}, "warnings": [EVIL]}
    grid = {"partner_topic": EVIL, "activation": "NeverActivated", "queues": [], "ready": False, "problems": [EVIL]}
    objects = {"kept": 45_000, "limit": 50_000, "percent": 90.0, "as_of": "2026-11-22T14:00:00Z", "warning": EVIL}
    page = render_html(_data(jira={"linked": 2, "unmatched": 1, "unmatched_ids": [EVIL]}, credentials=credentials,
                             event_grid=grid, objects=objects), now=1_795_000_000.0)
    assert "<script" not in page and "<img" not in page
    # message, error, subscription id, unmatched id, credential warning, the topic's name and its problem, and
    # the allowance warning
    assert page.count("&lt;script&gt;") == 8
    assert "Objects in Assets: 45,000 of ASSETS_OBJECT_LIMIT=50,000" in page
    assert 'id="event-grid"' in page and "NeverActivated, delivering to no queue" in page
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    assert 'id="jira"' in page and 'id="credential-warnings"' in page and "2026-12-01" in page
    bare = render_html(_data(), now=1_795_000_000.0)
    assert 'id="jira"' not in bare and 'id="credentials"' not in bare  # linking off, no report: no section
    assert 'id="event-grid"' not in bare  # the webhook: no Event Grid section
    assert "refresh" not in page  # no run going: no reload
    assert 'http-equiv="refresh"' in render_html(_data(current={"stage": "Submitting data", "count": 5}), 0.0)


def test_durations_read_naturally():
    assert [duration(s) for s in (0.25, 65, 7380, 29 * 86400 + 13 * 3600 + 5)] == [
        "0.2 s", "1 min 05 s", "2 h 03 min", "29 d 13 h"]


def test_invalid_settings_are_named_not_leaked():
    page = respond({"ASSETS_IMPORT_TOKEN": "secret-import-token", "SYNC_QUEUE_NAME": "Bad_Queue"}, {}, {})
    assert page.status == 500 and "SYNC_QUEUE_NAME" in page.body and "secret-import-token" not in page.body
    as_json = respond({"SYNC_QUEUE_NAME": "Bad_Queue"}, {"format": "json"}, {})
    assert as_json.status == 500 and any("SYNC_QUEUE_NAME" in p for p in json.loads(as_json.body)["problems"])


def _chromium():
    """Playwright with Debian's chromium; a missing piece is a failure that says how to install it."""
    if shutil.which("chromium") is None and not shutil.which(CHROMIUM):
        pytest.fail("chromium is not installed: run `make test` (it installs Debian's chromium) or "
                    "`apt-get install chromium`", pytrace=False)
    from playwright.sync_api import sync_playwright
    return sync_playwright()


def test_escaping_holds_in_a_real_browser():
    with _chromium() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.set_content(render_html(_data(), now=1_795_000_000.0))
            assert page.locator("script").count() == 0 and page.locator("img").count() == 0 and not dialogs
            assert EVIL in page.locator("#runs tbody tr td.notes").inner_text()
            assert page.locator("#queue .poison").inner_text() == "1"
        finally:
            browser.close()


@pytest.fixture
def served(box, app_env, monkeypatch):
    """A CLI full sync, then a timer catch-up run by the functions host's worker, all on Azurite."""
    env = {**app_env, "TIMER_SYNC_SCHEDULE": "0 0 0 1 1 *"}
    monkeypatch.setenv("TIMER_SYNC_SCHEDULE", env["TIMER_SYNC_SCHEDULE"])
    settings = load_settings(env)
    run_setup(settings)
    sync_full(settings)
    box.tenant.update_user(sorted(box.tenant.users)[5], jobTitle="Status Page")
    host = FunctionsHost(run_timer=False).start()
    try:
        assert timer_tick(settings) is None  # a full run is not due: it queues a catch-up for the worker
        deadline = time.monotonic() + 30
        while len(collect_status(settings)["runs"]) < 2 or collect_status(settings)["current"] is not None:
            assert time.monotonic() < deadline, "the worker did not record its pass"
            time.sleep(0.05)
        yield box, host, settings
    finally:
        host.stop()


def test_the_function_key_is_required(served):
    _, host, settings = served
    plain = httpx.get(f"{host.url}/status", timeout=10)
    wrong = httpx.get(f"{host.url}/status", params={"code": host.function_key[:-1] + "x"}, timeout=10)
    assert (plain.status_code, plain.content) == (401, b"") and wrong.status_code == 401
    by_header = httpx.get(f"{host.url}/status", headers={"x-functions-key": host.function_key,
                                                         "Accept": "application/json"}, timeout=10)
    assert by_header.status_code == 200 and by_header.headers["content-type"].startswith("application/json")
    data = by_header.json()
    assert set(data) == {"importer_status", "message", "current", "full_run", "handed_on", "runs", "subscriptions",
                         "event_grid", "objects", "queue", "credentials", "jira"}
    assert data["runs"] == collect_status(settings)["runs"]
    by_query = httpx.get(host.function_url("status") + "&format=json", timeout=10)
    assert by_query.status_code == 200 and by_query.json()["runs"] == data["runs"]


def test_the_page_renders_in_chromium_with_the_run_history(served):
    box, host, settings = served
    runs = collect_status(settings)["runs"]
    problems: list[str] = []
    requests: list[str] = []
    with _chromium() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.on("request", lambda r: requests.append(r.url))
            response = page.goto(host.function_url("status"), wait_until="load")
            assert response.status == 200 and response.headers["content-type"].startswith("text/html")
            assert response.headers["content-security-policy"] == HEADERS["Content-Security-Policy"]
            assert page.locator("#importer-status").inner_text() == "IDLE"
            assert page.locator("#current").inner_text() == "No run in progress."
            rows = page.locator("#runs tbody tr")
            assert page.locator("#runs").is_visible() and rows.count() == len(runs) == 2
            catch_up, full = rows.nth(0), rows.nth(1)
            cell = lambda row, name: row.locator(f"td.{name}").inner_text()
            assert (cell(catch_up, "trigger"), cell(catch_up, "kind"), cell(catch_up, "stage")) == (
                "timer", "catch-up", "Done")
            assert cell(catch_up, "records") == "User 1" and cell(catch_up, "executions") == "1"
            assert cell(full, "trigger") == "cli" and cell(full, "kind") == "full"
            # The numbers on the page are Assets' own: the first run created every object the store holds.
            in_assets = sum(len(box.assets.objects(t)) for t in TYPES)
            assert cell(full, "created") == f"{in_assets:,}" == f"{runs[1]['created']:,}"
            assert f"User {len(box.tenant.users):,}" in cell(full, "records")
            last = box.assets.executions[-1].result_map.values()
            assert [cell(catch_up, k) for k in ("created", "updated", "identical")] == [
                f"{sum(e[c] for e in last):,}" for c in ("objectsCreated", "objectsUpdated", "objectsIdentical")]
            assert page.title() == "entra-assets: IDLE"
        finally:
            browser.close()
    assert problems == []
    assert requests == [host.function_url("status")]  # nothing else fetched
