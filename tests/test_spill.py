"""The planner's per-object state spills to a temporary SQLite database past SPILL_AT entries (issue 11): it
answers as the in-memory form does, and a full sync that spills everything ends as one that does not."""
from __future__ import annotations

import pytest

from sandbox.tools.verify import verify_users
from shared.admin.setup import run_setup
from shared.app import sync_full
from shared.produce import plan as plan_module
from shared.produce import spill
from shared.produce.plan import FullRunResult, Plan, RunOptions, Scope
from shared.produce.spill import IdSet, TypeHashes
from shared.records.build import Warnings
from shared.settings import load_settings

PAIRS = [("c", "h3"), ("a", "h1"), ("d", "Dh4"), ("b", "h2"), ("e", "Dh5"), ("a", "h1b")]  # "a" twice: later wins


@pytest.mark.parametrize("spill_at", [100, 2], ids=["in memory", "spilled"])
def test_type_hashes_answer_the_same_in_memory_and_spilled(spill_at):
    hashes = TypeHashes(iter(PAIRS), spill_at=spill_at)
    assert hashes.spilled == (spill_at == 2)
    assert len(hashes) == 5 and sorted(hashes) == ["a", "b", "c", "d", "e"]
    assert hashes.get("a") == "h1b" and hashes.get("zz") is None and "b" in hashes and "zz" not in hashes
    assert hashes["d"] == "Dh4" and dict(hashes.items()) == {"a": "h1b", "b": "h2", "c": "h3", "d": "Dh4", "e": "Dh5"}
    with pytest.raises(KeyError):
        hashes["zz"]
    assert hashes.see("b") == "h2" and hashes.see("d") == "Dh4" and hashes.see("new") is None
    assert hashes.seen() == {"b", "d"}  # stored ids only
    assert sorted(hashes.active()) == ["a", "b", "c"]
    assert hashes.unseen_active() == ["a", "c"]  # not seen, not already marked Deleted


@pytest.mark.parametrize("spill_at", [10_000, 3], ids=["in memory", "spilled"])
def test_an_id_set_answers_the_same_in_memory_and_spilled(spill_at, monkeypatch):
    monkeypatch.setattr(spill, "BATCH", 4)  # so that some ids wait in the pending batch when asked for
    ids = IdSet(spill_at=spill_at)
    ids.update(f"u{i:02d}" for i in range(10))
    ids.add("u03")  # again
    assert ids.spilled == (spill_at == 3)
    assert all(f"u{i:02d}" in ids for i in range(10)) and "u10" not in ids and "u09" in ids
    assert ids.intersection(["u01", "u10", "u09", "x", "u01"]) == {"u01", "u09"}
    assert ids.intersection(["u02", "zz"]) == {"u02"} and ids.intersection([]) == set()


def test_group_members_in_id_order_are_cut_after_the_limit_but_all_counted(monkeypatch):
    """``Plan.user_ids(in_order=True)`` keeps the first REFERENCE_LIMIT (+ at most a batch) and still counts
    every member outside the scope, also past the cut."""
    monkeypatch.setattr(plan_module, "REFERENCE_LIMIT", 3)
    monkeypatch.setattr(plan_module, "BATCH", 2)
    run = Plan(None, None, RunOptions(), Scope(), FullRunResult("run"), lambda stage, n: None)  # no reads
    run.users_in_scope = IdSet(f"u{i}" for i in range(10) if i != 1)
    refs = [(f"u{i}", "user") for i in range(10)] + [("x1", "user"), ("x2", "user")]
    kept = run.user_ids(sorted(refs), "member", "g1", in_order=True)
    assert kept[:3] == ["u0", "u2", "u3"] and len(kept) <= 3 + 2 and kept == sorted(kept)
    expected = Warnings()
    for _ in range(3):  # u1, and x1 and x2 past the cut
        expected.add("member outside the scope", "g1")
    assert run.result.unmatched.lines() == expected.lines()
    assert run.user_ids(reversed(refs), "member", "g1") == sorted(f"u{i}" for i in range(10) if i != 1)


def test_a_full_sync_whose_state_spills_ends_as_the_tenant_says(box, tmp_path, monkeypatch):
    """Every TypeHashes and IdSet of more than 3 entries on disk: the first run, an unchanged one, and one with a
    change and a departure push exactly what an in-memory planner pushes."""
    monkeypatch.setattr(spill, "SPILL_AT", 3)
    made: list = []
    original = TypeHashes.__init__

    def spy(self, pairs, spill_at=None):
        original(self, pairs, spill_at)
        made.append(self)
    monkeypatch.setattr(TypeHashes, "__init__", spy)
    settings = load_settings({**box.settings(), "ENTRA_ASSETS_HOME": str(tmp_path / "home")})
    run_setup(settings)
    first = sync_full(settings)
    facts = verify_users(box.tenant, box.assets)
    assert facts["users in Assets"] == facts["users in tenant"] == first.full.users
    assert facts["managers resolved"] == facts["managers in tenant"] > 0
    second = sync_full(settings)
    assert second.executions == 0 and second.full.queued == 0  # every stored hash found on disk
    assert any(h.spilled for h in made) and all(h.spilled for h in made if len(h) > 3)
    changed, gone = sorted(box.tenant.users)[3:5]
    box.tenant.update_user(changed, jobTitle="Chief Spiller")
    box.tenant.delete_user(gone)
    third = sync_full(settings)
    assert third.full.updated["user"] == 1 and third.full.deactivated["user"] == 1 and not third.full.created["user"]
    users = {o.attributes["Entra Object ID"][0]: o for o in box.assets.objects("User")}
    assert users[changed].attributes["Job Title"] == ["Chief Spiller"]
    assert users[gone].attributes["Status"] == ["Deleted"]
