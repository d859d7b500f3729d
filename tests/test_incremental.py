"""The delta catch-up (``sync`` without ``--full``, the timer between full runs, queued notifications)."""
from __future__ import annotations

import sqlite3
import time

import pytest

from sandbox.graph.directory import UserView
from sandbox.tools.verify import statuses, verify_directory, verify_users
from shared.admin.setup import run_setup
from shared.app import assets_client, catch_up_planner, open_backend, sync_full, sync_incremental
from shared.contract.checkpoints import USERS_DELTA
from shared.deliver import push, worker
from shared.deliver.worker import push_queued
from shared.settings import load_settings


@pytest.fixture
def settings(box, tmp_path):
    settings = load_settings({**box.settings(), "ENTRA_ASSETS_HOME": str(tmp_path / "home")})
    run_setup(settings)
    sync_full(settings)
    return settings


def _consistent(box) -> None:
    users = verify_users(box.tenant, box.assets)
    assert users["managers resolved"] == users["managers in tenant"]
    facts = verify_directory(box.tenant, box.assets)
    for name in ("groups: Members", "groups: Owners"):
        assert facts[f"{name} links resolved"] == facts[f"{name} links in tenant"], name


def test_catch_up_pushes_only_what_changed_and_keeps_unchanged_relationships(box, settings):
    tenant = box.tenant
    ids = sorted(tenant.users)
    worker_bee = next(u for u in ids if tenant.managers.get(u) and u not in tenant.managers.values())
    tenant.update_user(worker_bee, jobTitle="Beekeeper")          # manager unchanged: no manager@delta
    mover = next(u for u in ids[40:] if tenant.managers.get(u) and u != worker_bee)
    tenant.set_manager(mover, ids[0])
    leaver = next(u for u in ids[60:] if u not in tenant.managers.values() and u not in (worker_bee, mover))
    tenant.delete_user(leaver)
    group = next(g for g in sorted(tenant.groups) if len(tenant.members[g]) > 2)
    joiner = next(u for u in ids if ("user", u) not in tenant.members[group] and u not in (leaver,))
    tenant.add_member(group, joiner)
    hire = tenant.add_user({"displayName": "Nova Hire", "userPrincipalName": "nova@sandbox.example",
                            "department": "Brand New Department", "accountEnabled": True}, manager_id=ids[0])
    box.graph.reset_log()
    report = sync_incremental(settings)
    assert all("$deltatoken" in r.query or "$skiptoken" in r.query or "/owners" in r.path
               for r in box.graph.requests)  # no initial round: only the stored links (and changed groups' owners)
    assert report.executions == 1
    assert report.full.created["user"] == 1 and report.full.created["department"] == 1
    assert report.full.deactivated["user"] == 1
    bee = box.assets.find("User", "Entra Object ID", worker_bee)
    assert bee.attributes["Job Title"] == ["Beekeeper"] and bee.attributes.get("Manager")
    assert statuses(box.assets, "User")[leaver] == "Deleted"
    assert box.assets.find("User", "Entra Object ID", hire).attributes.get("Department")
    _consistent(box)
    # Nothing changed since: the next catch-up starts no execution.
    assert sync_incremental(settings).executions == 0


def test_an_expired_delta_link_starts_a_fresh_round_without_losing_changes(box, settings):
    uid = sorted(box.tenant.users)[9]
    box.tenant.update_user(uid, jobTitle="Still Here")
    box.graph.expire_delta_tokens()
    old_link = open_backend(settings).state.checkpoint(USERS_DELTA)
    report = sync_incremental(settings)
    assert report.executions == 1
    assert box.assets.find("User", "Entra Object ID", uid).attributes["Job Title"] == ["Still Here"]
    assert open_backend(settings).state.checkpoint(USERS_DELTA) != old_link
    _consistent(box)


def test_many_queued_catch_ups_are_one_round_and_one_execution(box, settings):
    backend = open_backend(settings)
    for uid in sorted(box.tenant.users)[:20]:
        box.tenant.update_user(uid, jobTitle="Coalesced")
        backend.queue.send({"v": 1, "kind": "changes", "changes": [{"r": "users", "id": uid, "c": "updated"}]})
    box.graph.reset_log()
    executions = len(box.assets.executions)
    catch_up, result = catch_up_planner(settings, backend.state)
    pushed = push_queued(backend.queue, backend.payloads, backend.state, assets_client(settings), catch_up=catch_up)
    assert pushed.messages == 20 and pushed.executions == 1 and len(box.assets.executions) == executions + 1
    assert result.updated["user"] == 20
    assert len([r for r in box.graph.requests if r.path.endswith("/users/delta")]) == 1
    assert backend.queue.depth().messages == 0


def test_mass_deletion_arriving_by_delta_is_held_back(box, settings):
    victims = [u for u in sorted(box.tenant.users) if u not in box.tenant.managers.values()][:3]
    for uid in victims:
        box.tenant.delete_user(uid, permanent=True)
    guarded = load_settings({**box.settings(), "ENTRA_ASSETS_HOME": str(settings.home), "MAX_DEACTIVATIONS": "2"})
    report = sync_incremental(guarded)
    assert sum(report.full.held_back.values()) == 3
    assert all(statuses(box.assets, "User")[u] == "Active" for u in victims)
    # The next full run finds the same departures (the guard again), and the override lets them through.
    assert sum(sync_full(guarded).full.held_back.values()) == 3
    sync_full(guarded, allow_mass_deactivation=True)
    assert all(statuses(box.assets, "User")[u] == "Deleted" for u in victims)


def test_a_manager_graph_does_not_repeat_is_kept_from_the_last_push(box, settings, monkeypatch):
    # Graph may leave manager@delta out of a changed user when the manager did not change (reference §2.4:
    # "treat manager tracking as best effort"); the catch-up must not read that as "no manager".
    original = UserView.change

    def without_unchanged_manager(self, change, minimal):
        out = original(self, change, minimal)
        if change.props is not None and "manager" not in change.props:
            out.pop("manager@delta", None)
        return out
    monkeypatch.setattr(UserView, "change", without_unchanged_manager)
    uid = next(u for u in sorted(box.tenant.users) if box.tenant.managers.get(u))
    box.tenant.update_user(uid, jobTitle="Managed Still")
    sync_incremental(settings)
    obj = box.assets.find("User", "Entra Object ID", uid)
    manager = box.assets.find("User", "Entra Object ID", box.tenant.managers[uid])
    assert obj.attributes["Job Title"] == ["Managed Still"] and obj.attributes["Manager"] == [manager.key]


def test_a_worker_killed_mid_execution_loses_nothing(box, settings, monkeypatch):
    uid = sorted(box.tenant.users)[13]
    box.tenant.update_user(uid, jobTitle="Survivor")
    link = open_backend(settings).state.checkpoint(USERS_DELTA)
    assets = assets_client(settings)
    monkeypatch.setattr(push, "CHUNK_RECORDS", 1)

    def dies(*args, **kwargs):
        raise RuntimeError("the worker's instance was recycled mid-execution")
    monkeypatch.setattr(assets, "submit", dies)
    with pytest.raises(RuntimeError):
        sync_incremental(settings, assets=assets)
    assert box.assets.executions[-1].status == "CANCELLED"
    assert open_backend(settings).state.checkpoint(USERS_DELTA) == link  # the delta link did not move
    monkeypatch.undo()
    sync_incremental(settings)  # the next catch-up (timer tick, notification, CLI) runs from the same link
    assert box.assets.find("User", "Entra Object ID", uid).attributes["Job Title"] == ["Survivor"]


def test_out_of_order_and_duplicate_notifications_leave_the_same_result(box, settings):
    backend = open_backend(settings)
    uid = next(u for u in sorted(box.tenant.users) if u not in box.tenant.managers.values())
    box.tenant.update_user(uid, jobTitle="First")
    box.tenant.delete_user(uid)
    # Graph may deliver these late, twice and in any order; the delta link, not the notification, is the truth.
    for change in ("deleted", "updated", "updated", "deleted"):
        backend.queue.send({"v": 1, "kind": "changes", "changes": [{"r": "users", "id": uid, "c": change}]})
    catch_up, _ = catch_up_planner(settings, backend.state)
    push_queued(backend.queue, backend.payloads, backend.state, assets_client(settings), catch_up=catch_up)
    assert statuses(box.assets, "User")[uid] == "Deleted"
    assert backend.queue.depth().messages == 0


def _visible_in(settings) -> list[float]:
    """Seconds from now until each queued message becomes visible."""
    with sqlite3.connect(settings.home / "state.db") as db:
        return sorted(at - time.time() for (at,) in db.execute("SELECT visible_at FROM queue"))


def _push_once(settings, backend) -> worker.PushResult:
    catch_up, _ = catch_up_planner(settings, backend.state)
    return push_queued(backend.queue, backend.payloads, backend.state, assets_client(settings), catch_up=catch_up)


def test_a_change_notified_before_delta_shows_it_gets_a_second_catch_up(box, settings):
    """Graph notified, but its delta lags: the catch-up finds nothing. A follow-up catch-up is queued for 30 s
    later (not the timer's 15 min), and it finds the change."""
    backend = open_backend(settings)
    uid = min(box.tenant.users)
    box.graph.delta_lag = 3600.0
    box.tenant.update_user(uid, jobTitle="Notified before delta")
    backend.queue.send({"v": 1, "kind": "changes", "trigger": "webhook", "created": time.time(),
                        "changes": [{"r": "users", "id": uid, "c": "updated"}]})
    first = _push_once(settings, backend)
    assert first.records == 0 and first.follow_ups == 1
    assert 25 < _visible_in(settings)[0] <= 30
    box.graph.delta_lag = 0.0  # delta catches up meanwhile
    with sqlite3.connect(settings.home / "state.db") as db:
        db.execute("UPDATE queue SET visible_at = 0")  # the 30 s pass
    second = _push_once(settings, backend)
    assert second.records == 1 and second.follow_ups == 0 and backend.queue.depth().messages == 0
    assert box.assets.find("User", "Entra Object ID", uid).attributes["Job Title"] == ["Notified before delta"]


def test_follow_ups_are_bounded_and_wait_longer_the_second_time(box, settings):
    backend = open_backend(settings)
    uid = min(box.tenant.users)
    box.graph.delta_lag = 3600.0  # delta never shows it during the test
    box.tenant.update_user(uid, jobTitle="Lagging")
    backend.queue.send({"v": 1, "kind": "changes", "trigger": "webhook", "created": time.time(),
                        "changes": [{"r": "users", "id": uid, "c": "updated"}]})
    waits = []
    for _ in range(3):
        result = _push_once(settings, backend)
        waits += _visible_in(settings)
        with sqlite3.connect(settings.home / "state.db") as db:
            db.execute("UPDATE queue SET visible_at = 0")
    assert result.follow_ups == 0 and backend.queue.depth().messages == 0  # after two, the timer takes over
    assert [round(w, -1) for w in waits] == [30, 120]
