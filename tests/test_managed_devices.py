"""Managed Device (Intune) and User's Last Sign-In (SPEC §4, issue 13), synced from the sandbox tenant through the
emulators and checked against the tenant; either one refused leaves the rest of the sync as it was."""
from __future__ import annotations

import json

import pytest

from sandbox.tenant import intune
from sandbox.tools.verify import statuses, verify_managed_devices, verify_users
from shared.admin.setup import run_setup
from shared.admin.status import check_all
from shared.app import run_outcome_error, sync_full, sync_incremental
from shared.errors import TypesNotRead
from shared.records.build import last_sign_in
from shared.settings import load_settings


@pytest.fixture
def settings(box, tmp_path):
    settings = load_settings({**box.settings(), "ENTRA_ASSETS_HOME": str(tmp_path / "home")})
    run_setup(settings)
    return settings


def _last_sign_ins(box) -> dict[str, str | None]:
    return {o.attributes["Entra Object ID"][0]: (o.attributes.get("Last Sign-In") or [None])[0]
            for o in box.assets.objects("User")}


def test_a_full_sync_fills_managed_device_with_every_reference_as_the_tenant_says(box, settings):
    report = sync_full(settings)
    facts = verify_managed_devices(box.tenant, box.assets)
    assert report.full.read["managed_device"] == facts["managed devices in tenant"] == len(box.tenant.managed_devices)
    assert facts["managed devices in Assets"] == facts["primary users resolved"] == facts["Entra devices resolved"] \
        == facts["managed devices in tenant"] > 100
    ids = list(box.tenant.managed_devices)
    for odd in (intune.NO_PRIMARY_USER, intune.ENTRA_DEVICE_MISSING, intune.NEVER_REGISTERED):
        obj = box.assets.find("Managed Device", "Intune Device ID", ids[odd])
        missing = {"Primary User"} if odd == intune.NO_PRIMARY_USER else {"Entra Device"}
        assert all(not obj.attributes.get(name) for name in missing), (odd, obj.attributes)
    linked = box.assets.find("Managed Device", "Intune Device ID", ids[intune.PERSONAL])
    assert linked.attributes["Ownership"] == ["personal"] and linked.attributes["Status"] == ["Active"]


def test_without_the_intune_permission_or_licence_the_type_is_reported_and_the_rest_syncs(box, settings):
    sync_full(settings)
    before = len(box.assets.objects("Managed Device"))
    box.graph.denied.add("deviceManagement")
    box.tenant.update_user(next(iter(box.tenant.users)), jobTitle="Chief Tester")
    report = sync_full(settings)
    assert "managed_device" in report.full.failed
    error = run_outcome_error(report.full)
    assert isinstance(error, TypesNotRead) and "DeviceManagementManagedDevices.Read.All" in str(error)
    assert set(statuses(box.assets, "User")) == set(box.tenant.users)
    assert "Chief Tester" in [o.attributes.get("Job Title", [None])[0] for o in box.assets.objects("User")]
    kept = {(o.attributes.get("Status") or [None])[0] for o in box.assets.objects("Managed Device")}
    assert len(box.assets.objects("Managed Device")) == before and kept == {"Active"}  # none marked Deleted
    assert any("Managed Device is skipped" in line for line in check_all(settings).lines)
    box.graph.denied.clear()
    box.tenant.intune = False
    report = sync_full(settings)
    assert "not applicable to target tenant" in report.full.failed["managed_device"]
    assert verify_users(box.tenant, box.assets)["users in Assets"] == len(box.tenant.users)


def test_a_removed_intune_device_is_marked_deleted_at_the_next_full_run(box, settings):
    sync_full(settings)
    gone = list(box.tenant.managed_devices)[10]
    box.tenant.delete_managed_device(gone)
    sync_full(settings)
    assert box.assets.find("Managed Device", "Intune Device ID", gone).attributes["Status"] == ["Deleted"]


def test_last_sign_in_is_the_later_sign_in_and_a_catch_up_keeps_it(box, settings):
    sync_full(settings)
    pushed = _last_sign_ins(box)
    want = {uid: last_sign_in(user) for uid, user in box.tenant.users.items()}
    assert sum(1 for v in want.values() if v) > len(want) // 2
    assert {uid: _iso(pushed[uid]) for uid in want} == want
    uid = next(u for u, v in want.items() if v)
    box.tenant.update_user(uid, jobTitle="Night Owl")
    sync_incremental(settings)
    assert _iso(_last_sign_ins(box)[uid]) == want[uid]  # delta carries no sign-ins: the full run's value stands


def test_without_premium_last_sign_in_stays_empty_check_says_why_and_nothing_else_changes(box, settings):
    box.tenant.premium = False
    report = sync_full(settings)
    assert not report.full.failed and not any(_last_sign_ins(box).values())
    assert any("Last Sign-In not read" in line and "P1 or P2" in line for line in report.full.warnings.lines())
    assert any("Last Sign-In is left empty" in line and "P1 or P2" in line for line in check_all(settings).lines)
    assert verify_users(box.tenant, box.assets)["users in Assets"] == len(box.tenant.users)


def _iso(value):
    """Assets' date-time as the tenant wrote it (the emulator may store it as given or normalised)."""
    return value if value is None or value.endswith("Z") else value.replace("+00:00", "Z")


def test_preview_json_counts_managed_devices_and_licences_as_the_sync_then_creates_them(cli):
    assert cli("setup").exit_code == 0
    box = cli.box
    shown = cli("preview", "--json")
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.output)
    created = report["counts"]["create"]
    assert created["Managed Device"] == len(box.tenant.managed_devices) > 0
    assert created["License"] == len(box.tenant.skus) > 0
    assert report["objects"]["after"] == sum(created.values())
    assert cli("sync", "--full").exit_code == 0
    assert len(box.assets.objects("Managed Device")) == created["Managed Device"]
    assert len(box.assets.objects("License")) == created["License"]
