"""Repair runs (REPAIR_INTERVAL_DAYS, ``sync --full --repair``; issue 13): every record in scope pushed again
whatever the hashes say, so hand edits and objects lost in Assets are put right; departures stay departed."""
from __future__ import annotations

import json
import time

import pytest

from shared.app import on_queue_message, on_segment_message, open_backend, open_run_queue, timer_tick
from shared.produce.full import LAST_REPAIR, repair_due
from shared.settings import load_settings


@pytest.fixture
def run(cli):
    """The CLI against the sandbox, ``setup`` done."""
    assert cli("setup").exit_code == 0
    return cli


def test_a_repair_puts_back_hand_edits_and_lost_objects_and_never_resurrects_a_departure(run):
    box = run.box
    ids = sorted(box.tenant.users)
    edited, lost, departed = ids[5], ids[6], next(u for u in ids[50:] if u not in box.tenant.managers.values())
    assert run("sync", "--full").exit_code == 0
    box.tenant.delete_user(departed)
    assert run("sync", "--full").exit_code == 0  # marked Deleted
    user = lambda uid: box.assets.find("User", "Entra Object ID", uid)
    title = user(edited).attributes.get("Job Title")
    box.assets.edit_by_hand(user(edited), "Job Title", ["Edited By Hand"])
    box.assets.delete_by_hand(user(lost))
    executions = len(box.assets.executions)
    plain = run("sync", "--full")  # the hashes are unchanged: nothing is pushed, the edits stay
    assert plain.exit_code == 0 and len(box.assets.executions) == executions
    assert user(edited).attributes["Job Title"] == ["Edited By Hand"] and user(lost) is None
    repaired = run("sync", "--full", "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert len(box.assets.executions) == executions + 1  # one execution for the whole directory
    assert user(edited).attributes.get("Job Title") == title and user(lost) is not None
    assert user(departed).attributes["Status"] == ["Deleted"]  # still departed: not read, so not pushed again
    [entry, *_] = json.loads(run("status", "--json").output)["runs"]
    assert entry["kind"] == "repair" and entry["records_pushed"] >= len(box.tenant.users)
    assert "pushed again (repair)" in repaired.output
    assert run("sync", "--repair").exit_code == 2  # a repair is a full run


def test_the_timer_repairs_every_repair_interval(box, tmp_path):
    settings = load_settings({**box.settings(), "ENTRA_ASSETS_HOME": str(tmp_path / "home"),
                              "FULL_SYNC_INTERVAL_HOURS": "1", "REPAIR_INTERVAL_DAYS": "7"})
    from shared.admin.setup import run_setup

    run_setup(settings)
    state = open_backend(settings).state
    assert not repair_due(state, 7, 1e12)  # no full run yet: the first one starts the clock
    day = 86_400.0
    now = time.time()  # the runs record their real start; the ticks come later than that
    kinds = []
    for tick in (now, now + 2 * day, now + 8 * day):  # a full run each time (due after 1 h)
        kinds.append(_timer_full_run(settings, tick))
    assert kinds == [False, False, True]
    assert float(state.checkpoint(LAST_REPAIR)) >= now
    assert not repair_due(state, 0, now + 1000 * day)  # 0: never


def _timer_full_run(settings, now: float) -> bool:
    """The timer's full run at ``now`` through its segments and the worker; True when it was a repair."""
    result = timer_tick(settings, now=now)
    runs = open_run_queue(settings)
    while result is None:
        [message] = runs.receive(max_messages=1, visibility_timeout=60)
        result = on_segment_message(settings, message)
        runs.delete(message)
    backend = open_backend(settings)
    while batch := backend.queue.receive(max_messages=1, visibility_timeout=60):
        on_queue_message(settings, batch[0])
        backend.queue.delete(batch[0])
    return result.repair
