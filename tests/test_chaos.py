"""Crash recovery: `entra-assets sync` SIGKILLed at a bad moment, then the next run (sandbox/tools/chaos.py).

Every sync is a real CLI subprocess on the embedded store against the emulators; kill points come from the
emulators' request logs. The loop test draws its kill points from a fixed seed; the others each pin one
failure mode seen in the field, so a failure names the bug:
- a run killed while posting chunks leaves its execution INGESTING, and the next run waited 600 s on
  409 IN_PROGRESS, then failed;
- a run started within the lease length of a kill died with a ``LeaseBusy`` traceback;
- a dead run's queue message, replayed after newer syncs, put old values back into Assets;
- an object a killed run's execution created, deleted before the next run, stayed Active.
"""
import pytest

from sandbox.tenant.chaos import tag
from sandbox.tools.chaos import PHASES, run_chaos
from sandbox.tools.chaos_harness import Harness, KillPoint, Limits


@pytest.mark.timeout(400)
def test_chaos_loop_recovers_from_every_kill():
    """6 kills (graph reads, chunk posts, execution waits; `sync --full` and `sync`), each followed at once
    by a recovery run: no failed or slow recovery, no open execution, Assets equal to the tenant after every
    recovery, no object's version ever going back, nothing left behind at the end."""
    report = run_chaos(kills=6, users=300, seed=11)
    assert report.ok, "\n".join(report.lines())
    assert report.hits.total() + report.missed == report.kills == 6
    assert all(report.hits[phase] for phase in PHASES), report.hits   # every kind of kill point was reached
    assert report.recoveries == 6 and report.objects_compared > 0


def test_a_run_killed_while_posting_chunks_does_not_block_the_next_one():
    with Harness(users=300, seed=5) as h:
        first = h.run("full")
        assert first.failure() is None
        h.change(wide=True)  # every user and device: several chunks
        killed = h.run("full", KillPoint("chunks", 1))
        assert killed.hit == "chunks", f"the kill point was not reached: {killed.counts}"
        h.expire_lease()                  # a lease length has passed since the kill
        h.replay(h.hidden_messages())     # and the dead run's message is visible again
        recovery = h.run("full", timeout=3 * first.seconds + 15)
        assert recovery.failure() is None, f"{recovery.failure()}; executions open: {h.open_executions()}"
        assert h.open_executions() == []
        found, _ = h.mismatches()
        assert found == [], f"{len(found)} differences, e.g. {found[:3]}"


def test_a_run_right_after_a_kill_recovers_without_a_traceback():
    with Harness(users=300, seed=6) as h:
        first = h.run("full")
        assert first.failure() is None
        limits = Limits(normal=first.seconds)
        h.change()
        killed = h.run("full", KillPoint("wait", 1))  # holds the writer lease; its execution finishes alone
        assert killed.hit == "wait", f"the kill point was not reached: {killed.counts}"
        recovery = h.run("full", timeout=limits.timeout)
        assert recovery.failure() is None
        assert recovery.seconds <= limits.recovery
        found, _ = h.mismatches()
        assert found == [], f"{len(found)} differences, e.g. {found[:3]}"
        hidden = h.hidden_messages()   # at most the dead run's own message (and payload), still invisible
        assert h.leftovers()["queue messages"] == len(hidden) <= 1
        assert len(h.payload_files()) <= len(hidden), h.payload_files()


def test_a_dead_runs_message_replayed_after_newer_syncs_changes_nothing():
    with Harness(users=300, seed=8) as h:
        assert h.run("full").failure() is None
        h.change()                                      # v1
        killed = h.run("full", KillPoint("wait", 1))
        assert killed.hit == "wait", f"the kill point was not reached: {killed.counts}"
        stale = h.hidden_messages()
        assert stale, "the killed run left no message"
        h.expire_lease()
        assert h.run("full").failure() is None          # v1 again; the dead run's message stays invisible
        h.change(wide=True)                             # v2: every user and device, and some leave
        assert h.run("full").failure() is None
        assert h.check_versions() == []
        h.replay(stale)                                 # 30 minutes after the kill (if it is still there)
        replay = h.run("full")
        assert replay.failure() is None
        went_back = h.check_versions()
        assert went_back == [], f"{len(went_back)} object(s) went back, e.g. {went_back[:3]}"
        found, _ = h.mismatches()
        assert found == [], f"{len(found)} differences, e.g. {found[:3]}"


def test_an_object_a_killed_run_created_and_the_tenant_then_deleted_ends_deleted():
    with Harness(users=300, seed=9) as h:
        assert h.run("full").failure() is None
        tenant = h.box.tenant
        hire = tenant.add_user({"displayName": "Short Stay", "userPrincipalName": "short.stay@sandbox.example",
                                "accountEnabled": True, "userType": "Member"})
        tag(tenant, "users", hire, 1)
        killed = h.run("full", KillPoint("wait", 1))    # its execution creates the user in Assets
        assert killed.hit == "wait", f"the kill point was not reached: {killed.counts}"
        assert h.box.assets.find("User", "Entra Object ID", hire) is not None
        tenant.delete_user(hire, permanent=True)
        h.expire_lease()
        h.replay(h.hidden_messages())
        assert h.run("full").failure() is None
        found, _ = h.mismatches()
        assert found == [], f"{len(found)} differences, e.g. {found[:3]}"
