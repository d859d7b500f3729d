"""Run history and current stage: bounded, never losing an append, throttled, and truthful - the counts of the
history after the demo's flow equal what the emulated Assets store reports and holds."""
from __future__ import annotations

import json
import threading
from collections import Counter

import pytest

from sandbox.host.live import live, timed_change
from sandbox.tools.demo import _change_tenant
from shared.admin.setup import run_setup
from shared.admin.status import collect_status
from shared.app import on_queue_message, open_backend, sync_full, timer_tick
from shared.errors import GraphCredentialsError, ImportSourceError
from shared.records.schema import OBJECT_TYPES
from shared.settings import load_settings
from shared.store import history
from shared.store.history import RunRecord, StageTracker
from shared.store.local import LocalStateStore
from shared.store.ports import QueuedMessage

TYPES = tuple(t.name for t in OBJECT_TYPES)


def _record(n: int, **fields) -> RunRecord:
    return RunRecord(**({"triggers": ["cli"], "kind": "full", "started": f"2026-01-01T00:00:{n % 60:02d}Z",
                         "seconds": 1.0, "records_pushed": n} | fields))


def test_history_is_bounded_and_newest_first(tmp_path):
    state = LocalStateStore(tmp_path)
    for n in range(history.MAX_RUNS + 5):
        assert history.append(state, _record(n))
    runs = history.read_runs(state)
    assert len(runs) == history.MAX_RUNS
    assert [r["records_pushed"] for r in runs[:3]] == [204, 203, 202] and runs[-1]["records_pushed"] == 5


def test_quiet_catch_ups_in_a_row_are_one_entry(tmp_path):
    state = LocalStateStore(tmp_path)
    quiet = {"kind": "catch-up", "records_pushed": 0, "triggers": ["timer"]}
    for n in range(3):
        history.append(state, _record(n, **quiet, started=f"2026-01-01T00:{n:02d}:00Z"))
    history.append(state, _record(0, **(quiet | {"triggers": ["webhook"]})))  # another trigger: its own entry
    history.append(state, _record(7, kind="catch-up", triggers=["webhook"]))  # pushed something: its own entry
    runs = history.read_runs(state)
    assert [(r["triggers"], r["repeated"]) for r in runs] == [(["webhook"], 1), (["webhook"], 1), (["timer"], 3)]
    assert runs[2]["started"] == "2026-01-01T00:00:00Z" and runs[2]["last_started"] == "2026-01-01T00:02:00Z"


def _concurrent_appends(state, writers: int = 4, each: int = 10) -> None:
    def write(w: int) -> None:
        for n in range(each):
            assert history.append(state, _record(w * 100 + n))
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r["records_pushed"] for r in history.read_runs(state)) == sorted(
        w * 100 + n for w in range(writers) for n in range(each))


def test_concurrent_appends_lose_nothing_locally(tmp_path):
    _concurrent_appends(LocalStateStore(tmp_path))


def test_concurrent_appends_lose_nothing_on_azure_storage(app_storage):
    from shared.store.azure import AzureStateStore, azure_clients

    container, _, _ = azure_clients(app_storage["AzureWebJobsStorage"], queue_name=app_storage["SYNC_QUEUE_NAME"])
    _concurrent_appends(AzureStateStore(container), writers=3, each=5)


def test_stage_tracker_writes_on_stage_changes_and_throttles_counts(tmp_path):
    state, clock = LocalStateStore(tmp_path), [1_000_000.0]
    tracker = StageTracker(state, "timer", "full", every=5.0, clock=lambda: clock[0])
    tracker("Fetching users", 0)
    for n in range(1, 1000):  # 1,000 progress calls within 4.995 s: no write
        clock[0] += 0.005
        tracker("Fetching users", n)
    assert tracker.writes == 1 and history.read_current(state, clock[0])["count"] == 0
    clock[0] += 0.1
    tracker("Fetching users", 1000)  # 5 s since the last write
    tracker("Submitting data", 10)   # a new stage: at once
    assert tracker.writes == 3
    current = history.read_current(state, clock[0])
    assert current == {"stage": "Submitting data", "trigger": "timer", "kind": "full", "count": 10,
                       "started": history.iso(1_000_000.0), "updated": history.iso(clock[0])}
    assert history.read_current(state, clock[0] + history.STALE_SECONDS + 2) is None  # left by a dead process
    tracker("Done", 10)
    tracker.finish()
    assert history.read_current(state, clock[0]) is None


@pytest.fixture
def env(box, tmp_path):
    return {**box.settings(), "ENTRA_ASSETS_HOME": str(tmp_path / "home")}


def _assets_counts(execution) -> tuple[Counter, dict[str, int]]:
    """(created/updated/identical, entries per type) as the emulated Assets reports one execution."""
    totals, entries = Counter(), {}
    for entry in execution.result_map.values():
        totals.update(created=entry["objectsCreated"], updated=entry["objectsUpdated"],
                      identical=entry["objectsIdentical"])
        if entry["entriesInSource"]:
            entries[entry["objectTypeName"]] = entry["entriesInSource"]
    return totals, entries


def test_history_after_the_demo_flow_matches_what_assets_reports_and_holds(box, env):
    settings = load_settings(env)
    tenant = box.tenant
    sizes = {"User": len(tenant.users), "Group": len(tenant.groups), "Device": len(tenant.devices),
             "Application": len(tenant.service_principals), "License": len(tenant.skus),
             "Managed Device": len(tenant.managed_devices)}
    run_setup(settings)
    sync_full(settings)
    sync_full(settings)                      # unchanged tenant: no execution
    _change_tenant(box)
    sync_full(settings)                      # the changes, departures marked Deleted
    ids = sorted(box.tenant.users)
    with live(box, env):                     # a live change: Graph notification -> webhook -> queue -> worker
        mover = next(u for u in ids[100:] if box.tenant.managers.get(u) and box.tenant.managers[u] != ids[2])
        timed_change(box, "manager change", lambda: box.tenant.set_manager(mover, ids[2]),
                     lambda: box.assets.find("User", "Entra Object ID", mover).attributes.get("Manager")
                     == [box.assets.find("User", "Entra Object ID", ids[2]).key])
    data = collect_status(settings)
    runs = list(reversed(data["runs"]))       # oldest first
    assert data["current"] is None and data["importer_status"] == "IDLE"
    first, unchanged, changes, *live_runs = runs
    assert [r["triggers"] for r in (first, unchanged, changes)] == [["cli"]] * 3
    assert [r["kind"] for r in (first, unchanged, changes)] == ["full"] * 3
    assert first["read"] == unchanged["read"] == sizes
    assert (unchanged["executions"], unchanged["records_pushed"], unchanged["stage"]) == (0, 0, "Done")
    assert changes["deactivated"] == {"User": 1, "Device": 1}
    assert live_runs and all(r["triggers"] == ["webhook"] and r["kind"] == "catch-up" for r in live_runs)
    # Every execution Assets ran is one history entry, with Assets' own counts.
    pushed = [r for r in runs if r["executions"]]
    assert len(pushed) == len(box.assets.executions) == sum(r["executions"] for r in runs)
    for run, execution in zip(pushed, box.assets.executions, strict=True):
        totals, entries = _assets_counts(execution)
        assert (run["created"], run["updated"], run["identical"]) == (
            totals["created"], totals["updated"], totals["identical"])
        assert run["records"] == entries and run["records_pushed"] == sum(entries.values())
        assert run["stage"] == "Done" and not run["errors"]
    # Nothing is ever deleted from Assets: every object there was created by exactly one run of the history.
    assert sum(r["created"] for r in runs) == sum(len(box.assets.objects(t)) for t in TYPES) > len(box.tenant.users)
    assert first["created"] == first["records_pushed"] == sum(first["records"].values())
    # _change_tenant: a hire, a manager change, a disabled account, a respelt department, a deleted user.
    assert changes["records"]["User"] == 5 and changes["created"] >= 1


def test_failed_runs_are_recorded_with_their_reason(box, env):
    settings = load_settings(env)
    run_setup(settings)
    sync_full(settings)
    backend = open_backend(settings)
    box.tenant.update_user(sorted(box.tenant.users)[3], jobTitle="Pending")
    box.assets.disable()
    message = QueuedMessage("m1", {"v": 1, "kind": "catchup", "trigger": "timer", "created": 1.0}, 1, None)
    with pytest.raises(ImportSourceError):
        on_queue_message(settings, message)
    failed = history.read_runs(backend.state)[0]
    assert (failed["triggers"], failed["kind"], failed["stage"], failed["executions"]) == (
        ["timer"], "catch-up", "Failed", 0)
    assert "DISABLED" in failed["errors"][0]
    box.assets.enable()
    on_queue_message(settings, message)  # the redelivery succeeds
    done = history.read_runs(backend.state)[0]
    assert (done["stage"], done["records"], done["updated"]) == ("Done", {"User": 1}, 1)
    # A timer full run that fails in Graph never reaches the worker: the producer records it, without secrets.
    bad = load_settings({**env, "GRAPH_ACCESS_TOKEN": "expired-token-value"})
    with pytest.raises(GraphCredentialsError):
        timer_tick(bad, now=10**10)
    graph_failed = history.read_runs(backend.state)[0]
    assert (graph_failed["triggers"], graph_failed["kind"], graph_failed["stage"]) == (["timer"], "full", "Failed")
    assert graph_failed["errors"] and "expired-token-value" not in json.dumps(graph_failed)


def test_a_timer_full_run_with_nothing_to_push_is_recorded_with_no_execution(box, env):
    settings = load_settings({**env, "REPAIR_INTERVAL_DAYS": "0"})  # a tick this late would be a repair
    run_setup(settings)
    sync_full(settings)
    backend = open_backend(settings)
    assert timer_tick(settings, now=10**10).queued == 0 and backend.queue.depth().messages == 1
    [message] = backend.queue.receive(1, visibility_timeout=60)
    on_queue_message(settings, message)
    newest = history.read_runs(backend.state)[0]
    assert (newest["triggers"], newest["kind"], newest["stage"], newest["executions"]) == (
        ["timer"], "full", "Done", 0)
    assert newest["read"]["User"] == len(box.tenant.users)


def test_status_shows_the_current_stage_while_a_run_goes(box, env):
    settings = load_settings(env)
    run_setup(settings)
    seen: list[tuple[str, str | None, str]] = []

    def progress(stage: str, count: int) -> None:
        if stage in ("Fetching groups", "Waiting for Assets"):  # the tracker wrote the stage before these
            data = collect_status(settings)
            seen.append((stage, (data["current"] or {}).get("stage"), data["importer_status"]))
    sync_full(settings, progress)
    # groups are mapped last (shared/produce/full.py MAPPING_ORDER): the stage before them is Intune's
    assert seen[0][0] == "Fetching groups" and seen[0][1] == "Fetching Intune devices"
    assert seen[-1] == ("Waiting for Assets", "Submitting data", "RUNNING")
    assert all(status == "RUNNING" for _, _, status in seen)
    assert collect_status(settings)["current"] is None


def test_a_short_catch_up_writes_no_stage(tmp_path):
    """A webhook's catch-up is over in well under a second: no stage record before its push, unless it runs
    longer than ``quiet_for``."""
    state = LocalStateStore(tmp_path)
    clock = [1_000_000.0]
    tracker = StageTracker(state, "webhook", "catch-up", quiet_for=2.0, clock=lambda: clock[0])
    for stage in ("Fetching users", "Submitting data", "Waiting for Assets", "Done"):
        tracker(stage, 1)
        clock[0] += 0.1
    tracker.finish()
    assert tracker.writes == 0 and history.read_current(state, clock[0]) is None
    slow = StageTracker(state, "webhook", "catch-up", quiet_for=2.0, clock=lambda: clock[0])
    slow("Fetching users", 0)
    clock[0] += 2.5
    slow("Fetching users", 5_000)
    assert history.read_current(state, clock[0])["count"] == 5_000  # running long: shown
    slow.finish()
    assert history.read_current(state, clock[0]) is None
