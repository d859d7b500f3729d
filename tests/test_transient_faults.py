"""Transient Assets failures during a sync (a 500, a dropped connection), against the emulator over loopback:
the one retry layer (shared/clients/transport.py) sends the same request again and the run succeeds with the right
objects in Assets."""
from __future__ import annotations

import pytest

from sandbox.tools.verify import verify_directory, verify_users
from shared.admin.setup import run_setup
from shared.app import sync_full
from shared.settings import load_settings


@pytest.fixture
def settings(box, tmp_path):
    settings = load_settings({**box.settings(), "ENTRA_ASSETS_HOME": str(tmp_path / "home")})
    run_setup(settings)
    return settings


def _chunks(box) -> list[bytes]:
    return [r.body for r in box.assets.requests if r.method == "POST" and r.path.endswith("/data")]


def _everything_arrived(box) -> None:
    """What the tenant holds is in Assets, counted from both sides (sandbox/tools/verify.py)."""
    users = verify_users(box.tenant, box.assets)
    assert users["users in Assets"] == users["users in tenant"] > 0
    assert users["managers resolved"] == users["managers in tenant"]
    directory = verify_directory(box.tenant, box.assets)
    for label in ("groups", "devices", "applications"):
        assert directory[f"{label} in Assets"] == directory[f"{label} in tenant"], label


@pytest.mark.parametrize("status", [500, 502, 503, None])  # None: the connection is dropped
def test_a_chunk_refused_once_is_sent_again_and_the_run_succeeds(box, settings, status):
    box.assets.fail_next("/data", status=status)
    report = sync_full(settings)
    assert report.executions == 1 and not any(p.errors for p in report.pushes)
    chunks = _chunks(box)
    assert len(chunks) == report.pushes[0].chunks + 1  # one chunk went twice
    assert chunks[0] == chunks[1]  # byte for byte: same records, same clientGeneratedId
    (execution,) = box.assets.executions
    assert execution.status == "DONE" and execution.duplicates == []  # the refused one was never accepted
    _everything_arrived(box)


@pytest.mark.parametrize("status", [500, None])
def test_a_chunk_accepted_but_not_acknowledged_is_re_sent_with_its_id(box, settings, status):
    """Assets kept the chunk, then its answer was lost: the retry sends it again with the same
    clientGeneratedId. Whether Assets de-duplicates by that id is UNCONFIRMED; the emulator does not, and the
    result is still right, because records are keyed by their external id (the later copy wins)."""
    box.assets.fail_next("/data", status=status, after_accept=True)
    report = sync_full(settings)
    assert report.executions == 1 and not any(p.errors for p in report.pushes)
    (execution,) = box.assets.executions
    assert execution.duplicates == ["chunk-00001"]
    assert execution.client_ids[:2] == ["chunk-00001", "chunk-00001"] and len(execution.client_ids) >= 3
    _everything_arrived(box)


def test_status_polls_and_start_survive_transient_failures(box, settings):
    box.assets.fail_next("/executions", status=500)  # the start, refused before it created anything
    box.assets.fail_next("/status", count=2, status=503)
    box.assets.fail_next("/configstatus", status=None)
    report = sync_full(settings)
    assert report.executions == 1 and len(box.assets.executions) == 1
    assert box.assets.executions[0].status == "DONE"
    _everything_arrived(box)
