"""Pure mapping: Graph users to records, folding of derived objects, odd input."""
from dataclasses import replace

from shared.records.build import (
    Warnings,
    clean,
    deactivated,
    fold,
    is_deactivated,
    map_application,
    map_device,
    map_group,
    map_license,
    map_user,
    user_refs,
)
from shared.records.derived import Derived, resolve_country
from shared.records.schema import BY_KEY, OBJECT_TYPES, TEXT_LIMIT, for_object_types

UNLICENSED = [key for key in BY_KEY if key != "license"]  # every type but License


def _earlier(types):
    """``types`` as earlier versions had them: no License type, and User without Last Sign-In (as a MAPPING_FILE
    that omits it shapes it)."""
    return tuple(replace(t, attributes=tuple(a for a in t.attributes if a.locator != "lastSignIn"))
                 for t in for_object_types(types, UNLICENSED))


def _user(**kw):
    base = {"id": "u1", "displayName": "Ada Lovelace", "userPrincipalName": "ada@contoso.com",
            "mail": "ada@contoso.com", "accountEnabled": True, "businessPhones": ["+1 555 0100"],
            "department": "Sales", "officeLocation": "Seattle HQ", "userType": "Member"}
    base.update(kw)
    return base


def test_user_record_carries_every_spec_attribute():
    w = Warnings()
    r = map_user(_user(**{"manager@delta": [{"@odata.type": "#microsoft.graph.user", "id": "m1"}]}), w)
    assert r.type == "user" and r.id == "u1"
    assert r.data["name"] == "Ada Lovelace" and r.data["managerId"] == "m1"
    assert r.data["businessPhone"] == "+1 555 0100" and r.data["status"] == "Active"
    assert r.data["accountEnabled"] is True and not w.counts


def test_disabled_user_and_removed_manager():
    r = map_user(_user(accountEnabled=False, **{"manager@delta": [{"id": "m1", "@removed": {"reason": "deleted"}}]}),
                 Warnings())
    assert r.data["status"] == "Disabled" and r.data["managerId"] is None


def test_odd_users_still_map_with_warnings():
    w = Warnings()
    r = map_user({"id": "u2", "displayName": None, "userPrincipalName": "x@y.com", "mail": None,
                  "jobTitle": "J" * 400, "department": "  Sales\t Ops  ", "givenName": "Zoë\x07"}, w)
    assert r.data["name"] == "x@y.com" and r.data["email"] is None
    assert len(r.data["jobTitle"]) == TEXT_LIMIT and r.data["department"] == "Sales Ops"
    assert r.data["givenName"] == "Zoë"
    assert set(w.counts) == {"no display name (used the UPN)", f"Job Title trimmed to {TEXT_LIMIT} characters"}
    assert "u2" in w.lines()[0] and "x@y.com" not in " ".join(w.lines())
    nothing = map_user({"id": "u3"}, Warnings())
    assert nothing.data["name"] == "u3" and nothing.data["accountEnabled"] is None


def test_invalid_email_is_dropped_with_warning():
    w = Warnings()
    assert map_user(_user(mail="not-an-email"), w).data["email"] is None
    assert w.counts["e-mail not valid (left empty)"] == 1


def test_hash_changes_with_content_only():
    a, b = map_user(_user(), Warnings()), map_user(_user(), Warnings())
    c = map_user(_user(jobTitle="Engineer"), Warnings())
    assert a.hash == b.hash != c.hash


def test_country_variants_fold_to_one_iso_country():
    assert {resolve_country(v) for v in ("United States", "USA", "US", " us ")} == {("United States", "US")}
    assert resolve_country("UK") == ("United Kingdom", "GB") == resolve_country("GB")
    assert resolve_country("Atlantis") == ("Atlantis", "")


def test_clean_and_fold():
    assert clean("  a\n b ") == "a b" and clean("") is None and clean(None) is None
    assert fold(" SALES ") == fold("sales") == "sales"


def _derive(users, names=None):
    d = Derived(names=names or {})
    for u in users:
        d.observe(u, map_user(u, Warnings()))
    return {(r.type, r.id): r.data for r in d.records()}, d


def test_derived_objects_fold_spelling_variants():
    users = [_user(id=f"u{i}", department=dep, companyName="Contoso", officeLocation=" seattle hq",
                   streetAddress="1 Main St", postalCode="98052", city="Redmond", state="WA", country=c)
             for i, (dep, c) in enumerate([("Sales", "USA"), ("sales ", "United States"), ("SALES", "US"),
                                           ("Sales", "us")])]
    records, _ = _derive(users)
    assert records["department", "sales"] == {"name": "Sales", "company": "Contoso", "status": "Active"}
    assert records["office", "seattle hq"]["name"] == "seattle hq"
    countries = [k for k in records if k[0] == "country"]
    assert countries == [("country", "united states")]
    assert records["country", "united states"] == {"name": "United States", "code": "US", "status": "Active"}
    city = [v for k, v in records.items() if k[0] == "city"]
    assert len(city) == 1 and city[0]["country"] == "United States" and city[0]["key"] == "redmond|wa|us"
    address = [v for k, v in records.items() if k[0] == "address"]
    assert len(address) == 1 and address[0]["cityKey"] == "redmond|wa|us"
    assert address[0]["name"] == "1 Main St, 98052 Redmond, WA, United States"
    assert records["office", "seattle hq"]["addressKey"] == address[0]["key"]


def test_a_chosen_name_is_kept_across_runs():
    users = [_user(id=f"u{i}", department="SALES") for i in range(3)] + [_user(id="x", department="Sales")]
    records, derived = _derive(users, names={"department": {"sales": "Sales"}})
    assert records["department", "sales"]["name"] == "Sales"
    assert derived.chosen_names()["department"]["sales"] == "Sales"
    fresh, _ = _derive(users)
    assert fresh["department", "sales"]["name"] == "SALES"


def test_groups_devices_and_applications_map_to_spec_attributes():
    w = Warnings()
    group = map_group({"id": "g1", "displayName": None, "mailNickname": "eng", "groupTypes": ["Unified", "DynamicMembership"],
                       "mail": "not-an-address", "securityEnabled": False, "mailEnabled": True}, ["u2", "u1"], [], w)
    assert group.data["name"] == "eng" and group.data["groupTypes"] == "Unified, DynamicMembership"
    assert group.data["email"] is None and group.data["members"] == ["u2", "u1"] and group.data["status"] == "Active"
    device = map_device({"id": "d1", "displayName": "LAPTOP-1", "accountEnabled": False, "isCompliant": True,
                         "approximateLastSignInDateTime": "2026-11-20T08:15:00Z"}, ["u1"], w)
    assert device.data["status"] == "Disabled" and device.data["compliant"] is True
    assert device.data["lastSignIn"] == "2026-11-20T08:15:00Z" and device.data["registeredOwners"] == ["u1"]
    app = map_application({"id": "s1", "appId": "a-1", "displayName": "", "accountEnabled": True}, [], w)
    assert app.data["name"] == "a-1" and app.data["status"] == "Active"
    for record in (group, device, app):
        object_type = BY_KEY[record.type]
        assert set(record.data) == {a.locator for a in object_type.attributes}


def test_application_publisher_comes_from_the_v1_verified_publisher():
    w = Warnings()
    verified = {"id": "s1", "appId": "a-1", "displayName": "Slack", "publisherName": "Slack (beta only)",
                "verifiedPublisher": {"displayName": "Slack Technologies", "verifiedPublisherId": "1234567",
                                      "addedDateTime": "2021-05-01T00:00:00Z"},
                "appOwnerOrganizationId": "0f3e9a1c-0000-4000-8000-000000000001"}
    data = map_application(verified, [], w).data
    assert data["publisher"] == "Slack Technologies"
    assert data["publisherTenantId"] == "0f3e9a1c-0000-4000-8000-000000000001"
    # Unverified publishers: Graph gives the object with null values (or no object at all); no tenant for
    # managed identities.
    for unverified in ({"displayName": None, "verifiedPublisherId": None, "addedDateTime": None}, None):
        data = map_application({"id": "s2", "appId": "a-2", "verifiedPublisher": unverified}, [], w).data
        assert data["publisher"] is None and data["publisherTenantId"] is None
    assert not w.counts


def test_scope_and_departures():
    w, unmatched = Warnings(), Warnings()
    user = _user(id="u1", **{"manager@delta": [{"id": "m-out"}]})
    assert map_user(user, w, scope={"u1"}, unmatched=unmatched).data["managerId"] is None
    assert unmatched.counts == {"manager outside the scope": 1}
    assert user_refs(["b", "a", "x"], {"a", "b"}, unmatched, "owner outside the scope", "g1") == ["a", "b"]
    last = map_user(_user(id="u1"), w)
    gone = deactivated("user", "u1", last.data)
    assert gone.data["status"] == "Deleted" and gone.data["accountEnabled"] is False
    assert gone.data["name"] == last.data["name"] and is_deactivated(gone.hash) and not is_deactivated(last.hash)
    assert deactivated("user", "u1", last.data).hash == gone.hash  # stable: the next run sees it as pushed
    assert deactivated("group", "g9", None).data == {"id": "g9", "status": "Deleted"}


# --- one builder: a record gets its final data and its hash in one step -----------------------------------

_PINNED_USER = {"id": "u1", "displayName": "Ada  Lovelace", "userPrincipalName": "ada@contoso.com",
                "mail": "ada@contoso.com", "accountEnabled": True, "businessPhones": ["+1 555 0100"],
                "department": "Sales", "officeLocation": "Seattle HQ", "userType": "Member", "jobTitle": "Engineer\t",
                "city": "Seattle", "country": "USA", "streetAddress": "1 Main St", "manager@delta": [{"id": "m1"}]}


def test_hashes_stay_those_stored_by_earlier_versions():
    """Stored hashes of every deployment were made by the earlier builder (commit 00af9f2): a change of hash
    format would make the next full run push every record again."""
    w = Warnings()
    # User without Licenses and Last Sign-In (SYNC_OBJECT_TYPES without License, a MAPPING_FILE omitting Last
    # Sign-In) hashes as every earlier version did; the default User has both now (issue 13): one push of every
    # user after the upgrade, on purpose (README).
    [earlier] = [t for t in _earlier(OBJECT_TYPES) if t.key == "user"]
    assert map_user(_PINNED_USER, w, shaped=earlier).hash == "592020fa2bd403cca64da4d4"
    assert map_user(_PINNED_USER, w).hash == "ce9cdeb24fa1f571e34a5180"
    assert map_group({"id": "g1", "displayName": "Eng", "groupTypes": ["Unified"], "mail": "eng@contoso.com"},
                     ["u1"], ["u2"], w).hash == "d4b28ec289018f967d4ef41d"
    assert map_device({"id": "d1", "displayName": "LAPTOP", "isCompliant": True, "accountEnabled": False,
                       "operatingSystem": "Windows"}, ["u1"], w).hash == "3c19c5c802a8e914683c6e8d"
    assert map_application({"id": "s1", "appId": "a1", "displayName": "App",
                            "verifiedPublisher": {"displayName": "Pub"}}, [], w).hash == "4ed1e8199c16a53998b56fc7"
    d = Derived()
    d.observe(_PINNED_USER, map_user(_PINNED_USER, w))
    assert [r.hash for r in d.records()] == ["e466cb65ae7bc9d818ba91e7", "5957aff89dc68700b6e7435f",
                                             "07f6a0c4408eb3bf14938203", "278357d457283eae5c90fac6",
                                             "b8246fb94a164fe6f8b9d6ba"]


def _shaped_types():
    from shared.records.mapping_file_apply import apply_mapping_file
    from shared.records.mapping_file_value import CustomAttr, MappingFile
    from shared.records.schema import OBJECT_TYPES, with_link_attributes

    c = MappingFile(attributes={"user": (CustomAttr("Cost Center", "employeeOrgData.costCenter"),)},
                      renames={"user": {"Mobile Phone": "Mobile"}},
                      omit={"user": ("Employee Type", "Business Phone"), "department": ("Company",)})
    # As earlier versions shaped them: the pinned hashes below predate User's Licenses and Last Sign-In.
    return {t.key: t for t in with_link_attributes(_earlier(apply_mapping_file(OBJECT_TYPES, c)))}


def test_a_shaped_user_is_built_and_hashed_once_with_its_custom_attributes_and_accounts(monkeypatch):
    from shared.records import build

    hashed = []
    real = build.make_record
    monkeypatch.setattr(build, "make_record", lambda *args: hashed.append(args) or real(*args))
    types = _shaped_types()
    user = {"id": "u1", "displayName": "Ada Lovelace", "userPrincipalName": "ada@contoso.com",
            "mail": "ada@contoso.com", "accountEnabled": True, "businessPhones": ["+1 555 0100"],
            "department": "Sales", "employeeType": "FTE", "employeeOrgData": {"costCenter": "CC-7"},
            "manager@delta": [{"id": "m1"}]}
    record = map_user(user, Warnings(), accounts={"u1": "acc-1", "m1": "acc-m"}, shaped=types["user"])
    assert len(hashed) == 1
    assert set(record.data) == {a.locator for a in types["user"].attributes}
    assert "employeeType" not in record.data and "businessPhone" not in record.data
    assert record.data["x_employeeOrgData__costCenter"] == "CC-7"
    assert record.data["atlassianAccountId"] == "acc-1" and record.data["managerAtlassianAccountId"] == "acc-m"
    assert record.hash == real("user", "u1", dict(record.data)).hash
    assert record.hash == "c0b038c4e32969e43e5e754f"  # what the earlier rebuild-and-rehash path stored


def test_the_default_user_type_carries_no_account_attributes_even_with_accounts():
    record = map_user(_user(), Warnings(), accounts={"u1": "acc-1"})
    assert "atlassianAccountId" not in record.data
    assert set(record.data) == {a.locator for a in BY_KEY["user"].attributes}


def test_a_kept_manager_stands_when_graph_left_the_relationship_out():
    types = _shaped_types()
    last = {"managerId": "m0", "managerAtlassianAccountId": "acc-m0"}
    record = map_user(_user(), Warnings(), accounts={"u1": "acc-1", "m0": "acc-new"}, shaped=types["user"], kept=last)
    assert record.data["managerId"] == "m0" and record.data["managerAtlassianAccountId"] == "acc-m0"
    assert record.data["atlassianAccountId"] == "acc-1"
    plain = map_user(_user(**{"manager@delta": [{"id": "m1"}]}), Warnings(), kept={"managerId": "m0"})
    assert plain.data["managerId"] == "m0"


def test_derived_records_are_shaped_by_their_type():
    records = list(_derive([_user(companyName="Contoso")])[1].records(_shaped_types()))
    department = next(r for r in records if r.type == "department")
    assert department.data == {"name": "Sales", "status": "Active"}


def test_a_group_beyond_the_reference_limit_is_cut_to_it_and_still_fits_one_request():
    """An "All users" group of a big tenant: without the cut its one record is bigger than any request Assets
    (the sandbox: 413 above 10 MB) takes, which fails the whole execution, every run."""
    import inspect
    import uuid

    from sandbox.assets.emulator import AssetsEmulator
    from shared.records.schema import REFERENCE_LIMIT

    members = sorted(str(uuid.UUID(int=i)) for i in range(REFERENCE_LIMIT + 7))
    w = Warnings()
    record = map_group({"id": "g1", "displayName": "All users"}, members, ["u1"], w)
    assert record.data["members"] == members[:REFERENCE_LIMIT] and record.data["owners"] == ["u1"]
    assert w.lines() == [f"Members cut to the first {REFERENCE_LIMIT:,} (by id) of a larger list: 1 (e.g. g1)"]
    limit = inspect.signature(AssetsEmulator.__init__).parameters["max_body_bytes"].default
    assert len(record.data_json()) + 1000 < limit  # the record and a chunk's envelope
    w = Warnings()
    assert map_group({"id": "g1", "displayName": "All users"}, members[:REFERENCE_LIMIT], ["u1"], w).hash \
        == record.hash
    assert not w.lines()


def test_licences_map_from_subscribed_skus_and_users_refer_to_them_by_sku_id():
    w = Warnings()
    sku = {"skuId": "6fd2c87f-b296-42f0-b197-1e91e994b900", "skuPartNumber": "ENTERPRISEPACK",
           "capabilityStatus": "Enabled", "consumedUnits": 48, "prepaidUnits": {"enabled": 100, "suspended": 0}}
    record = map_license(sku, w)
    assert (record.type, record.id) == ("license", sku["skuId"])
    assert record.data == {"id": sku["skuId"], "name": "ENTERPRISEPACK", "skuId": sku["skuId"], "enabledUnits": 100,
                           "consumedUnits": 48, "status": "Active"}
    assert map_license({**sku, "capabilityStatus": "Warning"}, w).data["status"] == "Active"   # grace period
    assert map_license({**sku, "capabilityStatus": "Suspended"}, w).data["status"] == "Disabled"
    assert map_license({"skuId": "x", "prepaidUnits": "odd"}, w).data == {
        "id": "x", "name": "x", "skuId": "x", "enabledUnits": None, "consumedUnits": None, "status": "Disabled"}
    user = map_user({**_PINNED_USER, "assignedLicenses": [{"skuId": "b", "disabledPlans": []}, {"skuId": "a"},
                                                          {"skuId": 5}, "junk"]}, w)
    assert user.data["licenses"] == ["a", "b"]  # sorted, deduplicated, odd entries dropped
