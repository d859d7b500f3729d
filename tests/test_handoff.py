"""The worker hands a long Assets execution on from invocation to invocation (issue 11): it sends for at most
SEGMENT_SECONDS (plus one chunk), then the next invocation sends on; DONE is asked for by later, delayed
messages, not awaited in a loop. Real HTTP to the emulators; the embedded store; the queue messages delivered
one by one as the Functions host does (``on_queue_message``, then the host deletes the message)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sandbox.tools.verify import mismatches
from shared.admin.setup import run_setup
from shared.admin.status import collect_status
from shared.app import on_queue_message, on_segment_message, open_backend, open_run_queue, timer_tick
from shared.cli import main as cli
from shared.clients.assets import AssetsClient
from shared.contract.messages import ChangesMessage, HandOnMessage, NotifiedChange
from shared.deliver import handoff, push
from shared.deliver.open_executions import OPEN
from shared.settings import load_settings
from shared.store import history
from shared.store.ports import QueuedMessage

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 0.3  # SEGMENT_SECONDS of these tests


@pytest.fixture
def slow_assets(box, monkeypatch):
    """Chunks of 10 records, 20 ms an Assets request and a second of processing: the 300-user tenant's ~900
    records take several invocations to send, and DONE comes after the last one ended."""
    monkeypatch.setattr(push, "CHUNK_RECORDS", 10)
    monkeypatch.setattr(handoff, "DELAYS", (0.2,))
    monkeypatch.setattr(handoff, "AWAIT_INLINE_SECONDS", 0.1)
    box.assets.latency = 0.02
    box.assets.processing_delay = 1.0
    return box


def _settings(box, tmp_path):
    settings = load_settings({**box.settings(), "ENTRA_ASSETS_HOME": str(tmp_path / "home"),
                              "SEGMENT_SECONDS": str(BUDGET)})
    run_setup(settings)
    return settings


def _produce(settings) -> None:
    """The timer's full run, its segments delivered from the run queue, until its records are queued."""
    if timer_tick(settings) is not None:
        return
    runs = open_run_queue(settings)
    while True:
        [message] = runs.receive(max_messages=1, visibility_timeout=60)
        result = on_segment_message(settings, message)
        runs.delete(message)
        if result is not None:
            return


def _handed_on(box, tmp_path):
    """A full run produced and its records message delivered once: the execution is handed on."""
    settings = _settings(box, tmp_path)
    _produce(settings)
    backend = open_backend(settings)
    [first] = backend.queue.receive(max_messages=1, visibility_timeout=60)
    assert on_queue_message(settings, first).handed_on
    backend.queue.delete(first)
    return settings, backend


def _host(settings, limit: float = 60) -> list[tuple[str, float, object]]:
    """Deliver the worker queue's messages one at a time until it is empty and no journal is open; returns
    (kind, seconds, result) per invocation."""
    backend = open_backend(settings)
    invocations = []
    ends = time.monotonic() + limit
    while time.monotonic() < ends:
        batch = backend.queue.receive(max_messages=1, visibility_timeout=60)
        if not batch:
            if handoff.load(backend.state) is None and backend.queue.depth().messages == 0:
                return invocations
            time.sleep(0.05)
            continue
        [message] = batch
        began = time.monotonic()
        result = on_queue_message(settings, message)
        invocations.append((message.body["kind"], time.monotonic() - began, result))
        backend.queue.delete(message)
    raise AssertionError(f"the queue never emptied: {[(k, round(s, 2)) for k, s, _ in invocations]}")


def test_a_long_execution_is_sent_and_awaited_over_invocations_within_the_budget(slow_assets, tmp_path):
    settings = _settings(slow_assets, tmp_path)
    _produce(settings)
    invocations = _host(settings)
    handed_on = [r for _, _, r in invocations if r.handed_on]
    sending = [r for r in handed_on if r.chunks and r is not invocations[-1][2]]
    assert len(handed_on) >= 4, [(k, round(s, 2), r.handed_on) for k, s, r in invocations]
    assert [k for k, _, _ in invocations][1:] == ["handon"] * (len(invocations) - 1)
    assert len(sending) >= 3  # sent over several invocations ...
    assert len(slow_assets.assets.executions) == 1  # ... into one execution
    # DONE was asked for by delayed messages after the last chunk, not awaited in one invocation
    assert sum(1 for _, _, r in invocations if r.handed_on and r.chunks == invocations[-1][2].chunks) >= 2
    # no invocation ran longer than its budget plus a chunk (20 ms) and the bookkeeping of a hand-on
    assert max(seconds for _, seconds, _ in invocations) < BUDGET + 0.7, [round(s, 2) for _, s, _ in invocations]
    found, compared = mismatches(slow_assets.tenant, slow_assets.assets)
    assert not found and compared > 500
    backend = open_backend(settings)
    assert handoff.load(backend.state) is None and backend.state.checkpoint(OPEN) is None
    assert not list((settings.home / "payloads").rglob("*.jsonl"))  # the journal's payloads went
    final = invocations[-1][2]
    [run] = [r for r in history.read_runs(backend.state) if r["kind"] == "full"]  # one run, all its passes
    assert run["records_pushed"] == final.records > 500 and run["executions"] == 1 and run["stage"] == "Done"
    assert run["messages"] == 1 and run["seconds"] >= sum(seconds for _, seconds, _ in invocations)


def test_a_pass_killed_while_sending_starts_the_execution_over_and_ends_equal(slow_assets, tmp_path, monkeypatch):
    """The pass that took the journal up dies after two chunks, as a SIGKILL leaves it (no cleanup ran: the
    execution is open, the journal not resumable): the redelivered message cancels the execution and sends
    everything again into a new one; Assets ends as the tenant says."""
    settings, backend = _handed_on(slow_assets, tmp_path)
    real_submit, sent = push._submit, []

    def dies_after_two(*args, **kwargs):
        if len(sent) == 2:
            raise KeyboardInterrupt  # as a SIGKILL would stop it: nothing after this line runs
        sent.append(1)
        real_submit(*args, **kwargs)
    with monkeypatch.context() as killed:
        killed.setattr(push, "_submit", dies_after_two)
        killed.setattr(push.open_executions, "abandon", lambda state: 0)  # a killed process cleans nothing up
        killed.setattr(AssetsClient, "cancel", lambda self, execution: None)
        [message] = _receive(backend)
        with pytest.raises(KeyboardInterrupt):
            on_queue_message(settings, message)
    journal = handoff.load(backend.state)
    assert journal is not None and not journal.resumable  # left as a dead pass leaves it
    assert slow_assets.assets.executions[0].status == "INGESTING" and backend.state.checkpoint(OPEN)
    on_queue_message(settings, message)  # the host delivers it again once its visibility ends
    backend.queue.delete(message)
    _host(settings)
    assert len(slow_assets.assets.executions) == 2
    assert slow_assets.assets.executions[0].status == "CANCELLED"
    found, compared = mismatches(slow_assets.tenant, slow_assets.assets)
    assert not found and compared > 500


def test_a_change_notified_while_a_journal_is_open_waits_for_the_next_execution(slow_assets, tmp_path):
    settings, _ = _handed_on(slow_assets, tmp_path)
    uid = sorted(slow_assets.tenant.users)[7]
    slow_assets.tenant.update_user(uid, jobTitle="Handed On")
    notified = QueuedMessage("n1", ChangesMessage((NotifiedChange("users", uid),), time.time()).body(), 1, None)
    deferred = on_queue_message(settings, notified)  # delivered by the host while the journal is open
    assert deferred.deferred and not deferred.records and len(slow_assets.assets.executions) == 1
    _host(settings)  # the journal finishes, then the re-queued notification's catch-up runs
    assert len(slow_assets.assets.executions) == 2
    user = next(o for o in slow_assets.assets.objects("User") if o.attributes["Entra Object ID"] == [uid])
    assert user.attributes["Job Title"] == ["Handed On"]


def test_a_stale_hand_on_message_changes_nothing(slow_assets, tmp_path):
    settings, backend = _handed_on(slow_assets, tmp_path)
    journal = handoff.load(backend.state)
    shown = collect_status(settings)
    assert shown["importer_status"] == "RUNNING" and shown["handed_on"]["id"] == journal.id
    assert shown["handed_on"]["records_sent"] > 0 and not shown["handed_on"]["stalled"]
    env = {**slow_assets.settings(), "ENTRA_ASSETS_HOME": str(tmp_path / "home"), "SEGMENT_SECONDS": str(BUDGET)}
    printed = CliRunner().invoke(cli, ["status"], env=env)
    assert printed.exit_code == 0 and "Assets execution handed on between invocations (" in printed.output
    assert f"{shown['handed_on']['records_sent']:,} records sent" in printed.output
    stale = QueuedMessage("s", HandOnMessage(journal.id, journal.step - 1, time.time()).body(), 1, None)
    assert on_queue_message(settings, stale).deferred  # an earlier step's message: the journal is not moved
    assert handoff.load(backend.state).step == journal.step and len(slow_assets.assets.executions) == 1
    _host(settings)
    assert handoff.load(backend.state) is None
    late = QueuedMessage("l", HandOnMessage(journal.id, 99, time.time()).body(), 1, None)
    result = on_queue_message(settings, late)  # the journal is finished: nothing to push, no history entry
    assert result.messages == 0 and len(slow_assets.assets.executions) == 1


def _receive(backend) -> list[QueuedMessage]:
    """The next visible message, waiting out a hand-on delay."""
    for _ in range(100):
        batch = backend.queue.receive(max_messages=1, visibility_timeout=60)
        if batch:
            return batch
        time.sleep(0.05)
    raise AssertionError("no message became visible")


def test_a_host_killed_while_it_sends_on_is_started_over_by_the_next_over_azurite(box, app_env):
    """SIGKILL the host stand-in (a real process on Azurite) while it sends the second part of an execution it
    took up from a hand-on; the message comes back to a new host, which cancels that execution, sends the
    whole run again into a new one and ends with Assets equal to the tenant - one run in the history."""
    for i in range(1200):  # ~2,500 records: five chunks of 500
        box.tenant.add_user({"displayName": f"Load {i}", "userPrincipalName": f"load{i}@contoso.example",
                             "accountEnabled": True})
    box.assets.latency = 0.25          # an invocation's time is up after one chunk
    box.assets.processing_delay = 2.0  # DONE comes after the invocation that sent the last chunk
    env = {**os.environ, **app_env, "SEGMENT_SECONDS": "0.3"}
    settings = load_settings(env)
    run_setup(settings)
    state = open_backend(settings).state
    _produce(settings)
    serve = [sys.executable, "-m", "shared.cli", "serve", "--port", "0", "--no-timer"]
    data = lambda: sum(1 for r in box.assets.requests if r.method == "POST" and r.path.endswith("/data"))
    host = subprocess.Popen(serve, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while (journal := handoff.load(state)) is None or not journal.resumable:
            assert time.monotonic() < deadline, "the execution was not handed on"
            time.sleep(0.005)
        handed_on = data()
        while data() == handed_on:  # the next invocation took it up and sends
            assert time.monotonic() < deadline, "no invocation took the execution up"
            time.sleep(0.002)
        host.send_signal(signal.SIGKILL)
        host.wait(10)
    finally:
        if host.poll() is None:
            host.kill()
    assert not handoff.load(state).resumable and box.assets.executions[0].status == "INGESTING"
    host = subprocess.Popen(serve, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 150  # the killed invocation's message reappears after 60 s, as in Azure
        while handoff.load(state) is not None or mismatches(box.tenant, box.assets)[0]:
            assert time.monotonic() < deadline, mismatches(box.tenant, box.assets)[0][:3]
            time.sleep(0.5)
    finally:
        host.terminate()
        host.wait(30)
    assert [e.status for e in box.assets.executions] == ["CANCELLED", "DONE"]
    found, compared = mismatches(box.tenant, box.assets)
    assert not found and compared > 500
    [run] = [r for r in history.read_runs(state) if r["kind"] == "full" and r["stage"] == "Done"]
    assert run["executions"] == 2 and run["messages"] == 1
