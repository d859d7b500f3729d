"""The synthetic tenant: deterministic, untidy in the ways real directories are, and a usable change log."""
from __future__ import annotations

import re

import pytest

from sandbox.tenant.generator import MICROSOFT_TENANT, generate_tenant
from sandbox.tenant.model import Change
from shared.records.build import USER_SELECT, fold

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_same_seed_same_tenant_other_seed_other_tenant():
    a, b, c = generate_tenant(300, seed=7), generate_tenant(300, seed=7), generate_tenant(300, seed=8)
    assert a.tenant_id == b.tenant_id and a.users == b.users and a.managers == b.managers
    assert list(a.users) == list(b.users)
    assert set(a.users).isdisjoint(c.users)


def test_users_have_guid_ids_and_only_graph_property_names(tenant):
    allowed = set(USER_SELECT) - {"manager"} | {"signInActivity"}  # sign-ins: read apart (not on delta)
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
    links = sum(_links_of(tenant, u) for u in (leaf, other_leaf))  # each group/device/SP losing them: +1
    tenant.delete_user(leaf)
    tenant.delete_user(other_leaf, permanent=True)
    assert tenant.version == 5 + links and leaf not in tenant.users and ids[6] not in tenant.managers
    assert tenant.former_manager(ids[6]) == old
    changes = {c.uid: c for c in tenant.changes_since(0)}
    assert changes[hire] == Change(hire, None, None)
    assert changes[ids[5]].props == {"jobTitle", "mobilePhone"} and changes[ids[6]].props == {"manager"}
    assert changes[leaf].removed == "changed" and changes[other_leaf].removed == "deleted"
    assert [c.uid for c in tenant.changes_since(2)] == [ids[6], leaf, other_leaf]
    assert tenant.changes_since(tenant.version) == []


def _links_of(tenant, uid: str) -> int:
    """How many groups (as member or owner), devices and service principals (as owner) refer to ``uid``."""
    return (sum(any(m == uid for _, m in ms) for ms in tenant.members.values())
            + sum(uid in o for o in tenant.group_owners.values())
            + sum(uid in o for o in tenant.device_owners.values()) + sum(uid in o for o in tenant.sp_owners.values()))


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


# -- groups, devices, service principals ------------------------------------------------------------------

def test_the_whole_directory_is_deterministic_and_scales_with_the_users():
    a, b, c = generate_tenant(300, seed=7), generate_tenant(300, seed=7), generate_tenant(300, seed=8)
    for name in ("groups", "members", "group_owners", "devices", "device_owners", "service_principals", "sp_owners"):
        assert getattr(a, name) == getattr(b, name), name
        assert list(getattr(a, name)) == list(getattr(b, name))
    assert set(a.groups).isdisjoint(c.groups) and set(a.devices).isdisjoint(c.devices)
    assert (len(a.groups), len(a.devices), len(a.service_principals)) == (15, 240, 6)
    small = generate_tenant(40, seed=1)
    assert (len(small.groups), len(small.devices), len(small.service_principals)) == (10, 32, 5)
    sized = generate_tenant(100, seed=1, groups=12, devices=7, applications=9)
    assert (len(sized.groups), len(sized.devices), len(sized.service_principals)) == (12, 7, 9)
    assert generate_tenant(300, seed=7, groups=0, devices=0).users == a.users  # users do not depend on the rest


def test_groups_are_realistic_and_have_every_odd_case(tenant):
    assert set(tenant.members) == set(tenant.groups) == set(tenant.group_owners) == set(tenant.orders["groups"])
    for gid, group in tenant.groups.items():
        assert GUID.match(gid) and group["id"] == gid
        assert set(group) >= {"displayName", "mailEnabled", "securityEnabled", "groupTypes", "mailNickname"}
        assert group["groupTypes"] in ([], ["Unified"], ["Unified", "DynamicMembership"])
        assert ("mail" in group) == group["mailEnabled"]
        assert all(o in tenant.users for o in tenant.group_owners[gid])
        ids = [m for _, m in tenant.members[gid]]
        assert len(ids) == len(set(ids))
    all_staff = [g for g, p in tenant.groups.items() if "DynamicMembership" in p["groupTypes"]]
    enabled_members = [u for u, p in tenant.users.items() if p["accountEnabled"] and p["userType"] == "Member"]
    assert len(all_staff) == 1 and [m for _, m in tenant.members[all_staff[0]]] == enabled_members
    sizes = sorted(len(m) for m in tenant.members.values())
    assert sizes[0] == 0 and sum(5 <= s <= 200 for s in sizes) >= len(sizes) // 2
    assert sum(s >= 0.5 * len(tenant.users) for s in sizes) >= 3  # All Staff + the two large groups
    nested = [(g, m) for g, ms in tenant.members.items() for t, m in ms if t == "group"]
    assert len(nested) == 1 and nested[0][1] in tenant.groups
    kinds = {t for ms in tenant.members.values() for t, _ in ms}
    assert kinds == {"user", "group", "device", "orgContact"}
    assert all(m in tenant.devices for ms in tenant.members.values() for t, m in ms if t == "device")
    contacts = [m for ms in tenant.members.values() for t, m in ms if t == "orgContact"]
    assert contacts and not {*contacts} & {*tenant.users, *tenant.devices, *tenant.groups}
    owners = [len(o) for o in tenant.group_owners.values()]
    assert 0 in owners and max(owners) == 3
    names = [g["displayName"] for g in tenant.groups.values()]
    assert any(not n.isascii() for n in names) and any("description" not in g for g in tenant.groups.values())
    assert len({g["mailNickname"] for g in tenant.groups.values()}) == len(tenant.groups)


def test_devices_and_service_principals_are_realistic_and_have_every_odd_case(tenant):
    devices = list(tenant.devices.values())
    assert set(tenant.device_owners) == set(tenant.devices)
    assert {d["operatingSystem"] for d in devices} >= {"Windows", "iOS", "Android", "MacMDM"}
    assert {d["trustType"] for d in devices} == {"AzureAd", "ServerAd", "Workplace"}
    assert all(GUID.match(d["deviceId"]) and d["deviceId"] != d["id"] for d in devices)
    assert all(len(o) <= 1 and all(u in tenant.users for u in o) for o in tenant.device_owners.values())
    without = sum(not o for o in tenant.device_owners.values())
    assert 0 < without < 0.25 * len(devices)
    assert any("isCompliant" not in d for d in devices) and any(d["isCompliant"] is False for d in devices if
                                                                "isCompliant" in d)
    assert any(d["accountEnabled"] is False for d in devices)
    assert any("approximateLastSignInDateTime" not in d for d in devices)
    stamps = [d["approximateLastSignInDateTime"] for d in devices if "approximateLastSignInDateTime" in d]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", s) for s in stamps)
    assert min(stamps) < "2026-01-01" < max(stamps) <= "2026-11-20T08:15:00Z"
    assert any(not d["displayName"].isascii() for d in devices)
    sps = list(tenant.service_principals.values())
    assert {s["servicePrincipalType"] for s in sps} == {"Application", "ManagedIdentity", "Legacy"}
    assert not any("publisherName" in s for s in sps)  # beta-only
    verified = [s["verifiedPublisher"] for s in sps if s["verifiedPublisher"]["displayName"]]
    assert verified and all(re.fullmatch(r"\d{7}", v["verifiedPublisherId"]) and v["addedDateTime"] for v in verified)
    assert sum(s["verifiedPublisher"] == dict.fromkeys(("displayName", "verifiedPublisherId", "addedDateTime"))
               for s in sps) > len(verified)  # most apps are unverified: all null
    assert any(s.get("appOwnerOrganizationId") == MICROSOFT_TENANT for s in sps)
    assert any(s.get("appOwnerOrganizationId") == tenant.tenant_id for s in sps)
    assert any(s["accountEnabled"] is False for s in sps)
    assert set(tenant.sp_owners) == set(tenant.service_principals)
    assert any(tenant.sp_owners.values()) and sum(not o for o in tenant.sp_owners.values()) >= len(sps) // 2


def test_group_mutations_land_in_the_groups_change_log(tenant):
    gids, uids = list(tenant.groups), list(tenant.users)
    target = gids[12]
    outsider = next(u for u in uids if all(m != u for _, m in tenant.members[target]))
    leaving = tenant.members[target][0][1]
    tenant.add_member(target, outsider)
    tenant.remove_member(target, leaving)
    tenant.add_member(target, "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9", odata_type="orgContact")
    tenant.update_group(gids[11], description="new")
    tenant.set_group_owners(gids[11], uids[:2])
    new = tenant.add_group({"displayName": "New", "groupTypes": []}, members=[uids[0], gids[13]], owners=[uids[1]])
    tenant.delete_group(gids[13])
    assert tenant.version == 8  # + the group that lost gids[13] as a member
    assert tenant.members[new] == [("user", uids[0])] and tenant.group_owners[new] == [uids[1]]
    assert tenant.changes_since(0) == []  # users untouched
    changes = {c.id: c for c in tenant.changes_since(0, kind="groups")}
    assert changes[target].props == {"members"}
    assert changes[target].links == (("user", outsider, True), ("user", leaving, False),
                                     ("orgContact", "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9", True))
    assert changes[gids[11]].props == {"description", "owners"}
    assert changes[new].props is None and changes[new].links == (("group", gids[13], False),)
    assert changes[gids[13]].removed == "changed"
    assert list(tenant.changes_since(0, select=["id", "description"], kind="groups")) == \
        [changes[gids[11]], changes[gids[13]], changes[new]]  # ordered by last change
    with pytest.raises(ValueError):
        tenant.add_member(target, outsider)
    with pytest.raises(KeyError):
        tenant.remove_member(target, leaving)
    with pytest.raises(KeyError):
        tenant.add_member(target, "no-such-user")
    with pytest.raises(ValueError):
        tenant.add_member(target, target, odata_type="group")
    with pytest.raises(ValueError):
        tenant.changes_since(0, kind="applications")


def test_device_and_service_principal_mutations(tenant):
    uids = list(tenant.users)
    did = tenant.add_device({"displayName": "NEW-PC", "operatingSystem": "Windows"}, owners=[uids[2]])
    assert GUID.match(tenant.devices[did]["deviceId"]) and tenant.device_owners[did] == [uids[2]]
    tenant.update_device(did, isCompliant=True)
    tenant.set_device_owners(did, [uids[3]])
    device_group = next(g for g, ms in tenant.members.items() if any(t == "device" for t, _ in ms))
    member = next(m for t, m in tenant.members[device_group] if t == "device")
    tenant.delete_device(member)
    assert all(m != member for _, m in tenant.members[device_group])
    assert tenant.removal_reason(member, "devices") == "deleted"
    sid = tenant.add_service_principal({"displayName": "New App", "servicePrincipalType": "Application"},
                                       owners=uids[:2])
    tenant.update_service_principal(sid, accountEnabled=False)
    tenant.delete_service_principal(sid)
    tenant.delete_service_principal(sid, permanent=True)
    devices = tenant.changes_since(0, kind="devices")
    assert [(c.id, c.props, c.removed) for c in devices] == [
        (did, None, None), (member, None, "deleted")]
    assert tenant.changes_since(0, select=["id", "isCompliant"], kind="devices")[0].id == did
    assert [(c.id, c.removed) for c in tenant.changes_since(0, kind="servicePrincipals")] == [(sid, "deleted")]
    assert [c.id for c in tenant.changes_since(0, kind="groups")] == [device_group]
    with pytest.raises(KeyError):
        tenant.set_device_owners(did, ["no-such-user"])
    with pytest.raises(KeyError):
        tenant.update_device("nope", isCompliant=False)


def test_deleting_a_user_removes_its_memberships_and_ownerships(tenant):
    uid = next(u for u in tenant.users if any(u in o for o in tenant.group_owners.values())
               and any(u in o for o in tenant.device_owners.values()))
    groups = {g for g, ms in tenant.members.items() if any(m == uid for _, m in ms)}
    owned = {g for g, o in tenant.group_owners.items() if uid in o}
    assert groups
    before = tenant.version
    tenant.delete_user(uid)
    assert not any(m == uid for ms in tenant.members.values() for _, m in ms)
    assert not any(uid in o for o in (*tenant.group_owners.values(), *tenant.device_owners.values(),
                                      *tenant.sp_owners.values()))
    changes = {c.id: c for c in tenant.changes_since(before, kind="groups")}
    assert set(changes) == groups | owned
    assert all(changes[g].links == (("user", uid, False),) for g in groups)
    assert all("owners" in changes[g].props for g in owned)
    assert len(tenant.changes_since(before, kind="devices")) >= 1
