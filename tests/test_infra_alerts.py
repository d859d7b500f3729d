"""infra/alerts.bicep: the four alerts of issue 12 with their thresholds, and - name for name - that the app
emits what their queries read (the way tests/test_infra.py compares the settings).

A query reads either ``requests`` by name (the spans of shared/telemetry.py ``invocation``/``run``/``span``, and
the Functions host's record of the same function) or ``traces`` by ``customDimensions.event`` (the
``extra={"event": ...}`` of a log call) and its fields (the other keys of that ``extra``): every one must be
emitted by the code, with those fields.
"""
from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

from pycep import BicepParser

from shared.admin.credential_expiry import WARN_DAYS

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "infra" / "alerts.bicep"
MAIN = ROOT / "infra" / "main.bicep"

# event -> fields the alert queries read, and where the app is to emit it (one log call each).
_EVENT = re.compile(r'customDimensions\.event\)\s*==\s*"([^"]+)"')
_FIELD = re.compile(r"customDimensions\.([A-Za-z_][A-Za-z0-9_]*)")
_REQUEST = re.compile(r'\bname\s*==\s*"([^"]+)"')


@cache
def alerts() -> dict:
    return BicepParser().parse(file_path=ALERTS)


def rules() -> dict[str, dict]:
    return {rule["name"]: rule for rule in alerts()["variables"]["rules"]["value"]}


def _python_files() -> list[Path]:
    return [ROOT / "function_app.py", *sorted((ROOT / "shared").rglob("*.py")),
            *sorted((ROOT / "functions").rglob("*.py"))]


@cache
def emitted() -> tuple[dict[str, set[str]], set[str]]:
    """(log event -> the fields of its extra, span names) as the code spells them."""
    events: dict[str, set[str]] = {}
    spans: set[str] = set()
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            for keyword in node.keywords:
                if keyword.arg == "extra" and isinstance(keyword.value, ast.Dict):
                    keys = {k.value: v for k, v in zip(keyword.value.keys, keyword.value.values)
                            if isinstance(k, ast.Constant)}
                    if isinstance(keys.get("event"), ast.Constant):
                        events.setdefault(keys["event"].value, set()).update(set(keys) - {"event"})
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in {"invocation", "run", "span", "start_span"} and node.args and \
                    isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                spans.add(node.args[0].value)
    return events, spans


def test_the_scan_of_the_code_finds_what_it_emits_today():
    events, spans = emitted()
    assert {"records", "errors", "execution", "cids"} <= events["execution.finished"]
    assert "notification" in events
    assert {"timer_sync", "submit_worker", "graph_webhook", "status_page"} <= spans


def test_the_four_alerts_and_their_thresholds():
    found = rules()
    assert set(found) == {"no-successful-run", "poison-queue", "full-run-failed", "credential-expiring"}
    no_run = found["no-successful-run"]
    assert (no_run["operator"], no_run["threshold"]) == ("LessThan", 1)
    assert "ago(${noRunMinutes}m)" in no_run["query"] and "success == true" in no_run["query"]
    assert alerts()["variables"]["noRunMinutes"]["value"]["operator"] == {
        "type": "multiply", "operands": {"operand_1": 2, "operand_2": "timerIntervalMinutes"}}
    poison = found["poison-queue"]
    assert (poison["operator"], poison["threshold"]) == ("GreaterThan", 0) and "poison > 0" in poison["query"]
    failed = found["full-run-failed"]
    assert (failed["operator"], failed["threshold"]) == ("GreaterThan", 0)
    assert '== "full"' in failed["query"] and '== "Failed"' in failed["query"]
    expiring = found["credential-expiring"]
    assert "days_left <= ${expiryWarnDays}" in expiring["query"]
    assert alerts()["variables"]["expiryWarnDays"]["value"] == WARN_DAYS == 30  # as `status` warns
    for rule in found.values():  # a window shorter than the evaluation period would leave gaps
        assert _minutes(rule["windowSize"]) >= _minutes(rule["evaluationFrequency"]), rule["name"]


def _minutes(duration: str) -> int:
    match = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?", duration)
    assert match, duration
    days, hours, minutes = (int(g or 0) for g in match.groups())
    return (days * 24 + hours) * 60 + minutes


def test_the_no_run_window_covers_the_longest_timer_interval():
    longest = next(d["argument"] for d in BicepParser().parse(file_path=MAIN)["parameters"]["timerIntervalMinutes"]
                   ["decorators"] if d["type"] == "max_value")
    assert 2 * longest <= _minutes(rules()["no-successful-run"]["windowSize"])


def test_every_rule_mails_the_action_group():
    resources = alerts()["resources"]
    group = resources["actionGroup"]["config"]["properties"]
    assert group["emailReceivers"][0]["emailAddress"] == "alertEmail"
    rule = resources["alertRules"]["config"]["config"]["properties"]
    assert rule["actions"]["actionGroups"] == [{"operator": {"type": "property_accessor", "operands": {
        "operand_1": "actionGroup", "operand_2": "id"}}}]
    assert rule["scopes"] == ["appInsightsId"] and rule["criteria"]["allOf"][0]["timeAggregation"] == "Count"
    module = BicepParser().parse(file_path=MAIN)["modules"]["alerts"]["config"]
    assert module["config"]["params"]["alertEmail"] == "alertEmail"
    assert module["config"]["params"]["timerIntervalMinutes"] == "timerIntervalMinutes"


def test_the_default_timer_interval_matches_the_default_schedule():
    params = BicepParser().parse(file_path=MAIN)["parameters"]
    schedule = params["timerSyncSchedule"]["default"]
    match = re.fullmatch(r"0 \*/(\d+) \* \* \* \*", schedule)
    assert match and int(match.group(1)) == params["timerIntervalMinutes"]["default"], schedule


def test_the_app_emits_what_the_alerts_read():
    events, spans = emitted()
    for name, rule in rules().items():
        query = rule["query"]
        for request in _REQUEST.findall(query) if query.startswith("requests") else []:
            assert request in spans, f"alert {name} reads requests named {request!r}; the app has no such span"
        for event in _EVENT.findall(query):
            fields = set(_FIELD.findall(query)) - {"event"}
            known = events.get(event)
            assert known is not None, f"alert {name} reads event {event!r}: the app does not emit it"
            assert fields <= known, f"alert {name} reads {sorted(fields - known)} of {event!r}, which has {sorted(known)}"
        assert query.startswith(("requests", "traces")), name


