"""The whole directory over real HTTP: groups, devices, applications, departures, the guard, scoping, preview."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from sandbox.tools.verify import statuses, verify_directory, verify_users
from shared.admin.setup import run_setup
from shared.app import open_backend, preview, sync_full
from shared.cli import main
from shared.contract.checkpoints import USERS_DELTA
from shared.errors import IncompatibleSchema, ScopeError, SettingsError
from shared.records.schema import BY_KEY
from shared.settings import load_settings


@pytest.fixture
def env(box, tmp_path):
    return {**box.settings(), "ENTRA_ASSETS_HOME": str(tmp_path / "home")}


def _settings(env, **extra):
    return load_settings({**env, **extra})


def _synced(box, env, **extra):
    settings = _settings(env, **extra)
    run_setup(settings)
    return settings, sync_full(settings)


def _pushed_ids(box, execution) -> dict[str, set[str]]:
    """Record ids per selector in the chunks of one Assets execution, as the emulator received them."""
    ids: dict[str, set[str]] = {}
    for chunk in execution.chunks:
        for selector, entries in chunk.items():
            ids.setdefault(selector, set()).update(e.get("id") or e.get("key") or e.get("name") for e in entries)
    return ids


def test_full_sync_fills_all_nine_object_types_with_references_as_the_tenant_says(box, env):
    _, report = _synced(box, env)
    users = verify_users(box.tenant, box.assets)
    assert users["users in Assets"] == users["users in tenant"]
    assert users["managers resolved"] == users["managers in tenant"] > 0
    facts = verify_directory(box.tenant, box.assets)
    for kind in ("groups", "devices", "applications"):
        assert facts[f"{kind} in Assets"] == facts[f"{kind} in tenant"] > 0
    links = [k.removesuffix(" in tenant") for k in facts if k.endswith("links in tenant")]
    assert len(links) == 4 and all(facts[f"{k} resolved"] == facts[f"{k} in tenant"] for k in links)
    assert facts["groups: Members links in tenant"] > 0
    for name in ("Department", "Office Location", "Address", "City", "Country"):
        assert box.assets.objects(name), name
    # Members that are not users (devices, contacts, the nested group) are skipped and counted, not errors.
    assert any("not a user" in kind for kind in report.full.unmatched.counts)
    assert report.executions == 1 and not any(p.errors for p in report.pushes)
    # Applications: Publisher is v1.0's verifiedPublisher.displayName, Publisher Tenant ID appOwnerOrganizationId
    # (the emulator refuses the beta-only publisherName as Graph v1.0 does).
    apps = {sid: box.assets.find("Application", "Entra Object ID", sid).attributes
            for sid in box.tenant.service_principals}
    for sid, sp in box.tenant.service_principals.items():
        publisher, tenant_id = sp["verifiedPublisher"]["displayName"], sp.get("appOwnerOrganizationId")
        assert apps[sid].get("Publisher", []) == ([publisher] if publisher else []), sid
        assert apps[sid].get("Publisher Tenant ID", []) == ([tenant_id] if tenant_id else []), sid
    assert any(a.get("Publisher") for a in apps.values()) and any(a.get("Publisher Tenant ID") for a in apps.values())


def test_departures_are_marked_deleted_once_and_never_deleted(box, env):
    settings, _ = _synced(box, env)
    tenant = box.tenant
    user = next(u for u in sorted(tenant.users) if u not in tenant.managers.values())
    purged = next(u for u in sorted(tenant.users, reverse=True) if u not in tenant.managers.values() and u != user)
    group, device = sorted(tenant.groups)[1], sorted(tenant.devices)[1]
    tenant.delete_user(user)
    tenant.delete_user(purged, permanent=True)
    tenant.delete_group(group)
    tenant.delete_device(device)
    before = {name: len(box.assets.objects(name)) for name in ("User", "Group", "Device")}
    second = sync_full(settings)
    assert second.full.deactivated["user"] == 2 and second.full.deactivated["group"] == 1
    assert second.full.deactivated["device"] == 1
    assert {name: len(box.assets.objects(name)) for name in before} == before  # nothing deleted from Assets
    users = statuses(box.assets, "User")
    assert users[user] == users[purged] == "Deleted"
    assert statuses(box.assets, "Group")[group] == "Deleted" and statuses(box.assets, "Device")[device] == "Deleted"
    gone = box.assets.find("User", "Entra Object ID", user)
    assert gone.attributes["Account Enabled"] == [False] and gone.attributes["Name"]  # last data kept
    executions = len(box.assets.executions)
    third = sync_full(settings)  # already marked: nothing to push
    assert third.executions == 0 and len(box.assets.executions) == executions


def test_a_department_no_user_references_any_more_is_marked_deleted(box, env):
    settings, _ = _synced(box, env)
    tenant = box.tenant
    departments = {u.get("department").strip().casefold() for u in tenant.users.values() if u.get("department")}
    victim = min(departments)
    for uid, user in list(tenant.users.items()):
        if (user.get("department") or "").strip().casefold() == victim:
            tenant.update_user(uid, department=None)
    report = sync_full(settings)
    assert report.full.deactivated["department"] == 1
    department = next(o for o in box.assets.objects("Department") if o.attributes["Name"][0].casefold() == victim)
    assert department.attributes["Status"] == ["Deleted"]


def test_leaving_the_scope_deactivates_and_coming_back_reactivates(box, env):
    settings, _ = _synced(box, env)
    guests = {u for u, user in box.tenant.users.items() if user.get("userType") == "Guest"}
    assert guests
    scoped = _settings(env, USER_FILTER="userType eq 'Member'", MAX_DEACTIVATIONS="100000")
    report = sync_full(scoped)
    assert report.full.deactivated["user"] == len(guests)
    assert {u for u, s in statuses(box.assets, "User").items() if s == "Deleted"} == guests
    sync_full(settings)
    expected = {u: "Disabled" if box.tenant.users[u].get("accountEnabled") is False else "Active" for u in guests}
    assert {u: statuses(box.assets, "User")[u] for u in guests} == expected


def test_the_guard_stops_mass_deactivation_and_the_override_lets_it_through(box, env, monkeypatch):
    _synced(box, env)
    victims = [u for u in sorted(box.tenant.users) if u not in box.tenant.managers.values()][:3]
    for uid in victims:
        box.tenant.delete_user(uid)
    hire = box.tenant.add_user({"displayName": "New Hire", "userPrincipalName": "new.hire@sandbox.example",
                                "accountEnabled": True})
    for name, value in {**env, "MAX_DEACTIVATIONS": "2"}.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, ["sync", "--full"])
    assert result.exit_code == 3, result.output
    assert "3 objects would be marked Deleted" in result.output and "--allow-mass-deactivation" in result.output
    assert all(statuses(box.assets, "User")[u] == "Active" for u in victims)
    assert box.assets.find("User", "Entra Object ID", hire) is not None  # the other changes went through
    newest = json.loads(CliRunner().invoke(main, ["status", "--json"]).output)["runs"][0]
    assert newest["held_back"] == {"User": 3} and newest["stage"] == "Failed"
    assert "MAX_DEACTIVATIONS=2" in newest["errors"][-1]
    result = CliRunner().invoke(main, ["sync", "--full", "--allow-mass-deactivation"])
    assert result.exit_code == 0, result.output
    assert all(statuses(box.assets, "User")[u] == "Deleted" for u in victims)


def test_preview_reports_exactly_what_the_next_sync_does_and_writes_nothing(box, env):
    settings, _ = _synced(box, env)
    tenant = box.tenant
    ids = sorted(tenant.users)
    tenant.update_user(ids[3], jobTitle="Chief Previewer")
    tenant.add_user({"displayName": "Pre View", "userPrincipalName": "pre.view@sandbox.example", "accountEnabled": True})
    tenant.delete_user(next(u for u in ids[10:] if u not in tenant.managers.values()))
    tenant.delete_device(sorted(tenant.devices)[2])
    backend = open_backend(settings)
    state_before = {t: dict(backend.state.hashes(t)) for t in ("user", "device", "group")}
    executions, delta_link = len(box.assets.executions), backend.state.checkpoint(USERS_DELTA)
    report = preview(settings)
    assert len(box.assets.executions) == executions and backend.queue.depth().messages == 0
    assert {t: dict(backend.state.hashes(t)) for t in state_before} == state_before
    assert backend.state.checkpoint(USERS_DELTA) == delta_link
    update = next(u for u in report.changes["update"]["user"] if u["id"] == ids[3])
    assert update["changes"]["Job Title"][1] == "Chief Previewer"
    sync = sync_full(settings)
    planned = report.result
    assert (planned.created, planned.updated, planned.deactivated) == \
        (sync.full.created, sync.full.updated, sync.full.deactivated)
    pushed = _pushed_ids(box, box.assets.executions[-1])
    for kind in ("create", "update", "deactivate"):
        for type_key, entries in report.changes[kind].items():
            if type_key in ("user", "group", "device", "application"):
                assert {e["id"] for e in entries} <= pushed[BY_KEY[type_key].selector]
    assert sum(len(v) for v in pushed.values()) == sync.records_pushed


def _nothing_written(settings, box):
    backend = open_backend(settings)
    assert dict(backend.state.hashes("user")) == {} and backend.queue.depth().messages == 0
    assert box.assets.objects("User") == []


@pytest.mark.parametrize("extra, words", [
    ({"USER_FILTER": "department eq 'Sales"}, "USER_FILTER"),
    ({"GROUP_FILTER": "nosuchproperty eq 1"}, "GROUP_FILTER"),
    ({"SCOPE_GROUP_ID": "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"}, "SCOPE_GROUP_ID"),
])
def test_bad_scope_is_a_clear_error_and_nothing_is_written(box, env, extra, words):
    settings = _settings(env, **extra)
    run_setup(settings)
    with pytest.raises(ScopeError) as info:
        sync_full(settings)
    assert words in str(info.value)
    _nothing_written(settings, box)


def test_a_refused_catch_up_queues_nothing_and_writes_no_payload(box, env, monkeypatch):
    settings, _ = _synced(box, env)
    for name, value in {**env, "USER_FILTER": "department eq 'Sales"}.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, ["sync"])
    assert result.exit_code == 2 and "USER_FILTER" in result.output
    assert open_backend(settings).queue.depth().messages == 0
    assert not list((settings.home / "payloads").iterdir())


def test_a_type_that_cannot_be_read_fails_alone(box, env, monkeypatch):
    """403 on /servicePrincipals: users, groups and devices are still pushed, no application is marked
    Deleted, the command exits 1 naming the type and the permission, and the history says so (SPEC §7)."""
    _synced(box, env)
    hire = box.tenant.add_user({"displayName": "New Hire", "userPrincipalName": "new.hire@sandbox.example",
                                "accountEnabled": True})
    box.graph.denied.add("servicePrincipals")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, ["sync", "--full"])
    assert result.exit_code == 1, result.output
    assert "Application could not be read" in result.output and "Application.Read.All" in result.output
    assert box.assets.find("User", "Entra Object ID", hire) is not None
    assert set(statuses(box.assets, "Application").values()) <= {"Active", "Disabled"}
    newest = json.loads(CliRunner().invoke(main, ["status", "--json"]).output)["runs"][0]
    assert newest["stage"] == "Failed" and any("Application not read" in e for e in newest["errors"])
    assert newest["records"] == {"User": 1}
    box.graph.denied.clear()  # permission granted: the next run reads applications again, nothing lost
    assert CliRunner().invoke(main, ["sync", "--full"]).exit_code == 0


def test_a_filter_that_matches_nobody_marks_nobody_deleted(box, env, monkeypatch):
    """The relative guard: MAX_DEACTIVATIONS is large, but 300 of 300 users is more than 30 % of them."""
    _synced(box, env)
    for name, value in {**env, "USER_FILTER": "displayName eq 'Nobody at all'", "MAX_DEACTIVATIONS": "100000"
                        }.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, ["sync", "--full"])
    assert result.exit_code == 3, result.output
    assert f"{len(box.tenant.users):,} of the {len(box.tenant.users):,} User objects" in result.output
    assert "MAX_DEACTIVATION_PERCENT=30%" in result.output
    assert "Deleted" not in set(statuses(box.assets, "User").values())
    facts = verify_directory(box.tenant, box.assets)  # and nothing still refers to them less
    for label in ("groups: Members", "groups: Owners", "devices: Registered Owners", "applications: Owners"):
        assert facts[f"{label} links resolved"] == facts[f"{label} links in tenant"], label


def test_unknown_object_type_is_a_settings_error(env):
    with pytest.raises(SettingsError, match="SYNC_OBJECT_TYPES.*'Printers'"):
        load_settings({**env, "SYNC_OBJECT_TYPES": "User,Printers"})


def test_scope_group_syncs_its_transitive_user_members_and_reports_managers_outside(box, env):
    tenant = box.tenant
    outer = next(g for g in tenant.groups if any(t == "group" for t, _ in tenant.members.get(g, [])))
    _, report = _synced(box, env, SCOPE_GROUP_ID=outer, MAX_DEACTIVATIONS="100000")
    expected, stack = set(), [outer]
    while stack:  # the tenant's own transitive closure
        for odata_type, member in tenant.members.get(stack.pop(), []):
            if odata_type == "group":
                stack.append(member)
            elif odata_type == "user" and member in tenant.users:
                expected.add(member)
    assert set(statuses(box.assets, "User")) == expected
    outside = sum(1 for u in expected if tenant.managers.get(u) and tenant.managers[u] not in expected)
    assert report.full.unmatched.counts.get("manager outside the scope", 0) == outside


def test_sync_object_types_limits_what_is_read_and_the_schema(box, env):
    _, report = _synced(box, env, SYNC_OBJECT_TYPES="Device")
    assert set(report.full.read) == {"device"}
    assert not box.assets.objects("User") and box.assets.objects("Device")
    assert not [r for r in box.graph.requests if "/users" in r.path or "/groups" in r.path]
    # The schema holds Device alone, without the reference to users it has no objects of (issue 13).
    [device] = box.assets.document["schema"]["objectSchema"]["objectTypes"]
    assert device["name"] == "Device" and "Registered Owners" not in {a["name"] for a in device["attributes"]}
    assert not report.pushes[0].errors
    assert all("Registered Owners" not in o.attributes for o in box.assets.objects("Device"))


MAPPING = """\
attributes:
  User:
    - name: Cost Center
      source: employeeOrgData.costCenter
rename:
  User: {Mobile Phone: Mobile}
omit:
  User: [Employee Type]
"""


def test_mapping_file_adds_renames_and_omits_and_refuses_what_assets_cannot_change(box, env, tmp_path):
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING)
    uid = sorted(box.tenant.users)[5]
    box.tenant.update_user(uid, employeeOrgData={"costCenter": "CC-42", "division": "R&D"})
    settings, report = _synced(box, env, MAPPING_FILE=str(mapping))
    assert not any(p.errors for p in report.pushes)
    user_type = next(t for t in box.assets.document["schema"]["objectSchema"]["objectTypes"] if t["name"] == "User")
    names = {a["name"] for a in user_type["attributes"]}
    assert {"Cost Center", "Mobile"} <= names and not {"Employee Type", "Mobile Phone"} & names
    obj = box.assets.find("User", "Entra Object ID", uid)
    assert obj.attributes["Cost Center"] == ["CC-42"]
    mobile = next(u for u, user in box.tenant.users.items() if user.get("mobilePhone"))
    assert box.assets.find("User", "Entra Object ID", mobile).attributes["Mobile"]
    # A rename of an attribute Assets already has cannot go through the add-only PATCH: refused, nothing sent.
    mapping.write_text(MAPPING.replace("{Mobile Phone: Mobile}", "{Mobile Phone: Mobile, Job Title: Title}"))
    document = box.assets.document
    with pytest.raises(IncompatibleSchema, match="Job Title"):
        run_setup(settings)
    assert box.assets.document == document


def test_invalid_mapping_file_is_a_clear_error_naming_the_line(box, env, tmp_path, monkeypatch):
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING.replace("source: employeeOrgData.costCenter", "source: employeeOrgData.salary"))
    for name, value in {**env, "MAPPING_FILE": str(mapping)}.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, ["sync", "--full"])
    assert result.exit_code == 2 and "line 4" in result.output and "salary" in result.output, result.output
    _nothing_written(load_settings({**env}), box)


def test_owners_beyond_the_expand_limit_are_read_in_full(box, env):
    owners = sorted(box.tenant.users)[:23]
    gid = box.tenant.add_group({"displayName": "Many Owners", "securityEnabled": True}, members=owners[:2],
                               owners=owners)
    _synced(box, env)
    facts = verify_directory(box.tenant, box.assets)
    assert facts["groups: Owners links resolved"] == facts["groups: Owners links in tenant"]
    obj = box.assets.find("Group", "Entra Object ID", gid)
    assert len(obj.attributes["Owners"]) == 23
    assert [r for r in box.graph.requests if r.path.endswith(f"/groups/{gid}/owners")]
