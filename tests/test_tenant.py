"""The synthetic tenant: deterministic, untidy in the ways real directories are, and a usable change log."""
from __future__ import annotations

import re

import pytest

from sandbox.tenant import Change, generate_tenant
from shared.mapping import USER_SELECT, fold

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_same_seed_same_tenant_other_seed_other_tenant():
    a, b, c = generate_tenant(300, seed=7), generate_tenant(300, seed=7), generate_tenant(300, seed=8)
    assert a.tenant_id == b.tenant_id and a.users == b.users and a.managers == b.managers
    assert list(a.users) == list(b.users)
    assert set(a.users).isdisjoint(c.users)


def test_users_have_guid_ids_and_only_graph_property_names(tenant):
    allowed = set(USER_SELECT) - {"manager"}
    assert len(tenant.users) == 300 and tenant.version == 0
    for uid, user in tenant.users.items():
        assert GUID.match(uid) and user["id"] == uid
        assert set(user) <= allowed, set(user) - allowed
    assert len({u["userPrincipalName"] for u in tenant.users.values()}) == 300


def test_management_tree_has_one_ceo_and_no_cycles(tenant):
    ceo = next(iter(tenant.users))
    assert ceo not in tenant.managers and tenant.users[ceo]["jobTitle"] == "Chief Executive Officer"
    assert all(m in tenant.users and m != u for u, m in tenant.managers.items())
    assert 0.8 * 300 < len(tenant.managers) < 300  # most users have a manager, a few (guests, ...) none
    for uid in tenant.users:
        seen = set()
        while uid in tenant.managers:
            assert uid not in seen
            seen.add(uid)
            uid = tenant.managers[uid]
        assert uid == ceo or uid not in tenant.managers


def test_small_tenant_has_every_odd_case(tenant):
    users = list(tenant.users.values())
    assert any(u.get("displayName") is None for u in users)
    assert any(len(u.get("jobTitle") or "") > 255 for u in users)
    assert 0 < sum("mail" not in u for u in users) < 30
    guests = [u for u in users if u["userType"] == "Guest"]
    assert guests and all("#EXT#@" in u["userPrincipalName"] for u in guests)
    assert 0 < sum(u["accountEnabled"] is False for u in users) < 40
    names = {u.get("displayName") for u in users}
    assert {"Zoë Ångström", "José Núñez", "Łukasz Żółć", "李雷", "Ольга Иванова"} <= names
    spellings = {}
    for u in users:
        if u.get("department"):
            spellings.setdefault(fold(u["department"]), set()).add(u["department"])
    assert any(len(v) > 1 for v in spellings.values())


def test_offices_have_consistent_addresses_and_countries_written_several_ways(tenant):
    offices: dict[str, set] = {}
    countries: dict[str, set] = {}
    for u in tenant.users.values():
        if u.get("streetAddress"):
            key = (u["streetAddress"], u["postalCode"], u["city"], u["state"])
            offices.setdefault(u["officeLocation"], set()).add(key)
            countries.setdefault(u["officeLocation"], set()).add(u["country"])
    assert len(offices) >= 5 and all(len(v) == 1 for v in offices.values())
    assert any(len(v) > 1 for v in countries.values())


def test_mutations_bump_the_version_and_land_in_the_change_log(tenant):
    ids = list(tenant.users)
    bosses = set(tenant.managers.values())
    leaf, other_leaf = [u for u in ids[30:] if u not in bosses][:2]
    hire = tenant.add_user({"displayName": "Grace Hopper", "department": "Engineering", "mail": None},
                           manager_id=ids[0])
    assert tenant.version == 1 and tenant.users[hire] == {"id": hire, "displayName": "Grace Hopper",
                                                         "department": "Engineering"}
    assert tenant.managers[hire] == ids[0] and tenant.order[-1] == hire
    tenant.update_user(ids[5], jobTitle="Chief Tester", mobilePhone=None)
    assert tenant.users[ids[5]]["jobTitle"] == "Chief Tester" and "mobilePhone" not in tenant.users[ids[5]]
    old = tenant.managers[ids[6]]
    tenant.set_manager(ids[6], None)
    tenant.delete_user(leaf)
    tenant.delete_user(other_leaf, permanent=True)
    assert tenant.version == 5 and leaf not in tenant.users and ids[6] not in tenant.managers
    assert tenant.former_manager(ids[6]) == old
    changes = {c.uid: c for c in tenant.changes_since(0)}
    assert changes[hire] == Change(hire, None, None)
    assert changes[ids[5]].props == {"jobTitle", "mobilePhone"} and changes[ids[6]].props == {"manager"}
    assert changes[leaf].removed == "changed" and changes[other_leaf].removed == "deleted"
    assert [c.uid for c in tenant.changes_since(2)] == [ids[6], leaf, other_leaf]
    assert tenant.changes_since(5) == []


def test_change_log_honours_select_and_ranges(tenant):
    ids = list(tenant.users)
    tenant.update_user(ids[3], employeeType="Contractor")
    tenant.update_user(ids[4], department="Sales")
    assert [c.uid for c in tenant.changes_since(0, select=["id", "department"])] == [ids[4]]
    assert [c.uid for c in tenant.changes_since(0, until=1)] == [ids[3]]
    with pytest.raises(ValueError):
        tenant.changes_since(0, until=3)


def test_deleting_a_manager_unlinks_the_reports_and_permanent_after_soft(tenant):
    ceo = next(iter(tenant.users))
    reports = [u for u, m in tenant.managers.items() if m == ceo]
    tenant.delete_user(ceo)
    assert reports and not any(tenant.managers.get(r) == ceo for r in reports)
    assert all(tenant.former_manager(r) == ceo for r in reports)
    tenant.delete_user(ceo, permanent=True)
    assert tenant.removal_reason(ceo) == "deleted"
    with pytest.raises(KeyError):
        tenant.delete_user(ceo)
    with pytest.raises(KeyError):
        tenant.update_user("no-such-user", jobTitle="x")
    with pytest.raises(KeyError):
        tenant.set_manager(reports[0], "no-such-user")
