"""Crash recovery and nothing stale (issue 9): what a killed or failed run leaves behind never blocks the next
run and never overwrites newer data. Real HTTP to the emulators, the embedded store, real processes killed."""
from __future__ import annotations

import fcntl
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox.tools.verify import statuses, verify_directory, verify_users
from shared.admin.setup import run_setup
from shared.app import assets_client, graph_client, open_backend, sync_full, sync_incremental
from shared.deliver import open_executions
from shared.deliver.worker import push_queued
from shared.errors import WriterBusy
from shared.produce.full import RunOptions, run_full
from shared.settings import load_settings
from shared.store.local import LocalStateStore
from shared.store.ports import shard_of

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(box, tmp_path):
    return {**box.settings(), "ENTRA_ASSETS_HOME": str(tmp_path / "home")}


@pytest.fixture
def settings(box, env):
    settings = load_settings(env)
    run_setup(settings)
    sync_full(settings)  # the baseline: Assets holds the tenant
    return settings


def _attribute(box, type_name: str, object_id: str, name: str):
    obj = box.assets.find(type_name, "Entra Object ID", object_id)
    return (obj.attributes.get(name) or [None])[0] if obj else None


def _killed_run(settings) -> str:
    """A full run whose worker never came: its payload is written and its message taken by a 'dead' worker
    (invisible for the worker's 30 min). Returns the payload name."""
    backend = open_backend(settings)
    result = run_full(graph_client(settings), backend.state, backend.queue, backend.payloads,
                      options=RunOptions.from_settings(settings))
    assert backend.queue.receive(32, visibility_timeout=1800)
    return result.payload


def _replay(settings) -> None:
    """Every message left invisible by a dead worker becomes visible at once (the 30 minutes pass)."""
    with sqlite3.connect(settings.home / "state.db") as db:
        db.execute("UPDATE queue SET visible_at = 0")


def _leftover_payloads(settings) -> list[str]:
    root = settings.home / "payloads"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def test_a_payload_replayed_after_a_newer_full_run_changes_nothing(box, settings):
    tenant = box.tenant
    user, leaver = sorted(tenant.users)[:2]
    group = next(g for g in sorted(tenant.groups) if any(t == "user" for t, _ in tenant.members.get(g, [])))
    member = next(m for t, m in tenant.members[group] if t == "user")
    tenant.update_user(user, jobTitle="Title v1")
    old_payload = _killed_run(settings)
    tenant.update_user(user, jobTitle="Title v2")
    tenant.delete_user(leaver)
    tenant.remove_member(group, member)
    sync_full(settings)
    _replay(settings)
    report = sync_incremental(settings)
    assert sum(p.superseded for p in report.pushes) == 1
    assert _attribute(box, "User", user, "Job Title") == "Title v2"
    assert statuses(box.assets, "User")[leaver] == "Deleted"
    facts = verify_directory(tenant, box.assets)
    assert facts["groups: Members links resolved"] == facts["groups: Members links in tenant"]
    assert old_payload not in _leftover_payloads(settings)
    assert open_backend(settings).queue.depth().messages == 0


def test_a_payload_overtaken_by_a_catch_up_pushes_only_what_is_still_newest(box, settings):
    tenant = box.tenant
    user = min(tenant.users)
    device = min(tenant.devices)
    tenant.update_user(user, jobTitle="Title v1")
    tenant.update_device(device, displayName="Renamed in the killed run")
    _killed_run(settings)
    tenant.update_user(user, jobTitle="Title v2")
    sync_incremental(settings)  # the catch-up pushes the user as it is now; devices are not in delta
    _replay(settings)
    report = sync_incremental(settings)
    assert sum(p.stale["user"] for p in report.pushes) >= 1
    assert _attribute(box, "User", user, "Job Title") == "Title v2"      # the stale record was dropped
    assert _attribute(box, "Device", device, "Name") == "Renamed in the killed run"  # the rest went out
    # the killed run's older delta link did not replace the catch-up's: the next catch-up finds nothing
    assert sync_incremental(settings).records_pushed == 0


def test_an_object_a_catch_up_read_unchanged_is_not_overwritten_by_an_older_payload(box, settings):
    """The change in the killed run's payload was undone before the catch-up: the catch-up pushes nothing for
    the user, but it read the user, so the older payload's record is still stale."""
    tenant = box.tenant
    user = min(tenant.users)
    title = tenant.users[user].get("jobTitle")
    tenant.update_user(user, jobTitle="Briefly wrong")
    _killed_run(settings)
    tenant.update_user(user, jobTitle=title)
    assert sync_incremental(settings).records_pushed == 0
    _replay(settings)
    sync_incremental(settings)
    assert _attribute(box, "User", user, "Job Title") == title


def test_an_execution_left_open_is_cancelled_by_the_next_writer_instead_of_waited_for(box, settings):
    assets = assets_client(settings)
    backend = open_backend(settings)
    orphan = assets.start()  # what a writer killed after `start` leaves: an INGESTING execution and its note
    open_executions.note_opened(backend.state, orphan)
    box.tenant.update_user(min(box.tenant.users), jobTitle="After the crash")

    sync_full(settings, assets=assets_client(settings, sleep=_no_waiting))
    assert [e.status for e in box.assets.executions][-2:] == ["CANCELLED", "DONE"]
    assert backend.state.checkpoint(open_executions.OPEN) is None


def test_an_execution_a_writer_left_while_starting_it_is_found_through_the_import_status(box, settings):
    assets = assets_client(settings)
    backend = open_backend(settings)
    open_executions.note_starting(backend.state)   # killed inside `start`: no links noted
    assets.start()
    box.tenant.update_user(min(box.tenant.users), jobTitle="After the crash")
    sync_full(settings)
    assert [e.status for e in box.assets.executions][-2:] == ["CANCELLED", "DONE"]


def test_a_start_that_failed_in_transit_is_reconciled_before_it_is_retried(box, settings):
    """Assets created the execution but the answer was lost: a blind retry would meet our own execution's
    409 IN_PROGRESS and wait 600 s. The import's status is asked first and that execution cancelled."""
    box.assets.fail_next("/executions", status=500, after_accept=True)
    box.tenant.update_user(min(box.tenant.users), jobTitle="Lost answer")
    sync_full(settings, assets=assets_client(settings, sleep=_no_waiting))
    assert [e.status for e in box.assets.executions][-2:] == ["CANCELLED", "DONE"]
    assert _attribute(box, "User", min(box.tenant.users), "Job Title") == "Lost answer"


def test_a_last_chunk_taken_before_its_answer_was_lost_is_not_sent_again(box, settings):
    """Sending `completed: true` again after Assets took it would be refused (the execution is no longer
    INGESTING); the execution's status shows it was taken, and the run goes on to wait for it."""
    box.assets.fail_next("/data", status=500, after_accept=True)
    box.tenant.update_user(min(box.tenant.users), jobTitle="Last chunk")
    report = sync_full(settings, assets=assets_client(settings, sleep=_no_waiting))
    assert box.assets.executions[-1].status == "DONE" and len(box.assets.executions[-1].chunks) == 1
    assert report.records_pushed == 1 and not report.pushes[0].errors
    assert _attribute(box, "User", min(box.tenant.users), "Job Title") == "Last chunk"


def _no_waiting(seconds: float) -> None:
    """A sleep for the Assets client that fails when ``start`` waits out a 409 IN_PROGRESS (5 s polls)."""
    assert seconds < 5, "start waited for an execution (409 IN_PROGRESS) instead of cancelling it"
    time.sleep(min(seconds, 0.05))


def test_a_sync_killed_while_assets_processes_leaves_nothing_that_blocks_the_next(box, env, settings):
    """SIGKILL a real `entra-assets sync --full` while it waits for its execution; a run started at once after
    takes over the dead holder's lease, cancels the open execution, pushes everything again and cleans up."""
    box.assets.processing_delay = 30
    for uid in sorted(box.tenant.users)[:20]:
        box.tenant.update_user(uid, jobTitle="Pushed by the killed run")
    before = len(box.assets.executions)
    box.assets.reset_log()
    process = subprocess.Popen([sys.executable, "-m", "shared.cli", "sync", "--full"], cwd=ROOT,
                               env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not any(r.method == "GET" and r.path.endswith("/status") for r in box.assets.requests):
        assert process.poll() is None and time.monotonic() < deadline, "the sync never waited for Assets"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert box.assets.executions[-1].status == "PROCESSING"
    box.assets.processing_delay = 0
    started = time.monotonic()
    sync_full(settings)  # raises LeaseBusy without the dead-holder check; waits 600 s without the orphan cancel
    assert time.monotonic() - started < 30
    assert [e.status for e in box.assets.executions[before:]] == ["CANCELLED", "DONE"]
    assert all(_attribute(box, "User", uid, "Job Title") == "Pushed by the killed run"
               for uid in sorted(box.tenant.users)[:20])
    facts = verify_users(box.tenant, box.assets)
    assert facts["users in Assets"] == facts["users in tenant"]
    assert _leftover_payloads(settings) == []
    _replay(settings)  # the dead run's message comes back after 30 min: superseded, dropped
    assert sum(p.superseded for p in sync_incremental(settings).pushes) == 1
    assert open_backend(settings).queue.depth().messages == 0


def test_a_dead_lease_holder_is_taken_over_at_once(settings):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from shared.store.local import LocalStateStore;"
        "LocalStateStore(sys.argv[1]).lease('writer/x', ttl=60).__enter__(); print('held', flush=True);"
        "time.sleep(60)"), str(settings.home)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    store = LocalStateStore(settings.home)
    with pytest.raises(Exception, match="held by another process"):
        store.lease("writer/x", ttl=60).__enter__()
    holder.kill()
    holder.wait()
    started = time.monotonic()
    with store.lease("writer/x", ttl=60):
        assert time.monotonic() - started < 1


def test_a_live_writer_is_waited_for_with_one_line_then_reported(box, settings, caplog):
    backend = open_backend(settings)
    assets = assets_client(settings)
    with backend.state.lease(f"writer/{assets.source_key()}", ttl=60):  # a live writer (this process)
        backend.queue.send({"v": 1, "kind": "catchup", "trigger": "cli", "created": time.time()})
        with caplog.at_level(logging.WARNING), pytest.raises(WriterBusy, match="stay queued"):
            push_queued(backend.queue, backend.payloads, backend.state, assets, lease_wait=1.5)
    waits = [r for r in caplog.records if "holds the Assets import source" in r.getMessage()]
    assert len(waits) == 1 and "expires in" in waits[0].getMessage()
    assert backend.queue.depth().messages == 1  # nothing was lost


def test_leftovers_of_dead_runs_are_swept_and_a_live_write_is_kept(box, settings):
    root = settings.home / "payloads"
    dead_payload, dead_write, live_write = (root / "full-dead.jsonl", root / ".full-dead.jsonl.1.tmp",
                                            root / ".full-live.jsonl.2.tmp")
    for path in (dead_payload, dead_write, live_write):
        path.write_bytes(b"[]\n")
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    with open(live_write, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # its writer is alive
        report = sync_full(settings)
    assert report.pushes[0].leftovers == 2
    assert _leftover_payloads(settings) == [live_write.name]


def test_what_a_writer_that_died_after_done_had_sent_is_compared_again(box, settings, monkeypatch):
    """The execution finished (Assets created the hire) but the writer died before its commit, and the tenant
    then deleted the hire: the state never knew it, so without the in-flight note no run would mark it
    Deleted, and a title the tenant reverted would never be put back either."""
    tenant = box.tenant
    hire = tenant.add_user({"displayName": "Short Stay", "userPrincipalName": "short.stay@sandbox.example",
                            "accountEnabled": True})
    reverted = min(tenant.users)
    title = tenant.users[reverted].get("jobTitle")
    tenant.update_user(reverted, jobTitle="Reverted later")
    backend = open_backend(settings)
    run_full(graph_client(settings), backend.state, backend.queue, backend.payloads,
             options=RunOptions.from_settings(settings))
    real_commit = LocalStateStore.commit

    def dies_at_its_commit(self, hashes, *args, **kwargs):
        if hashes and "?" not in {h for by_id in hashes.values() for h in by_id.values()}:
            raise KeyboardInterrupt("the writer dies after DONE, before its commit")
        return real_commit(self, hashes, *args, **kwargs)
    with monkeypatch.context() as patch:
        patch.setattr(LocalStateStore, "commit", dies_at_its_commit)
        with pytest.raises(KeyboardInterrupt):
            push_queued(backend.queue, backend.payloads, backend.state, assets_client(settings))
    assert statuses(box.assets, "User")[hire] == "Active" and box.assets.executions[-1].status == "DONE"
    tenant.delete_user(hire, permanent=True)
    tenant.update_user(reverted, jobTitle=title)
    sync_full(settings)
    assert statuses(box.assets, "User")[hire] == "Deleted"
    assert _attribute(box, "User", reverted, "Job Title") == title


def test_a_writer_that_died_between_the_shards_of_its_commit_leaves_nothing_believed_pushed(box, settings,
                                                                                           monkeypatch):
    """The worker commits what an execution sent one id shard at a time (``Outgoing.batches``). Killed after
    some shards, before the hire's: the hire is in Assets but not in the state. The execution's note must stay
    open until the last shard, so that the next writer marks what it sent for comparison and the hire, deleted
    meanwhile, is marked Deleted. (Fails when the checkpoints - the note's closing among them - go with an
    early shard.)"""
    tenant = box.tenant
    hire = tenant.add_user({"displayName": "Short Stay", "userPrincipalName": "short.stay@sandbox.example",
                            "accountEnabled": True})
    while shard_of(hire) == 0:  # at least one shard is committed before the hire's
        tenant.delete_user(hire, permanent=True)
        hire = tenant.add_user({"displayName": "Short Stay", "userPrincipalName": "short.stay@sandbox.example",
                                "accountEnabled": True})
    for uid in sorted(tenant.users)[:64]:  # changes in every shard: only what changed is pushed
        tenant.update_user(uid, jobTitle="Renamed")
    backend = open_backend(settings)
    run_full(graph_client(settings), backend.state, backend.queue, backend.payloads,
             options=RunOptions.from_settings(settings))
    real_commit, committed = LocalStateStore.commit, []

    def dies_at_the_hires_shard(self, hashes, checkpoints, *args, **kwargs):
        if hire in hashes.get("user", {}):
            raise KeyboardInterrupt("the writer dies between two shards of its commit")
        committed.append(sum(map(len, hashes.values())))
        return real_commit(self, hashes, checkpoints, *args, **kwargs)
    with monkeypatch.context() as patch:
        patch.setattr(LocalStateStore, "commit", dies_at_the_hires_shard)
        with pytest.raises(KeyboardInterrupt):
            push_queued(backend.queue, backend.payloads, backend.state, assets_client(settings))
    assert sum(committed) > 0, "no shard was committed before the kill"
    assert statuses(box.assets, "User")[hire] == "Active" and hire not in dict(backend.state.hashes("user"))
    tenant.delete_user(hire, permanent=True)
    _replay(settings)  # the killed pass's messages come back
    sync_full(settings)
    assert statuses(box.assets, "User")[hire] == "Deleted"
    assert not open_backend(settings).state.checkpoint(open_executions.OPEN)
