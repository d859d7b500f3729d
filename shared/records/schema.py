"""The default object schema (SPEC §4), declared once, and the schema-and-mapping document built from it.

Everything Assets needs to know - object types, attributes, external ids, identities, references and how
records are read (selectors and locators) - comes from the ``OBJECT_TYPES`` table below, so the document
``setup`` sends and the records the worker pushes cannot drift apart.

Document format 2023_10_19: https://developer.atlassian.com/cloud/assets/imports-rest-api-guide/schema-and-mapping/
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace

SCHEMA_VERSION_URL = "https://api.atlassian.com/jsm/assets/imports/external/schema/versions/2023_10_19"
STATUSES = (("Active", "active", "The account exists and is enabled"),
            ("Disabled", "inactive", "The account exists but is disabled"),
            ("Deleted", "inactive", "Gone from Entra ID or out of scope; kept for ticket history"))
# Assets' limit for a text attribute value. UNCONFIRMED for external imports: 255 is the limit Assets applies
# to text attributes in the UI and object API; longer values are trimmed with a warning instead of failing.
TEXT_LIMIT = 255
# The most references one attribute of a record carries. An "All users" group of a million-user tenant would be
# a ~40 MB record, and a record is never split across chunks: one request that size is refused (the sandbox
# answers 413 above 10 MB; Assets documents no limit, so its own is UNCONFIRMED, reference §4.3) and the whole
# execution with it, every run. 200,000 ids of 36 characters stay under 8 MB. Ids are sorted, so the same
# members are kept run after run (a stable hash). A catch-up starts from the last pushed (cut) list, so a removal
# among the kept ids leaves the list one short until the next full run. (Owners need no cut: Entra allows 100.)
REFERENCE_LIMIT = 200_000


@dataclass(frozen=True)
class Attr:
    """One attribute: its Assets name and type, and the record key (locator) it is read from."""

    name: str
    locator: str
    type: str = "text"
    label: bool = False
    identity: bool = False          # externalIdPart: objects are matched across runs by these values
    ref: str | None = None          # key of the referenced object type
    ref_attr: str | None = None     # attribute of the referenced type matched by objectMappingIQL
    many: bool = False
    description: str = ""
    source: str | None = None       # custom attributes (MAPPING_FILE): dot path into the Graph object
    xid: str | None = None          # external-id key kept through a rename (MAPPING_FILE); else from the name
    required: bool = False          # cannot be left out by a MAPPING_FILE (label, identity, status)

    @property
    def key(self) -> str:
        """Stable short name for the external id: lower case, no spaces (kept when the attribute is renamed)."""
        return self.xid or self.name.lower().replace(" ", "-")


@dataclass(frozen=True)
class ObjectType:
    """One object type: name, record selector and attributes (label first)."""

    key: str
    name: str
    selector: str
    description: str
    attributes: tuple[Attr, ...]
    derived: bool = False           # folded from user attributes, not read from a Graph resource

    def attr(self, name: str) -> Attr:
        """The attribute called ``name``; raises KeyError."""
        for attribute in self.attributes:
            if attribute.name == name:
                return attribute
        raise KeyError(name)


def _ref(name: str, locator: str, target: str, match: str, **kw) -> Attr:
    return Attr(name, locator, "referenced_object", ref=target, ref_attr=match, **kw)


def _label(locator: str = "name", **kw) -> Attr:
    return Attr("Name", locator, label=True, required=True, **kw)


def _object_id() -> Attr:
    return Attr("Entra Object ID", "id", identity=True, required=True, description="Entra object id; never changes")


def _status() -> Attr:
    return Attr("Status", "status", "status", required=True,
                description="Active, Disabled, or Deleted (gone from Entra ID or out of scope)")


def _owners(name: str = "Owners", locator: str = "owners") -> Attr:
    # Many-valued reference: each value of the list is looked up with the AQL on its own (one object per
    # id). How Assets expands a list value in objectMappingIQL is UNCONFIRMED for cloud external imports
    # (reference §6.2: the DC placeholder forms); the emulator applies the AQL once per value.
    return _ref(name, locator, "user", "Entra Object ID", many=True)


USER = ObjectType("user", "User", "users", "People in Entra ID (members and guests)", (
    _label(description="displayName (falls back to the UPN)"),
    _object_id(),
    Attr("User Principal Name", "upn"),
    Attr("Email", "email", "email"),
    Attr("Given Name", "givenName"),
    Attr("Surname", "surname"),
    Attr("Job Title", "jobTitle"),
    Attr("Employee ID", "employeeId"),
    Attr("Employee Type", "employeeType"),
    Attr("Company", "company"),
    _ref("Department", "department", "department", "Name"),
    _ref("Office Location", "officeLocation", "office", "Name"),
    _ref("Manager", "managerId", "user", "Entra Object ID"),
    Attr("Mobile Phone", "mobilePhone"),
    Attr("Business Phone", "businessPhone"),
    Attr("User Type", "userType"),
    Attr("Account Enabled", "accountEnabled", "boolean"),
    _ref("Licenses", "licenses", "license", "SKU ID", many=True,
         description="the licences (SKUs) assigned to the user (assignedLicenses)"),
    Attr("Last Sign-In", "lastSignIn", "date_time",
         description="the latest of signInActivity's interactive and non-interactive sign-ins (full runs; needs "
                     "Entra ID P1/P2 and AuditLog.Read.All)"),
    _status(),
))
GROUP = ObjectType("group", "Group", "groups", "Groups in Entra ID (security, Microsoft 365, distribution)", (
    _label(),
    _object_id(),
    Attr("Description", "description"),
    Attr("Email", "email", "email"),
    Attr("Group Types", "groupTypes", description="groupTypes, comma-separated (Unified, DynamicMembership)"),
    Attr("Security Enabled", "securityEnabled", "boolean"),
    Attr("Mail Enabled", "mailEnabled", "boolean"),
    _owners("Members", "members"),
    _owners(),
    _status(),
))
DEVICE = ObjectType("device", "Device", "devices", "Devices registered or joined in Entra ID", (
    _label(),
    _object_id(),
    Attr("Device ID", "deviceId"),
    Attr("Operating System", "operatingSystem"),
    Attr("OS Version", "osVersion"),
    Attr("Trust Type", "trustType"),
    Attr("Compliant", "compliant", "boolean"),
    Attr("Managed", "managed", "boolean"),
    Attr("Account Enabled", "accountEnabled", "boolean"),
    Attr("Last Sign-In", "lastSignIn", "date_time"),
    _owners("Registered Owners", "registeredOwners"),
    _status(),
))
APPLICATION = ObjectType("application", "Application", "applications",
                         "Enterprise applications (service principals) in Entra ID", (
    _label(),
    _object_id(),
    Attr("App ID", "appId"),
    Attr("Publisher", "publisher", description="verifiedPublisher.displayName: the verified publisher, if any"),
    Attr("Publisher Tenant ID", "publisherTenantId",
         description="appOwnerOrganizationId: the tenant the application is registered in"),
    Attr("Service Principal Type", "servicePrincipalType"),
    Attr("Account Enabled", "accountEnabled", "boolean"),
    _owners(),
    _status(),
))
LICENSE = ObjectType("license", "License", "licenses", "Licences (SKUs) the tenant subscribes to", (
    _label(description="skuPartNumber: Graph has no friendly name of a SKU"),
    Attr("SKU ID", "skuId", identity=True, required=True, description="skuId; never changes"),
    Attr("Enabled Units", "enabledUnits", "integer", description="prepaidUnits.enabled"),
    Attr("Consumed Units", "consumedUnits", "integer"),
    _status(),
))
MANAGED_DEVICE = ObjectType("managed_device", "Managed Device", "managedDevices", "Devices managed by Intune", (
    _label(description="deviceName"),
    Attr("Intune Device ID", "id", identity=True, required=True, description="Intune managedDevice id; never changes"),
    Attr("Serial Number", "serialNumber"),
    Attr("Manufacturer", "manufacturer"),
    Attr("Model", "model"),
    Attr("Operating System", "operatingSystem"),
    Attr("OS Version", "osVersion"),
    Attr("Compliance State", "complianceState"),
    Attr("Management State", "managementState"),
    Attr("Ownership", "ownership", description="managedDeviceOwnerType: company or personal"),
    Attr("Enrolled", "enrolled", "date_time"),
    Attr("Last Sync", "lastSync", "date_time", description="the device's last check-in with Intune"),
    Attr("Storage Total (GB)", "storageTotal", "double", description="totalStorageSpaceInBytes in GiB (2^30 bytes)"),
    Attr("Storage Free (GB)", "storageFree", "double", description="freeStorageSpaceInBytes in GiB (2^30 bytes)"),
    _ref("Primary User", "primaryUser", "user", "Entra Object ID", description="userId: the device's primary user"),
    _ref("Entra Device", "entraDevice", "device", "Device ID",
         description="azureADDeviceId: the Entra device registration (matched on its Device ID)"),
    _status(),
))
# Derived types carry a Status too (an addition to SPEC §4): one that no user references any more is pushed
# once more as Deleted, like a departed user, instead of lingering as if it were still in use.
DEPARTMENT = ObjectType("department", "Department", "departments", "Departments named on users", (
    Attr("Name", "name", label=True, identity=True, required=True),
    Attr("Company", "company"),
    _status(),
), derived=True)
OFFICE = ObjectType("office", "Office Location", "officeLocations", "Office locations named on users", (
    Attr("Name", "name", label=True, identity=True, required=True),
    _ref("Address", "addressKey", "address", "Address Key"),
    _status(),
), derived=True)
ADDRESS = ObjectType("address", "Address", "addresses", "Street addresses of users", (
    _label(),
    Attr("Street", "street"),
    Attr("Postal Code", "postalCode"),
    Attr("State", "state"),
    _ref("City", "cityKey", "city", "City Key"),
    Attr("Address Key", "key", identity=True, required=True, description="normalised street|postal code|city key"),
    _status(),
), derived=True)
CITY = ObjectType("city", "City", "cities", "Cities of users", (
    _label(),
    Attr("State", "state"),
    _ref("Country", "country", "country", "Name"),
    Attr("City Key", "key", identity=True, required=True, description="normalised city|state|country"),
    _status(),
), derived=True)
COUNTRY = ObjectType("country", "Country", "countries", "Countries of users", (
    Attr("Name", "name", label=True, identity=True, required=True),
    Attr("Code", "code", description="ISO 3166-1 alpha-2 when recognised"),
    _status(),
), derived=True)
# Order matters for readability only: Assets resolves references after all objects of an execution exist.
OBJECT_TYPES: tuple[ObjectType, ...] = (USER, GROUP, DEVICE, APPLICATION, LICENSE, MANAGED_DEVICE, DEPARTMENT,
                                        OFFICE, ADDRESS, CITY, COUNTRY)
BY_KEY = {t.key: t for t in OBJECT_TYPES}


# Jira user links (SPEC §5, ``shared.jira_links``): with linking on, User carries the Atlassian account ids of
# the user and of the manager as text attributes, part of the record and of its hash.
ACCOUNT = Attr("Atlassian Account ID", "atlassianAccountId",
               description="Atlassian account whose e-mail matches the user's (set by entra-assets)")
MANAGER_ACCOUNT = Attr("Manager Atlassian Account ID", "managerAtlassianAccountId",
                       description="Atlassian account of the user's manager (set by entra-assets)")


def with_link_attributes(types: tuple[ObjectType, ...]) -> tuple[ObjectType, ...]:
    """``types`` with the two account attributes added to User (before ``Status``). Pure."""
    out = []
    for t in types:
        if t.key == "user" and not any(a.locator == ACCOUNT.locator for a in t.attributes):
            head = tuple(a for a in t.attributes if a.type != "status")
            tail = tuple(a for a in t.attributes if a.type == "status")
            t = replace(t, attributes=(*head, ACCOUNT, MANAGER_ACCOUNT, *tail))
        out.append(t)
    return tuple(out)


def for_object_types(types: tuple[ObjectType, ...], keys: Collection[str]) -> tuple[ObjectType, ...]:
    """``types`` limited to ``keys`` (SYNC_OBJECT_TYPES and, with User, the derived types): the others are left
    out of the schema, and so are the references to them - with Group alone, groups have no Members, as there
    are no User objects to link. Pure."""
    return tuple(replace(t, attributes=tuple(a for a in t.attributes if a.ref is None or a.ref in keys))
                 for t in types if t.key in keys)


def type_external_id(prefix: str, object_type: ObjectType) -> str:
    """Stable external id of an object type, e.g. ``ENTRA/user`` (prefix keeps installations apart)."""
    return f"{prefix}/{object_type.key}"


def attr_external_id(prefix: str, object_type: ObjectType, attr: Attr) -> str:
    """Stable external id of an attribute, e.g. ``ENTRA/user/entra-object-id``."""
    return f"{prefix}/{object_type.key}/{attr.key}"


def build_document(prefix: str, types: tuple[ObjectType, ...] = OBJECT_TYPES) -> dict:
    """The full schema-and-mapping document (2023_10_19) for ``types``. Pure; same input, same output."""
    object_types, mappings = [], []
    for t in types:
        object_types.append({
            "externalId": type_external_id(prefix, t), "name": t.name, "description": t.description,
            "attributes": [_schema_attr(prefix, t, a) for a in t.attributes]})
        mappings.append({
            "objectTypeExternalId": type_external_id(prefix, t), "objectTypeName": t.name,
            "selector": t.selector, "description": f"{t.name} records from entra-assets",
            "attributesMapping": [_mapping_attr(prefix, t, a) for a in t.attributes]})
    return {
        "$schema": SCHEMA_VERSION_URL,
        "schema": {
            "objectSchema": {"name": "Entra ID", "description": "Synchronised from Microsoft Entra ID by entra-assets",
                             "objectTypes": object_types},
            "statusSchema": {"statuses": [{"name": n, "category": c, "description": d} for n, c, d in STATUSES]},
        },
        "mapping": {"objectTypeMappings": mappings},
    }


def _schema_attr(prefix: str, t: ObjectType, a: Attr) -> dict:
    out: dict = {"externalId": attr_external_id(prefix, t, a), "name": a.name,
                 "description": a.description or a.name, "type": a.type}
    if a.label:
        out["label"] = True
    if a.identity:
        out["unique"] = True
    if a.type == "status":
        out["typeValues"] = [name for name, _, _ in STATUSES]
    if a.ref:
        out["referenceObjectTypeExternalId"] = type_external_id(prefix, BY_KEY[a.ref])
        out["referenceObjectTypeName"] = BY_KEY[a.ref].name
        out["maximumCardinality"] = -1 if a.many else 1
    return out


def _mapping_attr(prefix: str, t: ObjectType, a: Attr) -> dict:
    out: dict = {"attributeExternalId": attr_external_id(prefix, t, a), "attributeName": a.name,
                 "attributeLocators": [a.locator]}
    if a.identity:
        out["externalIdPart"] = True
    if a.ref:
        # objectMappingIQL is evaluated on the referenced type; ${locator} is replaced by the quoted value.
        # AQL "=" compares case-insensitively, so "sales" on a user finds the Department named "Sales".
        out["objectMappingIQL"] = f'"{a.ref_attr}" = ${{{a.locator}}}'
    return out
