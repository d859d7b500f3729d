"""Compare the emulated Assets store with the emulated tenant: what the demo prints and the tests assert.

Every figure is counted from both sides independently: the tenant's own dictionaries on one side, the objects
and resolved references in the Assets emulator on the other. Nothing here trusts the sync's own report.
"""
from __future__ import annotations

from sandbox.assets_emulator import AssetsEmulator
from sandbox.tenant import Tenant

OBJECT_ID = "Entra Object ID"


def _by_object_id(assets: AssetsEmulator, type_name: str) -> dict[str, object]:
    return {o.attributes[OBJECT_ID][0]: o for o in assets.objects(type_name) if o.attributes.get(OBJECT_ID)}


def _ref_ids(obj, attribute: str, key_to_id: dict[str, str]) -> set[str]:
    return {key_to_id[k] for k in obj.attributes.get(attribute, []) if k in key_to_id}


def verify_users(tenant: Tenant, assets: AssetsEmulator) -> dict[str, int]:
    """Users present, managers, departments and office locations resolved."""
    users = _by_object_id(assets, "User")
    key_to_id = {o.key: uid for uid, o in users.items()}
    managers_ok = departments_ok = offices_ok = 0
    for uid, user in tenant.users.items():
        obj = users.get(uid)
        if obj is None:
            continue
        manager = tenant.managers.get(uid)
        managers_ok += bool(manager) and _ref_ids(obj, "Manager", key_to_id) == {manager}
        departments_ok += bool(user.get("department") and obj.attributes.get("Department"))
        offices_ok += bool(user.get("officeLocation") and obj.attributes.get("Office Location"))
    return {"users in tenant": len(tenant.users), "users in Assets": len(users),
            "managers in tenant": sum(1 for u in tenant.users if tenant.managers.get(u)),
            "managers resolved": managers_ok,
            "departments resolved": departments_ok, "office locations resolved": offices_ok}


def verify_directory(tenant: Tenant, assets: AssetsEmulator) -> dict[str, int]:
    """Groups, devices and applications present, each with its user references exactly as the tenant says
    (direct user members only: nested groups, devices and contacts are not users)."""
    key_to_user = {o.key: uid for uid, o in _by_object_id(assets, "User").items()}
    facts: dict[str, int] = {}
    sides = (
        ("groups", "Group", tenant.groups, {
            "Members": lambda gid: {m for t, m in tenant.members.get(gid, []) if t == "user" and m in tenant.users},
            "Owners": lambda gid: set(tenant.group_owners.get(gid, []))}),
        ("devices", "Device", tenant.devices, {
            "Registered Owners": lambda did: set(tenant.device_owners.get(did, []))}),
        ("applications", "Application", tenant.service_principals, {
            "Owners": lambda sid: set(tenant.sp_owners.get(sid, []))}),
    )
    for label, type_name, objects, references in sides:
        in_assets = _by_object_id(assets, type_name)
        facts[f"{label} in tenant"] = len(objects)
        facts[f"{label} in Assets"] = sum(1 for oid in objects if oid in in_assets)
        for attribute, expected in references.items():
            want = {oid: expected(oid) for oid in objects}
            facts[f"{label}: {attribute} links in tenant"] = sum(map(len, want.values()))
            facts[f"{label}: {attribute} links resolved"] = sum(
                len(want[oid]) for oid, obj in in_assets.items()
                if oid in want and _ref_ids(obj, attribute, key_to_user) == want[oid])
    return facts


def statuses(assets: AssetsEmulator, type_name: str) -> dict[str, str]:
    """Entra object id -> Status of every object of the type in Assets."""
    return {oid: (o.attributes.get("Status") or [None])[0] for oid, o in _by_object_id(assets, type_name).items()}
