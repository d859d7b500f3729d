"""Pure mapping: Graph objects (users, groups, devices, service principals) to Assets records.

Nothing here does I/O. ``map_user``, ``map_group``, ``map_device`` and ``map_application`` turn one raw Graph
object into a ``Record`` (the data keyed by the locators of ``shared.records.schema``, plus a content hash);
``deactivated`` builds the record that marks a departure. Odd input never raises: a missing name falls back to
the UPN or the id, over-long text is trimmed to what Assets accepts, and every such fix is counted in
``Warnings`` (object ids only - no names or e-mails). The derived objects live in ``shared.records.derived``.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import orjson

from shared.records.mapping_file_apply import extract
from shared.records.schema import (
    ACCOUNT,
    APPLICATION,
    BY_KEY,
    DEVICE,
    GROUP,
    LICENSE,
    MANAGED_DEVICE,
    MANAGER_ACCOUNT,
    REFERENCE_LIMIT,
    TEXT_LIMIT,
    USER,
    Attr,
    ObjectType,
)

# Properties read from Graph for users: what the schema needs, plus `manager` for relationship tracking.
USER_SELECT = ["id", "displayName", "givenName", "surname", "mail", "userPrincipalName", "jobTitle",
               "department", "companyName", "employeeId", "employeeType", "officeLocation", "streetAddress",
               "city", "state", "postalCode", "country", "mobilePhone", "businessPhones", "accountEnabled",
               "userType", "assignedLicenses", "manager"]  # assignedLicenses on delta: UNCONFIRMED, see map_user
# Groups through delta: `members` turns on members@delta (reference/graph.md §2.5); owners are not tracked by
# delta and come from a list with $expand=owners.
GROUP_SELECT = ["id", "displayName", "description", "mail", "mailNickname", "groupTypes", "securityEnabled",
                "mailEnabled", "members"]
DEVICE_SELECT = ["id", "displayName", "deviceId", "operatingSystem", "operatingSystemVersion", "trustType",
                 "isCompliant", "isManaged", "accountEnabled", "approximateLastSignInDateTime"]
# Service principals: the publisher is v1.0's verifiedPublisher (publisherName is beta-only: v1.0 answers 400 to
# it in a $select); appOwnerOrganizationId is the tenant the app is registered in.
APPLICATION_SELECT = ["id", "displayName", "appId", "verifiedPublisher", "appOwnerOrganizationId",
                      "servicePrincipalType", "accountEnabled"]
# Intune devices (GET /deviceManagement/managedDevices, v1.0). Graph has no delta and no change notifications for
# them, so they are read by full runs only (https://learn.microsoft.com/graph/api/intune-devices-manageddevice-list;
# https://learn.microsoft.com/graph/change-notifications-overview lists no Intune resource).
MANAGED_DEVICE_SELECT = ["id", "deviceName", "serialNumber", "manufacturer", "model", "operatingSystem", "osVersion",
                         "complianceState", "managementState", "managedDeviceOwnerType", "enrolledDateTime",
                         "lastSyncDateTime", "totalStorageSpaceInBytes", "freeStorageSpaceInBytes", "userId",
                         "azureADDeviceId"]
# Sign-in activity comes from its own listing: /users/delta refuses signInActivity in $select ("$expand/$select is
# not supported for the following properties: signInActivity",
# https://github.com/microsoftgraph/microsoft-graph-explorer-v4/issues/3189).
SIGN_IN_SELECT = ["id", "signInActivity"]
_SPACES = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DELETED = "Deleted"


@dataclass(frozen=True, slots=True)
class Record:
    """One Assets entry: object type key, record id (Entra id or folded key), locator data, content hash, and
    the data as the JSON the hash was taken of (``make_record``; empty for a record built by hand)."""

    type: str
    id: str
    data: dict
    hash: str
    json: bytes = field(default=b"", repr=False, compare=False)

    def data_json(self) -> bytes:
        """The data as JSON: the text the hash was taken of, so a record is serialised once, not twice."""
        return self.json or orjson.dumps(self.data)


def make_record(type_key: str, record_id: str, data: dict) -> Record:
    """A record with its content hash: any change of any pushed value changes the hash. ``data`` must not be
    changed afterwards (its JSON is kept for the payload line)."""
    text = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    return Record(type_key, record_id, data, hashlib.blake2b(text, digest_size=12).hexdigest(), text)


@dataclass
class Warnings:
    """Counts of data fixes per kind, with a few sample object ids each (never personal values)."""

    counts: Counter = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, kind: str, object_id: str) -> None:
        self.counts[kind] += 1
        if len(self.samples[kind]) < 3:
            self.samples[kind].append(object_id)

    def lines(self) -> list[str]:
        """Readable summary lines, e.g. ``Job Title trimmed to 255 characters: 2 (e.g. 1a2b…)``."""
        return [f"{kind}: {n} (e.g. {', '.join(self.samples[kind])})" for kind, n in sorted(self.counts.items())]


def clean(value, warnings: Warnings | None = None, object_id: str = "", attribute: str = "") -> str | None:
    """Text as Assets should get it: control characters removed, spaces collapsed, trimmed to TEXT_LIMIT.

    Returns None for None/empty. Non-ASCII text is kept as is.
    """
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if not text.isprintable() or "  " in text:  # the regexes only when they can change something (hot path)
        text = _SPACES.sub(" ", _CONTROL.sub("", text))
    text = text.strip()
    if len(text) > TEXT_LIMIT:
        text = text[:TEXT_LIMIT].rstrip()
        if warnings is not None:
            warnings.add(f"{attribute} trimmed to {TEXT_LIMIT} characters", object_id)
    return text or None


def fold(text: str | None) -> str:
    """The folding key of a value: spelling variants that differ in case or spaces fold to one key."""
    if not text:
        return ""
    if not text.isprintable() or "  " in text:
        text = _SPACES.sub(" ", text)
    return text.strip().casefold()


def manager_of(user: dict) -> str | None:
    """The manager id from ``manager@delta`` (a removed link means no manager)."""
    for link in user.get("manager@delta") or ():
        if "@removed" not in link and link.get("id"):
            return link["id"]
    return None


# Plain text attributes of a user: (record key, Graph property, Assets attribute for warnings).
_USER_TEXT = (("upn", "userPrincipalName", "User Principal Name"), ("givenName", "givenName", "Given Name"),
              ("surname", "surname", "Surname"), ("jobTitle", "jobTitle", "Job Title"),
              ("employeeId", "employeeId", "Employee ID"), ("employeeType", "employeeType", "Employee Type"),
              ("company", "companyName", "Company"), ("department", "department", "Department"),
              ("officeLocation", "officeLocation", "Office Location"), ("mobilePhone", "mobilePhone", "Mobile Phone"),
              ("userType", "userType", "User Type"))
_DEVICE_TEXT = (("deviceId", "deviceId", "Device ID"), ("operatingSystem", "operatingSystem", "Operating System"),
                ("osVersion", "operatingSystemVersion", "OS Version"), ("trustType", "trustType", "Trust Type"))
_APPLICATION_TEXT = (("appId", "appId", "App ID"), ("publisherTenantId", "appOwnerOrganizationId", "Publisher Tenant ID"),
                     ("servicePrincipalType", "servicePrincipalType", "Service Principal Type"))


def _texts(data: dict, raw: dict, fields: tuple[tuple[str, str, str], ...], warnings: Warnings, object_id: str) -> None:
    """``clean`` of each (record key, Graph property, attribute) into ``data``. The usual value - a short,
    printable string without double spaces - is only stripped here: this loop runs for every text attribute
    of every object, and a call of ``clean`` per value was a tenth of a full run's CPU."""
    get = raw.get
    for key, graph_key, attribute in fields:
        value = get(graph_key)
        if value is not None:
            if value.__class__ is str and len(value) <= TEXT_LIMIT and value.isprintable() and "  " not in value:
                value = value.strip() or None
            else:
                value = clean(value, warnings, object_id, attribute)
        data[key] = value


def map_user(user: dict, warnings: Warnings, scope: Container[str] | None = None,
             unmatched: Warnings | None = None, accounts: Mapping[str, str | None] | None = None, *,
             shaped: ObjectType = USER, kept: Mapping[str, object] | None = None,
             last_sign_in: str | None = None) -> Record:
    """One Graph user (delta JSON) as the User record of the ``shaped`` object type (``Shape``), hashed once.
    Never raises on odd values; fixes are counted.

    With a ``scope`` (the ids of the users in scope), a manager outside it is left empty and counted in
    ``unmatched``: Assets would otherwise link to a stale object, or to nothing, depending on history.
    ``accounts`` (Entra user id -> Atlassian account id, ``shared.jira_links``) fills the account attributes when
    ``shaped`` has them (Jira linking on). ``kept``: the record last pushed, whose manager (and manager's
    account) stands when Graph left ``manager@delta`` out (a catch-up: the relationship did not change).
    ``last_sign_in``: Last Sign-In, which the user object does not carry (``last_sign_in``, read apart).
    """
    uid = user["id"]
    name = clean(user.get("displayName"), warnings, uid, "Name")
    if not name:
        warnings.add("no display name (used the UPN)", uid)
        name = clean(user.get("userPrincipalName")) or clean(user.get("mail")) or uid
    email = clean(user.get("mail"), warnings, uid, "Email")
    if email and not _EMAIL.match(email):
        warnings.add("e-mail not valid (left empty)", uid)
        email = None
    data = {"id": uid, "name": name, "email": email}
    _texts(data, user, _USER_TEXT, warnings, uid)
    phones = user.get("businessPhones")
    enabled = user.get("accountEnabled")
    manager = kept.get("managerId") if kept is not None else \
        _in_scope(manager_of(user), scope, unmatched, "manager outside the scope", uid)
    data["managerId"] = manager
    data["businessPhone"] = clean(phones[0], warnings, uid, "Business Phone") if phones else None
    data["accountEnabled"] = None if enabled is None else bool(enabled)
    # SKU ids, sorted for a stable hash. That delta returns assignedLicenses like any selected property is
    # UNCONFIRMED; the full run's /users/delta round is the same request, so both see what Graph returns.
    data["licenses"] = sorted({lic["skuId"] for lic in user.get("assignedLicenses") or ()
                               if isinstance(lic, dict) and isinstance(lic.get("skuId"), str)})
    data["lastSignIn"] = last_sign_in
    data["status"] = "Disabled" if enabled is False else "Active"
    shape = Shape.of(shaped)
    if shape.accounts:
        lookup = accounts or {}
        data[ACCOUNT.locator] = lookup.get(uid)
        data[MANAGER_ACCOUNT.locator] = kept.get(MANAGER_ACCOUNT.locator) if kept is not None else \
            lookup.get(manager) if manager else None
    return shape.record("user", uid, data, user)


def _in_scope(ref: str | None, scope: Container[str] | None, unmatched: Warnings | None, kind: str,
              owner: str) -> str | None:
    if ref is None or scope is None or ref in scope:
        return ref
    if unmatched is not None:
        unmatched.add(kind, owner)
    return None


def user_refs(refs: Iterable[str], scope: Container[str] | None, unmatched: Warnings | None, kind: str,
              owner: str) -> list[str]:
    """The user ids of ``refs`` that are in scope (all when ``scope`` is None), sorted for a stable hash; each
    ref outside the scope is counted in ``unmatched``. A ``scope`` with ``intersection`` (a set, the planner's
    ``IdSet``) is asked once for all of them: one C call, not one lookup call per group member."""
    if scope is None:
        return sorted(set(refs))
    refs = refs if isinstance(refs, list) else list(refs)
    inside = scope.intersection(refs) if hasattr(scope, "intersection") else {r for r in refs if r in scope}
    if unmatched is not None and len(inside) < len(refs):
        for ref in refs:
            if ref not in inside:
                unmatched.add(kind, owner)
    return sorted(inside)


def _status(enabled: object) -> str:
    return "Disabled" if enabled is False else "Active"


def _bool(value: object) -> bool | None:
    return bool(value) if value is not None else None


def map_group(group: dict, members: list[str], owners: list[str], warnings: Warnings, *,
              shaped: ObjectType = GROUP) -> Record:
    """One Graph group (delta JSON, ``members@delta`` already merged by the caller) as the Group record of the
    ``shaped`` type. ``members`` and ``owners`` are the user ids to link (the caller drops non-users and users
    out of scope)."""
    gid = group["id"]
    c = lambda key, attr: clean(group.get(key), warnings, gid, attr)
    email = c("mail", "Email")
    data = {
        "id": gid, "name": c("displayName", "Name") or clean(group.get("mailNickname")) or gid,
        "description": c("description", "Description"), "email": email if email and _EMAIL.match(email) else None,
        "groupTypes": clean(", ".join(group.get("groupTypes") or ())), "securityEnabled": _bool(group.get("securityEnabled")),
        "mailEnabled": _bool(group.get("mailEnabled")), "members": _limited(members, warnings, gid),
        "owners": owners, "status": "Active",
    }
    return Shape.of(shaped).record("group", gid, data, group)


def _limited(members: list[str], warnings: Warnings, group_id: str) -> list[str]:
    """``members`` (sorted) cut to ``REFERENCE_LIMIT``, the cut counted in ``warnings``."""
    if len(members) <= REFERENCE_LIMIT:
        return members
    warnings.add(f"Members cut to the first {REFERENCE_LIMIT:,} (by id) of a larger list", group_id)
    return members[:REFERENCE_LIMIT]


def map_device(device: dict, owners: list[str], warnings: Warnings, *, shaped: ObjectType = DEVICE) -> Record:
    """One Graph device as the Device record of the ``shaped`` type; ``owners`` are the registered owners'
    user ids in scope."""
    did = device["id"]
    enabled = device.get("accountEnabled")
    data = {"id": did, "name": clean(device.get("displayName"), warnings, did, "Name") or did}
    _texts(data, device, _DEVICE_TEXT, warnings, did)
    compliant, managed = device.get("isCompliant"), device.get("isManaged")
    data["compliant"] = None if compliant is None else bool(compliant)
    data["managed"] = None if managed is None else bool(managed)
    data["accountEnabled"] = None if enabled is None else bool(enabled)
    data["lastSignIn"] = clean(device.get("approximateLastSignInDateTime"))
    data["registeredOwners"] = owners
    data["status"] = "Disabled" if enabled is False else "Active"
    return Shape.of(shaped).record("device", did, data, device)


def map_application(sp: dict, owners: list[str], warnings: Warnings, *, shaped: ObjectType = APPLICATION) -> Record:
    """One Graph service principal (an enterprise application) as the Application record of the ``shaped``
    type. The publisher is the verified publisher's name (null for an app whose publisher is not verified, and
    for Microsoft's own)."""
    sid = sp["id"]
    publisher = sp.get("verifiedPublisher") or {}
    data = {"id": sid, "name": clean(sp.get("displayName"), warnings, sid, "Name") or clean(sp.get("appId")) or sid}
    _texts(data, sp, _APPLICATION_TEXT[:1], warnings, sid)
    data["publisher"] = clean(publisher.get("displayName"), warnings, sid, "Publisher")
    _texts(data, sp, _APPLICATION_TEXT[1:], warnings, sid)
    data["accountEnabled"] = _bool(sp.get("accountEnabled"))
    data["owners"] = owners
    data["status"] = _status(sp.get("accountEnabled"))
    return Shape.of(shaped).record("application", sid, data, sp)


# subscribedSku.capabilityStatus: Enabled and Warning (in its grace period) still license users; Suspended,
# LockedOut and Deleted no longer do (https://learn.microsoft.com/graph/api/resources/subscribedsku).
_SKU_ACTIVE = ("Enabled", "Warning")


def map_license(sku: dict, warnings: Warnings, *, shaped: ObjectType = LICENSE) -> Record:
    """One Graph ``subscribedSku`` as the License record of the ``shaped`` type. Its name is ``skuPartNumber``:
    Graph has no friendly name of a SKU, and no well-kept package maps them (SPEC §4)."""
    sid = sku["skuId"]
    units = sku.get("prepaidUnits") if isinstance(sku.get("prepaidUnits"), dict) else {}
    data = {"id": sid, "name": clean(sku.get("skuPartNumber"), warnings, sid, "Name") or sid, "skuId": sid,
            "enabledUnits": _int(units.get("enabled")), "consumedUnits": _int(sku.get("consumedUnits")),
            "status": "Active" if sku.get("capabilityStatus") in _SKU_ACTIVE else "Disabled"}
    return Shape.of(shaped).record("license", sid, data, sku)


def last_sign_in(user: dict) -> str | None:
    """Last Sign-In of a user from its ``signInActivity``: the later of the interactive and the non-interactive
    sign-in (Microsoft's guidance for finding inactive accounts weighs both,
    https://learn.microsoft.com/entra/identity/monitoring-health/howto-manage-inactive-user-accounts). The values
    are ISO 8601 UTC strings of one format, so they compare as text; None when the user never signed in."""
    activity = user.get("signInActivity")
    if not isinstance(activity, dict):
        return None
    times = [t for t in (activity.get("lastSignInDateTime"), activity.get("lastNonInteractiveSignInDateTime"))
             if isinstance(t, str) and t]
    return clean(max(times)) if times else None


# Intune's value for a device that is not registered in Entra ID (UNCONFIRMED beyond observed data).
_NO_ENTRA_DEVICE = "00000000-0000-0000-0000-000000000000"
_GIB = 1 << 30


def entra_device_id(device: dict) -> str | None:
    """The Entra ``deviceId`` an Intune managedDevice names (``azureADDeviceId``, lower case), None for none."""
    entra = clean(device.get("azureADDeviceId"))
    return None if entra is None or entra == _NO_ENTRA_DEVICE else entra.lower()


def map_managed_device(device: dict, primary_user: str | None, entra_device: str | None, warnings: Warnings, *,
                       shaped: ObjectType = MANAGED_DEVICE) -> Record:
    """One Intune managedDevice as the Managed Device record of the ``shaped`` type. The caller resolves the
    references: ``primary_user`` (the user id, None when it has none or the user is not synced) and
    ``entra_device`` (the Entra Device ID, None unless that device is synced: Assets could not link it)."""
    mid = device["id"]
    c = lambda key, attr: clean(device.get(key), warnings, mid, attr)
    data = {"id": mid, "name": c("deviceName", "Name") or c("serialNumber", "Serial Number") or mid,
            "serialNumber": c("serialNumber", "Serial Number"), "manufacturer": c("manufacturer", "Manufacturer"),
            "model": c("model", "Model"), "operatingSystem": c("operatingSystem", "Operating System"),
            "osVersion": c("osVersion", "OS Version"), "complianceState": c("complianceState", "Compliance State"),
            "managementState": c("managementState", "Management State"),
            "ownership": c("managedDeviceOwnerType", "Ownership"), "enrolled": clean(device.get("enrolledDateTime")),
            "lastSync": clean(device.get("lastSyncDateTime")),
            "storageTotal": _gib(device.get("totalStorageSpaceInBytes")),
            "storageFree": _gib(device.get("freeStorageSpaceInBytes")),
            "primaryUser": primary_user, "entraDevice": entra_device, "status": "Active"}
    return Shape.of(shaped).record("managed_device", mid, data, device)


def _gib(value: object) -> float | None:
    """Bytes as GiB with one decimal (Intune reports 0 where it does not know: left empty)."""
    number = _int(value)
    return round(number / _GIB, 1) if number else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def derived_record(type_key: str, record_id: str, data: dict, shaped: ObjectType | None = None) -> Record:
    """A derived object's record (``shared.records.derived``) as the ``shaped`` type has it (the default type
    when None). Derived objects have no Graph object: an added attribute has no value."""
    return Shape.of(shaped or BY_KEY[type_key]).record(type_key, record_id, data, {})


@dataclass(frozen=True, slots=True)
class Shape:
    """How one object type, as the MAPPING_FILE (omissions, added attributes) and Jira linking (the account
    attributes) shaped it, differs from the data the ``map_*`` functions build for the default type.

    ``record`` applies it and hashes the result: the one step where a record gets its final data and its
    hash. The hash covers exactly the type's attributes, whatever the order of the data's keys, so a type
    that nothing customised hashes as before, and so does one shaped by a MAPPING_FILE."""

    type: ObjectType
    accounts: bool = False                 # User with the Atlassian account attributes
    omitted: tuple[str, ...] = ()          # default locators the type does not have
    added: tuple[Attr, ...] = ()           # attributes read from the raw Graph object (``source``)
    empty: tuple[str, ...] = ()            # other locators of the type that nothing fills: sent empty

    _cache: ClassVar[dict[int, Shape]] = {}

    @classmethod
    def of(cls, object_type: ObjectType) -> Shape:
        """The shape of ``object_type``, worked out once per type object (a run passes the same one for
        every record)."""
        shape = cls._cache.get(id(object_type))
        if shape is not None and shape.type is object_type:
            return shape
        if len(cls._cache) > 256:  # types built by tests and reloaded settings: keep the cache small
            cls._cache.clear()
        default = [a.locator for a in BY_KEY[object_type.key].attributes]
        locators = [a.locator for a in object_type.attributes]
        accounts = object_type.key == "user" and ACCOUNT.locator in locators
        filled = {*default, *((ACCOUNT.locator, MANAGER_ACCOUNT.locator) if accounts else ())}
        added = tuple(a for a in object_type.attributes if a.source)
        shape = cls(object_type, accounts, tuple(x for x in default if x not in locators), added,
                    tuple(x for x in locators if x not in filled and not any(a.locator == x for a in added)))
        cls._cache[id(object_type)] = shape
        return shape

    def record(self, type_key: str, record_id: str, data: dict, raw: dict) -> Record:
        """``data`` (as ``map_*`` built it, account attributes included) shaped and hashed."""
        for locator in self.omitted:
            del data[locator]
        for attr in self.added:
            data[attr.locator] = extract(raw, attr)
        for locator in self.empty:
            data[locator] = None
        return make_record(type_key, record_id, data)


def deactivated(type_key: str, record_id: str, last: dict | None) -> Record:
    """The record that marks a departed object: its last pushed data with ``Status = Deleted`` (users also
    ``Account Enabled = false``). Without stored data (pushed by an older version), only what identifies it.
    The hash carries a ``D`` prefix, so later runs see at a glance that the departure was already pushed."""
    data = dict(last) if last else {"id": record_id}
    data["status"] = DELETED
    if type_key == "user":
        data["accountEnabled"] = False
    record = make_record(type_key, record_id, data)
    return Record(record.type, record.id, record.data, "D" + record.hash, record.json)


def is_deactivated(stored_hash: str) -> bool:
    """Whether a stored hash is that of a departure record (see ``deactivated``)."""
    return stored_hash.startswith("D")
