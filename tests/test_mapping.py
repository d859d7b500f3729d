"""Pure mapping: Graph users to records, folding of derived objects, odd input."""
from shared.mapping import Derived, Warnings, clean, fold, map_user, resolve_country
from shared.schema import TEXT_LIMIT


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
    assert records["department", "sales"] == {"name": "Sales", "company": "Contoso"}
    assert records["office", "seattle hq"]["name"] == "seattle hq"
    countries = [k for k in records if k[0] == "country"]
    assert countries == [("country", "united states")]
    assert records["country", "united states"] == {"name": "United States", "code": "US"}
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
