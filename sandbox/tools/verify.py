"""Compare the emulated Assets store with the emulated tenant: what the demo prints and the tests assert.

Every figure is counted from both sides independently: the tenant's own dictionaries on one side, the objects
and resolved references in the Assets emulator on the other. Nothing here trusts the sync's own report.
"""
from __future__ import annotations

from sandbox.assets.emulator import AssetsEmulator
from sandbox.tenant.model import Tenant

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


def verify_licences(tenant: Tenant, assets: AssetsEmulator) -> dict[str, int]:
    """Licences present (by SKU ID), and each user's Licenses exactly the SKUs the tenant assigned them."""
    by_sku = {o.attributes["SKU ID"][0]: o for o in assets.objects("License") if o.attributes.get("SKU ID")}
    key_to_sku = {o.key: sku for sku, o in by_sku.items()}
    users = _by_object_id(assets, "User")
    want = {uid: {lic["skuId"] for lic in user.get("assignedLicenses") or () if lic["skuId"] in tenant.skus}
            for uid, user in tenant.users.items()}
    return {"licences in tenant": len(tenant.skus), "licences in Assets": sum(1 for s in tenant.skus if s in by_sku),
            "users: Licenses links in tenant": sum(map(len, want.values())),
            "users: Licenses links resolved": sum(len(want[uid]) for uid, obj in users.items()
                                                  if uid in want and _ref_ids(obj, "Licenses", key_to_sku) == want[uid])}


def statuses(assets: AssetsEmulator, type_name: str) -> dict[str, str]:
    """Entra object id -> Status of every object of the type in Assets."""
    return {oid: (o.attributes.get("Status") or [None])[0] for oid, o in _by_object_id(assets, type_name).items()}


# -- exact comparison (the chaos harness: sandbox/tools/chaos.py) ----------------------------------------------------

# Per Assets type: the tenant collection and the text attributes compared value for value with a Graph property.
TEXT_ATTRIBUTES = {
    "User": ("users", (("Job Title", "jobTitle"), ("User Principal Name", "userPrincipalName"),
                       ("Given Name", "givenName"), ("Surname", "surname"))),
    "Group": ("groups", (("Description", "description"),)),
    "Device": ("devices", (("OS Version", "operatingSystemVersion"), ("Operating System", "operatingSystem"))),
    "Application": ("servicePrincipals", (("Name", "displayName"), ("App ID", "appId"),
                                          ("Publisher Tenant ID", "appOwnerOrganizationId"))),
}
TEXT_LIMIT = 255  # what Assets keeps of a text value (sandbox/assets/apply.py TEXT_MAX_LENGTH)


def _text(value: object) -> str | None:
    """A Graph text as Assets shows it: spaces collapsed, trimmed to the text limit; None when empty."""
    if value is None:
        return None
    return " ".join(str(value).split())[:TEXT_LIMIT].rstrip() or None


def _first(obj, attribute: str) -> object:
    return (obj.attributes.get(attribute) or [None])[0]


def _expected_references(tenant: Tenant, type_name: str, oid: str) -> dict[str, set[str]]:
    """The user references the tenant gives one object: attribute name -> Entra user ids."""
    if type_name == "User":
        manager = tenant.managers.get(oid)
        return {"Manager": {manager} if manager else set()}
    if type_name == "Group":
        return {"Members": {m for t, m in tenant.members.get(oid, []) if t == "user" and m in tenant.users},
                "Owners": set(tenant.group_owners.get(oid, []))}
    if type_name == "Device":
        return {"Registered Owners": set(tenant.device_owners.get(oid, []))}
    return {"Owners": set(tenant.sp_owners.get(oid, []))}


def _object_mismatches(tenant: Tenant, type_name: str, oid: str, props: dict, obj,
                       key_to_user: dict[str, str], skip: tuple[str, ...]) -> list[str]:
    """What differs between one tenant object and its Assets object (text, Status, user references)."""
    _, attributes = TEXT_ATTRIBUTES[type_name]
    found = [f"{type_name} {oid}: {name} is {_first(obj, name)!r}, the tenant says {_text(props.get(prop))!r}"
             for name, prop in attributes if _first(obj, name) != _text(props.get(prop))]
    status = "Disabled" if props.get("accountEnabled") is False else "Active"
    if _first(obj, "Status") != status:
        found.append(f"{type_name} {oid}: Status is {_first(obj, 'Status')!r}, the tenant says {status!r}")
    for attribute, want in _expected_references(tenant, type_name, oid).items():
        if attribute in skip:
            continue
        have = {key_to_user.get(k, f"unknown key {k}") for k in obj.attributes.get(attribute, [])}
        if have != want:
            found.append(f"{type_name} {oid}: {attribute} has {len(have - want)} link(s) too many and "
                         f"{len(want - have)} missing")
    return found


def mismatches(tenant: Tenant, assets: AssetsEmulator, catch_up: bool = False) -> tuple[list[str], int]:
    """Every difference between Assets and the tenant, object by object, and the number of objects compared.

    Each user, group, device and application of the tenant must be in Assets with the text attributes of
    ``TEXT_ATTRIBUTES``, its Status (Active, or Disabled when ``accountEnabled`` is false) and its user
    references (Manager; Members and Owners; Registered Owners) exactly as the tenant has them; every object
    in Assets that is no longer in the tenant must be ``Status = Deleted``. With ``catch_up``, only what a
    delta catch-up (`sync`) keeps current: users and groups, without the groups' owners (devices and
    applications have no change notifications and group owners no delta: full runs keep those, SPEC §1)."""
    key_to_user = {o.key: uid for uid, o in _by_object_id(assets, "User").items()}
    types = ("User", "Group") if catch_up else tuple(TEXT_ATTRIBUTES)
    skip = ("Owners",) if catch_up else ()
    found: list[str] = []
    compared = 0
    for type_name in types:
        kind = TEXT_ATTRIBUTES[type_name][0]
        in_assets = _by_object_id(assets, type_name)
        in_tenant = tenant.objects[kind]
        for oid, props in in_tenant.items():
            obj = in_assets.get(oid)
            found += [f"{type_name} {oid}: not in Assets"] if obj is None else \
                _object_mismatches(tenant, type_name, oid, props, obj, key_to_user, skip)
        for oid, obj in in_assets.items():
            if oid not in in_tenant and _first(obj, "Status") != "Deleted":
                found.append(f"{type_name} {oid}: gone from the tenant but Status is {_first(obj, 'Status')!r}")
        compared += len(in_tenant.keys() | in_assets.keys())
    return found, compared


def values(assets: AssetsEmulator, type_name: str, attribute: str) -> dict[str, tuple[object, str | None]]:
    """Entra object id -> (first value of ``attribute``, Status) of every object of the type in Assets."""
    return {oid: (_first(o, attribute), _first(o, "Status")) for oid, o in _by_object_id(assets, type_name).items()}


def verify_managed_devices(tenant: Tenant, assets: AssetsEmulator) -> dict[str, int]:
    """Intune devices present (by Intune Device ID), and each one's Primary User and Entra Device exactly as the
    tenant says: the user with its ``userId``, the Entra device whose ``deviceId`` is its ``azureADDeviceId``
    (none when that device is missing or never registered)."""
    found = {o.attributes["Intune Device ID"][0]: o for o in assets.objects("Managed Device")
             if o.attributes.get("Intune Device ID")}
    users = {o.key: uid for uid, o in _by_object_id(assets, "User").items()}
    devices = {o.key: (o.attributes.get("Device ID") or [""])[0].lower() for o in assets.objects("Device")}
    entra = {d.get("deviceId", "").lower() for d in tenant.devices.values()}
    facts = {"managed devices in tenant": 0, "managed devices in Assets": 0, "primary users resolved": 0,
             "Entra devices resolved": 0}
    for mid, device in tenant.managed_devices.items():
        facts["managed devices in tenant"] += 1
        obj = found.get(mid)
        if obj is None:
            continue
        facts["managed devices in Assets"] += 1
        want_user = {device["userId"]} if device.get("userId") in tenant.users else set()
        want_device = {device["azureADDeviceId"].lower()} & entra if device.get("azureADDeviceId") else set()
        facts["primary users resolved"] += _ref_ids(obj, "Primary User", users) == want_user
        facts["Entra devices resolved"] += _ref_ids(obj, "Entra Device", devices) == want_device
    return facts
