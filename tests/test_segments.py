"""Full runs in segments (issue 11): a run read over several invocations, continued through the run queue,
resumed after a kill, and planned once every chain is complete. Real HTTP to the emulators; the embedded store
in-process, and Azurite with the host stand-in in a real process that is killed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox.emulators import GRAPH_TOKEN
from sandbox.tools.bench import tenant_pages
from sandbox.tools.verify import mismatches
from shared.admin.setup import run_setup
from shared.app import assets_client, on_segment_message, open_backend, open_run_queue, timer_tick
from shared.contract.checkpoints import USERS_DELTA
from shared.contract.messages import SegmentMessage
from shared.deliver.worker import push_queued
from shared.produce.segments import load_cursor
from shared.settings import load_settings
from shared.store import history
from shared.store.ports import QueuedMessage

ROOT = Path(__file__).resolve().parents[1]
CHAIN_PATHS = ("/v1.0/users/delta", "/v1.0/groups/delta", "/v1.0/groups", "/v1.0/devices",
               "/v1.0/servicePrincipals", "/v1.0/subscribedSkus", "/v1.0/deviceManagement/managedDevices",
               "/v1.0/users")


@pytest.fixture
def slow_box(box):
    """Small pages and 20 ms a request: the 300-user tenant takes about a second and a half to read, so short
    segments cut every chain into several."""
    box.graph.page_sizes.update(users=10, groups=10)
    box.graph.latency = 0.02
    return box


def _settings(box, tmp_path, **extra):
    settings = load_settings({**box.settings(), "ENTRA_ASSETS_HOME": str(tmp_path / "home"),
                              "SEGMENT_SECONDS": "0.25", **extra})
    run_setup(settings)
    return settings


def _chain_requests(box) -> int:
    return sum(1 for r in box.graph.requests if r.path in CHAIN_PATHS)


def _tenant_pages(box) -> int:
    """The pages of the full run's chains, counted by a plain crawl (not by the code under test)."""
    pages = sum(tenant_pages(box.graph.base_url, GRAPH_TOKEN).values())
    box.graph.reset_log()
    return pages


def _continue(settings, limit: int = 100) -> tuple[object, int]:
    """Deliver the run queue's messages to ``on_segment_message`` as the host does, until the run is planned;
    returns its result and the number of segments delivered."""
    runs = open_run_queue(settings)
    for delivered in range(1, limit):
        [message] = runs.receive(max_messages=1, visibility_timeout=60)
        result = on_segment_message(settings, message)
        runs.delete(message)
        if result is not None:
            return result, delivered
    raise AssertionError("the run never completed")


def _push(settings) -> None:
    backend = open_backend(settings)
    while push_queued(backend.queue, backend.payloads, backend.state, assets_client(settings)).messages:
        pass


def test_a_full_run_in_segments_reads_every_page_once_and_assets_equals_the_tenant(slow_box, tmp_path):
    settings = _settings(slow_box, tmp_path)
    expected = _tenant_pages(slow_box)
    assert timer_tick(settings) is None  # the first segment: the run goes on
    state = open_backend(settings).state
    cursor = load_cursor(state)
    assert cursor.segment == 1 and not cursor.complete and cursor.pages > 0
    assert state.checkpoint(USERS_DELTA) is None  # a round's delta link only once it is complete, via the worker
    result, delivered = _continue(settings)
    # each segment read, then one continuation each (the plan may have had an invocation of its own)
    assert len(result.segments) >= 5 and delivered in (len(result.segments) - 1, len(result.segments))
    assert load_cursor(state) is None
    assert not list((settings.home / "payloads").glob("run-*"))  # the staged parts went
    assert _chain_requests(slow_box) == expected  # every page read once, whatever the segments
    _push(settings)
    found, compared = mismatches(slow_box.tenant, slow_box.assets)
    assert not found and compared > 500
    assert state.checkpoint(USERS_DELTA)


def test_a_continuation_delivered_twice_changes_nothing(slow_box, tmp_path):
    settings = _settings(slow_box, tmp_path)
    timer_tick(settings)
    runs = open_run_queue(settings)
    [message] = runs.receive(max_messages=1, visibility_timeout=60)
    assert on_segment_message(settings, message) is None  # segment 2
    pages = load_cursor(open_backend(settings).state).pages
    requests = _chain_requests(slow_box)
    assert on_segment_message(settings, message) is None  # the same message again: stale, nothing read
    assert _chain_requests(slow_box) == requests and load_cursor(open_backend(settings).state).pages == pages
    stale = QueuedMessage("x", SegmentMessage("another-run", 1, time.time()).body(), 1, None)
    assert on_segment_message(settings, stale) is None and _chain_requests(slow_box) == requests


def test_a_refused_chain_fails_its_type_alone_across_segments(slow_box, tmp_path):
    slow_box.graph.denied.add("devices")
    settings = _settings(slow_box, tmp_path)
    timer_tick(settings)
    with pytest.raises(Exception, match="Device") as raised:
        _continue(settings)
    assert "Device.Read.All" in str(raised.value)
    _push(settings)
    found, _ = mismatches(slow_box.tenant, slow_box.assets)
    assert found and all(line.startswith("Device ") for line in found)  # every other type is in Assets


def test_a_stalled_run_is_resumed_by_the_timer(slow_box, tmp_path):
    """The continuation was lost (poisoned): once no segment ended for a while, the next tick reads on."""
    settings = _settings(slow_box, tmp_path)
    timer_tick(settings)
    runs = open_run_queue(settings)
    [lost] = runs.receive(max_messages=1, visibility_timeout=60)
    runs.delete(lost)
    cursor = load_cursor(open_backend(settings).state)
    assert timer_tick(settings, now=time.time() + 5) is None  # not stalled yet: a catch-up, no segment
    assert load_cursor(open_backend(settings).state).segment == cursor.segment
    timer_tick(settings, now=time.time() + 3600)
    assert load_cursor(open_backend(settings).state).segment == cursor.segment + 1


def test_bad_segment_settings_are_refused_with_the_setting_named():
    with pytest.raises(Exception, match="SEGMENT_SECONDS"):
        load_settings({"SEGMENT_SECONDS": "0"})
    with pytest.raises(Exception, match="RUN_QUEUE_NAME"):
        load_settings({"RUN_QUEUE_NAME": "entra-assets-changes"})


def _full_runs(state) -> list[dict]:
    return [r for r in history.read_runs(state) if r["kind"] == "full"]


def test_a_segment_killed_midway_is_repeated_at_most_once_over_azurite(slow_box, app_env, tmp_path):
    """SIGKILL the host stand-in (a real process running full_run_segment and submit_worker on Azurite) in the
    middle of a segment; a new host finishes the run from the last checkpoint. It reads again only what the
    killed segment read, and Assets ends equal to the tenant."""
    env = {**os.environ, **app_env, "SEGMENT_SECONDS": "0.3"}
    settings = load_settings(env)
    run_setup(settings)
    expected = _tenant_pages(slow_box)
    state = open_backend(settings).state
    assert timer_tick(settings) is None  # segment 1 here; the host continues the run
    serve = [sys.executable, "-m", "shared.cli", "serve", "--port", "0", "--no-timer"]
    host = subprocess.Popen(serve, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while (cursor := load_cursor(state)) is None or cursor.segment < 2:
            assert time.monotonic() < deadline, "the run did not reach its second segment"
            time.sleep(0.01)
        committed = _chain_requests(slow_box)
        while _chain_requests(slow_box) < committed + 3:  # the next segment is reading
            assert time.monotonic() < deadline, "the next segment did not start"
            time.sleep(0.005)
        host.send_signal(signal.SIGKILL)
        host.wait(10)
    finally:
        if host.poll() is None:
            host.kill()
    killed, read_then = load_cursor(state), _chain_requests(slow_box)
    assert killed is not None and not killed.complete
    lost = read_then - killed.pages  # what the killed segment read, which no checkpoint holds
    host = subprocess.Popen(serve, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 150  # the killed segment's message reappears after 60 s, as in Azure
        while load_cursor(state) is not None or not _full_runs(state) \
                or mismatches(slow_box.tenant, slow_box.assets)[0]:
            assert time.monotonic() < deadline, mismatches(slow_box.tenant, slow_box.assets)[0][:3]
            time.sleep(0.5)
    finally:
        host.terminate()
        host.wait(30)
    # A chain reads at most one page past the segment's end, and a page takes at least the 20 ms latency.
    one_segment = len(killed.chains) * (int(0.3 / 0.02) + 2)
    assert 0 < lost <= one_segment
    assert _chain_requests(slow_box) == expected + lost  # read again: the killed segment's pages, nothing more
    found, compared = mismatches(slow_box.tenant, slow_box.assets)
    assert not found and compared > 500
    full_runs = _full_runs(state)
    assert len(full_runs) == 1 and full_runs[0]["segments"] >= 5  # one run in the history, across its segments


def test_status_shows_a_segmented_run_in_progress(slow_box, tmp_path):
    from shared.admin.status import collect_status

    settings = _settings(slow_box, tmp_path)
    assert collect_status(settings)["full_run"] is None
    timer_tick(settings)
    data = collect_status(settings)
    cursor = load_cursor(open_backend(settings).state)
    assert data["importer_status"] == "RUNNING"
    assert data["full_run"]["run"] == cursor.run_id and data["full_run"]["segments"] == 1
    assert data["full_run"]["pages"] == cursor.pages > 0 and data["full_run"]["reads"] == 8


def test_a_run_begun_with_other_object_types_is_replaced_not_continued(slow_box, tmp_path):
    settings = _settings(slow_box, tmp_path)
    timer_tick(settings)
    first = load_cursor(open_backend(settings).state)
    narrower = _settings(slow_box, tmp_path, SYNC_OBJECT_TYPES="User")
    [message] = open_run_queue(narrower).receive(max_messages=1, visibility_timeout=60)
    on_segment_message(narrower, message)
    cursor = load_cursor(open_backend(narrower).state)
    assert cursor is None or (cursor.run_id != first.run_id and set(cursor.chains) == {"users", "sign-ins"})
    assert not [p for p in (narrower.home / "payloads").glob(f"run-{first.run_id}/*")]  # its parts went
