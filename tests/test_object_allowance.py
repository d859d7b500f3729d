"""ASSETS_OBJECT_LIMIT (SPEC §2, issue 13): the objects entra-assets keeps in Assets against the site's allowance -
shown by preview, sync and status, a warning from 80 %, and a full run that would cross it held whole."""
from __future__ import annotations

import json
import os

import pytest

from shared.app import open_backend
from shared.contract.checkpoints import USERS_DELTA
from shared.errors import SettingsError
from shared.records.schema import OBJECT_TYPES
from shared.settings import load_settings


@pytest.fixture
def run(cli):
    """The CLI against the sandbox, ``setup`` done."""
    assert cli("setup").exit_code == 0
    return cli


def _objects_in_assets(box) -> int:
    return sum(len(box.assets.objects(t.name)) for t in OBJECT_TYPES)


def _state():
    return open_backend(load_settings(dict(os.environ))).state


def test_a_full_run_that_would_cross_the_allowance_is_held_whole_and_says_what_it_would_add(run):
    box = run.box
    held = run("sync", "--full", ASSETS_OBJECT_LIMIT="500")
    assert held.exit_code == 3, held.output
    text = " ".join(held.output.split())
    assert "is more than ASSETS_OBJECT_LIMIT=500, so nothing was pushed" in text
    assert f"{len(box.tenant.users):,} User" in text and "--allow-object-limit" in text
    assert box.assets.executions == [] and _objects_in_assets(box) == 0   # nothing pushed at all
    assert _state().checkpoint(USERS_DELTA) is None                     # and no delta link moved
    status = json.loads(run("status", "--json").output)
    [entry] = status["runs"]
    assert entry["stage"] == "Failed" and "ASSETS_OBJECT_LIMIT=500" in entry["errors"][0]
    # The override lets one run through; afterwards status counts the objects against the allowance.
    passed = run("sync", "--full", "--allow-object-limit")
    assert passed.exit_code == 0, passed.output
    kept = _objects_in_assets(box)
    assert kept > 500
    objects = json.loads(run("status", "--json").output)["objects"]
    assert objects["kept"] == kept and objects["limit"] == 500
    assert objects["warning"].startswith(f"{kept:,} objects of ASSETS_OBJECT_LIMIT=500") and "over" in objects["warning"]


def test_updates_pass_under_the_allowance_and_one_new_object_too_many_holds_the_run(run):
    box = run.box
    assert run("sync", "--full", ASSETS_OBJECT_LIMIT="1000000").exit_code == 0
    kept = _objects_in_assets(box)
    ids = sorted(box.tenant.users)
    box.tenant.update_user(ids[3], jobTitle="Only An Update")  # no new object: passes at exactly the limit
    assert run("sync", "--full", ASSETS_OBJECT_LIMIT=str(kept)).exit_code == 0
    assert box.assets.find("User", "Entra Object ID", ids[3]).attributes["Job Title"] == ["Only An Update"]
    box.tenant.add_user({"displayName": "One Too Many", "userPrincipalName": "one@sandbox.example",
                         "accountEnabled": True, "department": box.tenant.users[ids[0]].get("department")})
    executions = len(box.assets.executions)
    held = run("sync", "--full", ASSETS_OBJECT_LIMIT=str(kept))
    assert held.exit_code == 3 and "would create 1 objects (1 User)" in " ".join(held.output.split())
    assert len(box.assets.executions) == executions
    assert run("sync", "--full", ASSETS_OBJECT_LIMIT=str(kept + 1)).exit_code == 0  # raised: it goes through


def test_preview_sync_and_status_warn_from_80_percent(run):
    box = run.box
    preview = json.loads(run("preview", "--json", ASSETS_OBJECT_LIMIT="1000000").output)["objects"]
    new = preview["after"]
    assert preview == {"kept": 0, "after": new, "limit": 1_000_000, "held": False, "warning": None}
    limit = int(new / 0.85)  # the run takes the site to 85 %
    preview = json.loads(run("preview", "--json", ASSETS_OBJECT_LIMIT=str(limit)).output)["objects"]
    assert preview["warning"] == f"{new:,} objects of ASSETS_OBJECT_LIMIT={limit:,} (85 %): nearing the allowance"
    assert json.loads(run("preview", "--json", ASSETS_OBJECT_LIMIT=str(new - 1)).output)["objects"]["held"]
    synced = run("sync", "--full", ASSETS_OBJECT_LIMIT=str(limit))
    assert synced.exit_code == 0 and "nearing the allowance" in synced.output
    assert _objects_in_assets(box) == new
    status = run("status")
    assert f"objects in Assets: {new:,} of ASSETS_OBJECT_LIMIT={limit:,}" in status.output
    assert "nearing the allowance" in status.output
    [entry] = json.loads(run("status", "--json").output)["runs"]
    assert entry["objects"] == new and any("nearing the allowance" in w for w in entry["warnings"])


def test_the_allowance_setting_is_checked():
    assert load_settings({}).assets_object_limit == 50_000
    for bad in ("0", "-5", "lots", "1e6"):
        with pytest.raises(SettingsError, match="ASSETS_OBJECT_LIMIT"):
            load_settings({"ASSETS_OBJECT_LIMIT": bad})
