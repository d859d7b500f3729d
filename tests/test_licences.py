"""The License type (SPEC §4, issue 13): the tenant's SKUs from /subscribedSkus, and each user's Licenses from
assignedLicenses, resolved to those objects; a licence read Graph refuses fails alone."""
from __future__ import annotations

import pytest

from sandbox.tenant import licences
from sandbox.tools.verify import statuses, verify_licences, verify_users
from shared.admin.setup import run_setup
from shared.app import run_outcome_error, sync_full, sync_incremental
from shared.errors import TypesNotRead
from shared.settings import load_settings


@pytest.fixture
def settings(box, tmp_path):
    settings = load_settings({**box.settings(), "ENTRA_ASSETS_HOME": str(tmp_path / "home")})
    run_setup(settings)
    return settings


def _sku_ids(box) -> dict[str, str]:
    return {o.attributes["SKU ID"][0]: o.key for o in box.assets.objects("License")}


def test_a_full_sync_fills_license_and_every_user_refers_to_the_skus_it_holds(box, settings):
    report = sync_full(settings)
    assert report.full.read["license"] == len(box.tenant.skus) == 4
    facts = verify_licences(box.tenant, box.assets)
    assert facts["licences in Assets"] == facts["licences in tenant"] == 4
    assert facts["users: Licenses links resolved"] == facts["users: Licenses links in tenant"] > len(box.tenant.users)
    e3 = box.assets.find("License", "SKU ID", licences.E3)
    assert e3.attributes["Name"] == ["ENTERPRISEPACK"] and e3.attributes["Status"] == ["Active"]
    assert e3.attributes["Consumed Units"] == [box.tenant.skus[licences.E3]["consumedUnits"]]
    assert verify_users(box.tenant, box.assets)["users in Assets"] == len(box.tenant.users)


def test_assignments_change_through_the_catch_up_and_a_cancelled_sku_is_marked_deleted(box, settings):
    sync_full(settings)
    uid = next(u for u, user in box.tenant.users.items() if user.get("assignedLicenses"))
    box.tenant.update_user(uid, assignedLicenses=[{"skuId": licences.FLOW_FREE, "disabledPlans": []}])
    sync_incremental(settings)  # delta carries assignedLicenses like any selected property
    keys = _sku_ids(box)
    assert box.assets.find("User", "Entra Object ID", uid).attributes["Licenses"] == [keys[licences.FLOW_FREE]]
    del box.tenant.skus[licences.POWER_BI]  # the subscription ended: Graph lists it no more
    report = sync_full(settings)
    assert report.full.deactivated["license"] == 1
    assert box.assets.find("License", "SKU ID", licences.POWER_BI).attributes["Status"] == ["Deleted"]


def test_without_the_licence_permission_the_type_is_reported_and_the_rest_syncs(box, settings):
    box.graph.denied.add("subscribedSkus")
    report = sync_full(settings)
    assert "license" in report.full.failed and not box.assets.objects("License")
    error = run_outcome_error(report.full)
    assert isinstance(error, TypesNotRead) and "License could not be read" in str(error)
    assert "Organization.Read.All" in str(error)
    assert set(statuses(box.assets, "User")) == set(box.tenant.users)  # everything else was pushed
    box.graph.denied.clear()
    sync_full(settings)  # granted: the next run reads them, nothing lost
    assert verify_licences(box.tenant, box.assets)["licences in Assets"] == 4
